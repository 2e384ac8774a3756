"""Billing periods and proration.

API.md: periods step from the start, `start + k * interval`, a month end
clamped (31 Jan -> 28/29 Feb -> 31 Mar), counted in the merchant's time zone,
so a monthly period starts at the same local midnight across daylight-saving
changes. Every function takes and returns aware datetimes in UTC.

Why from the anchor and never by chaining: chaining "+1 month" from a clamped
28 Feb would give 28 Mar, 28 Apr... for ever; computing period k as
anchor + k intervals keeps every period on the anchor's day (clamped only
where the month is too short).

Wall-time edge cases of the local zone: a local time that a spring-forward
gap skips maps to the same offset as before the gap (one hour later on the
wall); a local time that occurs twice (autumn) is its first occurrence.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta

from chalicelib.domain.errors import InvalidRequest

UNITS = ("day", "week", "month", "year")
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Interval:
    """A billing interval: `count` days, weeks, months or years (count >= 1)."""

    unit: str
    count: int = 1

    def __post_init__(self):
        if self.unit not in UNITS:
            raise InvalidRequest(f"billing_interval must be one of {', '.join(UNITS)}", param="billing_interval")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidRequest("interval_count must be a whole number >= 1", param="interval_count")

    def times(self, k: int) -> relativedelta:
        """k intervals, as a calendar step (months clamp to the month's end)."""
        n = k * self.count
        if self.unit == "month":
            return relativedelta(months=n)
        if self.unit == "year":
            return relativedelta(years=n)
        if self.unit == "week":
            return relativedelta(days=7 * n)
        return relativedelta(days=n)


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end): a billing period, or the part of one that a line covers;
    both ends aware UTC datetimes. Empty (start == end) is allowed: the
    unused part of a period ended exactly at its end."""

    start: datetime
    end: datetime

    def __post_init__(self):
        if self.end < self.start:
            raise ValueError("a period cannot end before it starts")

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {name!r}", param="timezone") from None


def zone(tz: str | ZoneInfo | None) -> ZoneInfo | timezone:
    """The merchant's zone: an IANA name ("Europe/Paris"), a ZoneInfo, or None for UTC."""
    if tz is None or tz == "UTC":
        return timezone.utc
    if isinstance(tz, str):
        return _zone(tz)
    return tz


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC)")


def _local_wall(moment: datetime, tz) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _from_local_wall(wall: datetime, tz) -> datetime:
    return wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)


def period_start(anchor: datetime, interval: Interval, k: int, tz: str | ZoneInfo | None = None) -> datetime:
    """Start of period k: the anchor plus k intervals of local wall time, in UTC.

    k = 0 is the anchor itself; k may be negative (periods before the anchor)."""
    _require_aware(anchor, "anchor")
    zone_ = zone(tz)
    wall = _local_wall(anchor, zone_) + interval.times(k)
    return _from_local_wall(wall, zone_)


def period_bounds(anchor: datetime, interval: Interval, k: int, tz: str | ZoneInfo | None = None) -> Period:
    """Period k as [start, end), each end computed from the anchor."""
    return Period(period_start(anchor, interval, k, tz), period_start(anchor, interval, k + 1, tz))


def period_index_at(anchor: datetime, interval: Interval, instant: datetime, tz: str | ZoneInfo | None = None) -> int:
    """The k whose period [start_k, start_k+1) contains `instant` (negative before the anchor).

    Estimated from the calendar distance (months for month/year intervals,
    days otherwise), then corrected by a step or two: constant time whatever
    the number of periods between anchor and instant."""
    _require_aware(anchor, "anchor")
    _require_aware(instant, "instant")
    zone_ = zone(tz)
    a, b = _local_wall(anchor, zone_), _local_wall(instant, zone_)
    if interval.unit in ("month", "year"):
        months = (b.year - a.year) * 12 + (b.month - a.month)
        per = interval.count * (12 if interval.unit == "year" else 1)
        k = months // per
    else:
        days = (b - a) // _DAY
        per = interval.count * (7 if interval.unit == "week" else 1)
        k = days // per
    while period_start(anchor, interval, k, zone_) > instant:
        k -= 1
    while period_start(anchor, interval, k + 1, zone_) <= instant:
        k += 1
    return k


def period_at(anchor: datetime, interval: Interval, instant: datetime, tz: str | ZoneInfo | None = None) -> Period:
    """The period that contains `instant` (usage counts in the period of its timestamp)."""
    return period_bounds(anchor, interval, period_index_at(anchor, interval, instant, tz), tz)


def period_days(start: datetime, end: datetime) -> int:
    """Days in a period, counted in UTC: round((end - start) / 1 day).

    Rounding absorbs the 23- or 25-hour local days of a DST change: a local
    month of March in Paris is 31 days minus one hour, i.e. 31 days."""
    return max(1, round((end - start) / _DAY))


def proration_fraction(start: datetime, end: datetime, at: datetime) -> Decimal:
    """The unused share of the period [start, end) from `at`: remaining whole days / days in the period.

    Counted in UTC (API.md), exactly:
      days      = round((end - start) / 1 day)           (>= 1)
      remaining = floor((end - at) / 1 day), clamped to [0, days]
      fraction  = remaining / days, as a Decimal (28 significant digits)

    Remaining days are counted back from the end, in whole UTC days: a
    started day is a used day, and in a month that a DST change makes an
    hour short or long the count changes at the same hour every day (counted
    from the start, it would be a day off for one hour a day). `at` at or
    before the start is 1 (nothing used, even in a period an hour short of
    its days), at or after the end is 0."""
    _require_aware(start, "start")
    _require_aware(end, "end")
    _require_aware(at, "at")
    days = period_days(start, end)
    if at <= start:
        return Decimal(1)
    if at >= end:
        return Decimal(0)
    remaining = min(max((end - at) // _DAY, 0), days)
    return Decimal(remaining) / Decimal(days)


def instant_text(moment: datetime) -> str:
    """An instant as the API and the store write it: ISO 8601 in UTC with `Z`."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant_text(text: str) -> datetime:
    """The instant `instant_text` wrote (an offset is accepted too), in UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


# The years an instant sent to the API may fall in. Outside them it is a typo
# or a probe; and Python's datetime (years 1 to 9999) would overflow turning
# "0001-01-01T00:00:00+01:00" into UTC, or stepping periods on from 9999.
FIRST_YEAR, LAST_YEAR = 1970, 2199


def bounded_instant(moment: datetime) -> datetime:
    """An aware `moment` in UTC; ValueError when its year is not FIRST_YEAR to LAST_YEAR."""
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"must be from {FIRST_YEAR}-01-01T00:00:00Z to {LAST_YEAR}-12-31T23:59:59Z")
    return moment.astimezone(timezone.utc)
