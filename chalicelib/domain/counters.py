"""Counter readings -> usage deltas (API.md, "Devices and usage").

A device reports running totals since installation, one counter per meter,
with a sequence number (`seq`) and a time (`ts`). Usage is the difference
from the last accepted reading of the counter:
- the first reading of a counter is its baseline (no usage);
- a reading whose `seq` was already seen for the device is a duplicate and
  changes nothing (not even the record of what was seen);
- a reading older than the device's last accepted one is recorded (counted in
  `out_of_order`, its seq remembered) and ignored for usage;
- a value below the counter's last one is a counter reset: usage is the new
  value, and the reset is reported for operations;
- usage counts in the billing period that contains `ts`.

"Older" is by `(ts, seq)`, for the device as a whole: a device's accepted
readings are therefore in time order, its usage never goes back to a
period it has left, and a reading delivered again can never count twice,
whatever the window of remembered seqs still holds: once accepted, its
`(ts, seq)` is at most the device's last. The window only tells a duplicate
(nothing to record) from a late reading (recorded). A device whose seq
restarts (a firmware reset) keeps being counted, by its timestamps.

Several readings of one device in a batch are applied in `(ts, seq)` order,
so a batch gives the same result as its readings delivered one by one in
that order (the tests prove it); readings delivered in another order lose
nothing either, since counters are running totals: a reading skipped as
late is covered by the next accepted one's difference.

The device also keeps its usage of the period of its latest accepted
reading ("open" usage, `OpenUsage`); `settle` says which periods the device
has left, whose usage is final and goes to the subscription's record.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from chalicelib.domain.usage import UsageTally, merge_meters

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"

# How many recent seqs a device remembers to recognise a duplicate. A message
# delivered again by SQS comes back within minutes, i.e. within a few
# readings of a device that reports at most every few minutes.
RECENT_SEQS = 20


@dataclass(frozen=True, slots=True)
class CounterReading:
    """One message of a device: its seq, its time, its counters (running totals).

    `ref` is the caller's handle for the reading (an SQS message id); it is
    only echoed back in the results."""

    seq: int
    ts: datetime
    counters: Mapping[str, Decimal]
    ref: object = None


@dataclass(frozen=True, slots=True)
class CounterState:
    """The last accepted reading of one counter: its value, seq and time."""

    value: Decimal
    seq: int
    ts: datetime


@dataclass(frozen=True, slots=True)
class DeviceCounters:
    """What a device's next readings are compared with."""

    counters: Mapping[str, CounterState] = field(default_factory=dict)
    last_seq: int | None = None
    last_ts: datetime | None = None
    recent_seqs: tuple[int, ...] = ()
    out_of_order: int = 0
    resets: int = 0


@dataclass(frozen=True, slots=True)
class CounterReset:
    """A counter that went down: usage was taken as its new value."""

    meter: str
    seq: int
    ts: datetime
    previous: Decimal
    value: Decimal


@dataclass(frozen=True, slots=True)
class ReadingResult:
    """What became of one reading.

    `period_start` is the period its usage counted in (None when it counted
    nowhere: not accepted, or a time before the subscription's first period);
    `baselines` the counters it started, `resets` those it found reset."""

    reading: CounterReading
    outcome: str
    period_start: datetime | None = None
    baselines: tuple[str, ...] = ()
    resets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """The result of applying readings to a device: its new state, the usage
    per period (ascending) and meter, what became of each reading, the resets."""

    state: DeviceCounters
    usage: Mapping[datetime, Mapping[str, UsageTally]]
    results: tuple[ReadingResult, ...]
    resets: tuple[CounterReset, ...]

    @property
    def changed(self) -> bool:
        """Whether there is anything to write (duplicates alone change nothing)."""
        return any(result.outcome != DUPLICATE for result in self.results)

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)


def reading_order(reading: CounterReading) -> tuple[datetime, int]:
    return reading.ts, reading.seq


