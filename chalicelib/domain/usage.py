"""Usage of one meter in one period, as it accumulates from its sources.

A meter's usage in a period comes from several places (each device attached
to the subscription, the events of `POST /usage`), and rating wants it as one
`MeterUsage(total, maximum, last)`. A `UsageTally` is that triple plus the
time of the last quantity, which is what lets two tallies be combined in any
order: the sum of the totals, the larger maximum, the last quantity of the
one whose last quantity is later.

Pure: no I/O. Quantities are `Decimal`; the store keeps them as decimal
strings (`as_strings` / `from_strings`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from chalicelib.domain.money import ZERO, format_decimal
from chalicelib.domain.periods import Interval, Period, bounded_instant, period_at
from chalicelib.domain.rating import MeterUsage


@dataclass(frozen=True, slots=True)
class UsageTally:
    """Sum, largest and last (by time) of a meter's quantities in one period."""

    total: Decimal = ZERO
    maximum: Decimal | None = None
    last: Decimal | None = None
    last_at: datetime | None = None

    def add(self, quantity: Decimal, at: datetime) -> "UsageTally":
        """This tally with one more quantity, which happened at `at`.

        A quantity older than the current last one counts in the total and
        the maximum but does not become the last (last is by time, not by
        arrival); at the same instant the later arrival wins."""
        maximum = quantity if self.maximum is None or quantity > self.maximum else self.maximum
        if self.last_at is None or at >= self.last_at:
            return UsageTally(self.total + quantity, maximum, quantity, at)
        return UsageTally(self.total + quantity, maximum, self.last, self.last_at)

    def merge(self, other: "UsageTally") -> "UsageTally":
        """Two sources' tallies of the same meter and period, combined.

        Commutative and associative, so sources can be read in any order: on
        a tie of `last_at` the larger last value is kept."""
        if other.maximum is None:
            maximum = self.maximum
        elif self.maximum is None:
            maximum = other.maximum
        else:
            maximum = max(self.maximum, other.maximum)
        if other.last_at is None:
            last, last_at = self.last, self.last_at
        elif self.last_at is None or other.last_at > self.last_at:
            last, last_at = other.last, other.last_at
        elif other.last_at == self.last_at and other.last > self.last:
            last, last_at = other.last, other.last_at
        else:
            last, last_at = self.last, self.last_at
        return UsageTally(self.total + other.total, maximum, last, last_at)

    def meter_usage(self) -> MeterUsage:
        """What rating consumes."""
        return MeterUsage(self.total, self.maximum, self.last)

    def as_strings(self) -> dict:
        """The tally as stored and shown: decimal strings and an ISO time, never floats."""
        return {
            "total": format_decimal(self.total),
            "maximum": None if self.maximum is None else format_decimal(self.maximum),
            "last": None if self.last is None else format_decimal(self.last),
            "last_at": None if self.last_at is None else _iso(self.last_at),
        }

    @classmethod
    def from_strings(cls, data: Mapping) -> "UsageTally":
        maximum, last, last_at = data.get("maximum"), data.get("last"), data.get("last_at")
        return cls(
            Decimal(data.get("total") or "0"),
            None if maximum is None else Decimal(maximum),
            None if last is None else Decimal(last),
            None if last_at is None else parse_instant(last_at),
        )


NO_TALLY = UsageTally()


@dataclass(frozen=True, slots=True)
class EventTally:
    """The tally of a meter's `POST /usage` events in one period, and which
    event is its last one, so a correction of that event corrects `last`."""

    tally: UsageTally = NO_TALLY
    last_event: str | None = None

    def record(self, event_id: str, quantity: Decimal, at: datetime) -> "EventTally":
        became_last = self.tally.last_at is None or at >= self.tally.last_at
        return EventTally(self.tally.add(quantity, at), event_id if became_last else self.last_event)

    def correct(self, event_id: str, difference: Decimal, corrected_quantity: Decimal) -> "EventTally":
        """A correction of `event_id` by `difference` (signed), which makes that
        event's quantity `corrected_quantity`.

        The total moves by the difference, exactly. `last` follows when the
        corrected event is the last one. `maximum` can only grow here: when
        the largest event is corrected down, the next largest is not known
        without reading every event, so the maximum stays (an offer that
        prices a meter by `max` should be sent new events, not corrections)."""
        t = self.tally
        maximum = corrected_quantity if t.maximum is None or corrected_quantity > t.maximum else t.maximum
        last = corrected_quantity if event_id == self.last_event else t.last
        return EventTally(UsageTally(t.total + difference, maximum, last, t.last_at), self.last_event)


@dataclass(frozen=True, slots=True)
class UsageCalendar:
    """Where a subscription's usage counts: the period that contains its time.

    Periods are `anchor + k * interval` in the subscription's time zone
    (domain/periods.py). A trial is the period [start, anchor) before the
    first paid one (start == anchor without a trial): usage there is
    recorded in the trial's period (the billing run charges none of it).
    Nothing is before `start`, nor at or after `end` (the subscription's
    cancellation): `period_of` says None."""

    start: datetime
    anchor: datetime
    interval: Interval
    timezone: str = "UTC"
    end: datetime | None = None

    def period_of(self, moment: datetime) -> Period | None:
        if moment < self.start or (self.end is not None and moment >= self.end):
            return None
        if moment < self.anchor:
            return Period(self.start, self.anchor)
        return period_at(self.anchor, self.interval, moment, self.timezone)

    def finder(self, hint: Period | None = None):
        """`period_of` for many times of one device, remembering the last
        period found: consecutive readings mostly fall in the same one, and
        the calendar arithmetic is then skipped."""
        cached = [hint]

        def find(moment: datetime) -> Period | None:
            last = cached[0]
            if self.end is not None and moment >= self.end:
                return None
            if last is not None and last.start <= moment < last.end:
                return last
            found = self.period_of(moment)
            if found is not None:
                cached[0] = found
            return found

        return find


def merge_meters(*sources: Mapping[str, UsageTally]) -> dict[str, UsageTally]:
    """Per meter, the tallies of several sources combined."""
    combined: dict[str, UsageTally] = {}
    for source in sources:
        for meter, tally in source.items():
            mine = combined.get(meter)
            combined[meter] = tally if mine is None else mine.merge(tally)
    return combined


def meters_as_strings(meters: Mapping[str, UsageTally]) -> dict[str, dict]:
    return {meter: tally.as_strings() for meter, tally in meters.items()}


def meters_from_strings(data: Mapping | None) -> dict[str, UsageTally]:
    return {meter: UsageTally.from_strings(tally) for meter, tally in (data or {}).items()}


def meter_usages(meters: Mapping[str, UsageTally]) -> dict[str, MeterUsage]:
    return {meter: tally.meter_usage() for meter, tally in meters.items()}


def tally_of(quantities: Iterable[tuple[Decimal, datetime]]) -> UsageTally:
    """The tally of (quantity, time) pairs, in the order given."""
    tally = NO_TALLY
    for quantity, at in quantities:
        tally = tally.add(quantity, at)
    return tally


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with a zone ("2026-11-22T10:00:00Z") as an aware UTC datetime; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("must be an ISO 8601 time string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("must carry a time zone (end with Z)")
    return bounded_instant(moment)
