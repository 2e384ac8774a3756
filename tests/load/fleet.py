"""A fleet of simulated machines: what each publishes, and the usage that
must come of it.

Each machine reports its running totals (`montages`, `tracings`) at its own
pace, with what real fleets do mixed in:
- duplicates: a message published again, at once or after a newer one (a
  retry after a lost acknowledgement);
- out-of-order readings: two readings published newest first;
- counter resets: the counters start again near zero (a board replaced).

`expected_usage` computes, from the messages in the order they were
published, the usage API.md's rules give, independently of the backend's
code: the first reading of a counter is its baseline; a seq seen before
changes nothing; a reading older (by time, then seq) than the last accepted
one is ignored; a value below the last is a reset whose usage is the new
value. A swap is never next to a reset, so the total does not depend on the
order in which the pipeline happens to deliver the two readings of a swap.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

METERS = ("montages", "tracings")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Machine:
    device_id: str
    subscription_id: str
    rng: random.Random
    duplicate_rate: float = 0.05
    swap_rate: float = 0.03
    reset_rate: float = 0.01
    seq: int = 0
    values: dict[str, int] = field(default_factory=dict)
    last_ts: datetime | None = None
    published: list[dict] = field(default_factory=list)
    held_back: list[dict] = field(default_factory=list)
    calm: int = 0  # readings left before a swap or a reset may come again
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self.seq = self.rng.randint(1, 10_000)
        self.values = {"montages": self.rng.randint(1_000, 50_000), "tracings": self.rng.randint(0, 500)}

    def _reading(self, ts: datetime) -> dict:
        # Strictly increasing times: two readings of a machine never share one.
        if self.last_ts is not None and ts <= self.last_ts:
            ts = self.last_ts + timedelta(milliseconds=1)
        self.last_ts = ts
        self.seq += 1
        return {"seq": self.seq, "ts": iso(ts), "counters": dict(self.values)}

    def _advance(self) -> None:
        self.values["montages"] += self.rng.randint(0, 6)
        self.values["tracings"] += self.rng.randint(0, 2)

    def tick(self, now: datetime) -> list[dict]:
        """The messages this machine publishes now, in publishing order."""
        out = list(self.held_back)  # a duplicate held back lands after a newer reading
        self.held_back.clear()
        roll = self.rng.random()
        if self.calm == 0 and roll < self.reset_rate and self.published:
            self.values = {"montages": self.rng.randint(0, 5), "tracings": self.rng.randint(0, 2)}
            reading = self._reading(now)
            out.append(reading)
            self.counts["resets"] += 1
            self.calm = 3
        elif self.calm == 0 and roll < self.reset_rate + self.swap_rate and self.published:
            self._advance()
            first = self._reading(now)
            self._advance()
            second = self._reading(now + timedelta(milliseconds=500))
            out += [second, first]
            self.counts["swapped"] += 1
            self.calm = 3
        else:
            self._advance()
            out.append(self._reading(now))
            self.calm = max(0, self.calm - 1)
        if self.rng.random() < self.duplicate_rate:
            again = dict(out[-1])
            if self.rng.random() < 0.5:
                out.append(again)
            else:
                self.held_back.append(again)
            self.counts["duplicates"] += 1
        self.published += out
        return out

    def flush(self) -> list[dict]:
        """What was held back, published at the end."""
        out = list(self.held_back)
        self.held_back.clear()
        self.published += out
        return out

    def last_accepted_seq(self) -> int | None:
        """The seq the device shows as its last reading once all is ingested."""
        newest = max(((m["ts"], m["seq"]) for m in self.published), default=None)
        return newest[1] if newest else None


def expected_usage(messages: list[dict]) -> dict[str, int]:
    """The usage of one machine's messages, in publishing order (see above)."""
    seen: set[int] = set()
    last_key = None
    counters: dict[str, int] = {}
    usage = Counter({meter: 0 for meter in METERS})
    for message in messages:
        if message["seq"] in seen:
            continue
        seen.add(message["seq"])
        key = (message["ts"], message["seq"])
        if last_key is not None and key <= last_key:
            continue
        last_key = key
        for meter, value in message["counters"].items():
            previous = counters.get(meter)
            counters[meter] = value
            if previous is None:
                continue
            usage[meter] += value if value < previous else value - previous
    return dict(usage)