def apply_readings(
    state: DeviceCounters,
    readings: Iterable[CounterReading],
    period_of: Callable[[datetime], datetime | None],
) -> CounterUpdate:
    """Apply a device's readings to its state by API.md's rules.

    `period_of(ts)` is the start of the billing period containing `ts`, or
    None when `ts` is in no billable period (before the subscription's
    first): such a reading still moves the counters on (it is the device's
    newest state) but its usage counts nowhere."""
    counters = dict(state.counters)
    recent = list(state.recent_seqs)
    seen = set(recent)
    last = (state.last_ts, state.last_seq) if state.last_ts is not None else None
    out_of_order, reset_count = state.out_of_order, state.resets
    usage: dict[datetime, dict[str, UsageTally]] = {}
    results: list[ReadingResult] = []
    resets: list[CounterReset] = []

    for reading in sorted(readings, key=reading_order):
        if reading.seq in seen:
            results.append(ReadingResult(reading, DUPLICATE))
            continue
        seen.add(reading.seq)
        recent.append(reading.seq)
        key = (reading.ts, reading.seq)
        if last is not None and key <= last:
            out_of_order += 1
            results.append(ReadingResult(reading, OUT_OF_ORDER))
            continue
        last = key
        period = period_of(reading.ts)
        period_usage = usage.setdefault(period, {}) if period is not None else None
        baselines, reset_meters, counted = [], [], False
        for meter, value in reading.counters.items():
            previous = counters.get(meter)
            counters[meter] = CounterState(value, reading.seq, reading.ts)
            if previous is None:
                baselines.append(meter)
                continue
            if value < previous.value:
                delta = value
                reset_meters.append(meter)
                resets.append(CounterReset(meter, reading.seq, reading.ts, previous.value, value))
                reset_count += 1
            else:
                delta = value - previous.value
            if period_usage is not None:
                period_usage[meter] = period_usage.get(meter, _EMPTY).add(delta, reading.ts)
                counted = True
        results.append(
            ReadingResult(reading, ACCEPTED, period if counted else None, tuple(baselines), tuple(reset_meters))
        )

    new_state = DeviceCounters(
        counters=counters,
        last_seq=last[1] if last is not None else None,
        last_ts=last[0] if last is not None else None,
        recent_seqs=tuple(recent[-RECENT_SEQS:]),
        out_of_order=out_of_order,
        resets=reset_count,
    )
    ordered_usage = {period: usage[period] for period in sorted(usage) if usage[period]}
    return CounterUpdate(new_state, ordered_usage, tuple(results), tuple(resets))


_EMPTY = UsageTally()


# ---------------------------------------------------------------------------
# The device's open period


@dataclass(frozen=True, slots=True)
class OpenUsage:
    """A device's usage in the period of its latest accepted reading, for the
    subscription it was attached to then. `period_end` lets the next reading
    of the same period skip the calendar arithmetic."""

    subscription_id: str
    period_start: datetime
    period_end: datetime
    meters: Mapping[str, UsageTally]


def settle(
    open_usage: OpenUsage | None,
    subscription_id: str,
    usage: Mapping[datetime, Mapping[str, UsageTally]],
    period_end_of: Callable[[datetime], datetime],
) -> tuple[OpenUsage | None, list[OpenUsage]]:
    """The device's new open usage, and the usage of the periods it has left.

    `usage` is `CounterUpdate.usage` for a device attached to
    `subscription_id`. The device's readings are accepted in time order, so
    once it has usage in a later period, an earlier period gets nothing more
    from it: that usage is final ("closed") and belongs with the
    subscription's. Usage for a period before the open one cannot come from
    `apply_readings`; were it given, it is closed at once rather than lost."""
    current = open_usage
    closed: list[OpenUsage] = []
    for period in sorted(usage):
        meters = usage[period]
        if not meters:
            continue
        if current is not None and current.subscription_id == subscription_id and current.period_start == period:
            current = OpenUsage(subscription_id, period, current.period_end, merge_meters(current.meters, meters))
        elif current is not None and current.subscription_id == subscription_id and period < current.period_start:
            closed.append(OpenUsage(subscription_id, period, period_end_of(period), dict(meters)))
        else:
            if current is not None and current.meters:
                closed.append(current)
            current = OpenUsage(subscription_id, period, period_end_of(period), dict(meters))
    return current, closed
