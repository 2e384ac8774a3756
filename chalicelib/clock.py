"""The one source of "now".

Services take a clock instead of reading the system time, so tests and the
local stage can move time. The local stage keeps its time in a small file
that both of its processes (the API and the driver) read, so they agree.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, now: datetime):
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now


class FileClock:
    """The local stage's clock: real time plus an offset kept in a file.

    Moving the clock forward writes the new offset; every process re-reads the
    file when its modification time changes, so the cost is one `stat` call.
    """

    def __init__(self, path: str):
        self.path = path
        self._mtime: float | None = None
        self._offset = 0.0

    def _load(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            self._mtime, self._offset = None, 0.0
            return
        if mtime != self._mtime:
            with open(self.path) as f:
                self._offset = float(json.load(f)["offset_seconds"])
            self._mtime = mtime

    def now(self) -> datetime:
        self._load()
        real = datetime.now(timezone.utc).timestamp()
        return datetime.fromtimestamp(real + self._offset, timezone.utc)

    def move_to(self, target: datetime) -> datetime:
        """Move forward to `target` (never backward: time in billing only goes on)."""
        current = self.now()
        if target <= current:
            return current
        offset = target.timestamp() - datetime.now(timezone.utc).timestamp()
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"offset_seconds": offset}, f)
        os.replace(tmp, self.path)
        return self.now()


_clock = None


def clock():
    """The process's clock: the file clock on the local stage, else the system's."""
    global _clock
    if _clock is None:
        from chalicelib.config import settings

        path = settings().local_clock_file
        _clock = FileClock(path) if path else SystemClock()
    return _clock


def use_clock(new_clock) -> None:
    """Replace the process's clock (tests)."""
    global _clock
    _clock = new_clock


def isoformat(moment: datetime) -> str:
    """API.md times: ISO 8601, UTC, with `Z`."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant(text: str) -> datetime:
    """An instant this backend wrote (ISO 8601, `Z` or an offset), in UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
