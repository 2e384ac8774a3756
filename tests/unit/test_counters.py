"""Counter readings -> usage deltas: every rule of API.md's "Devices and usage"."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.counters import (
    ACCEPTED,
    DUPLICATE,
    OUT_OF_ORDER,
    RECENT_SEQS,
    CounterReading,
    CounterState,
    DeviceCounters,
    OpenUsage,
    apply_readings,
    settle,
)
from chalicelib.domain.periods import Interval, period_at
from chalicelib.domain.usage import UsageTally

UTC = timezone.utc
ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)
MONTH = Interval("month")
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def monthly(ts: datetime) -> datetime | None:
    """Periods of a monthly subscription starting 1 Nov 2026 (none before)."""
    if ts < ANCHOR:
        return None
    return period_at(ANCHOR, MONTH, ts).start


def at(day: int, hour: int = 10, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def reading(seq: int, ts: datetime, **counters) -> CounterReading:
    return CounterReading(seq, ts, {name: Decimal(str(value)) for name, value in counters.items()}, ref=f"m{seq}")


def run(readings, state: DeviceCounters | None = None, period_of=monthly):
    return apply_readings(state or DeviceCounters(), readings, period_of)


def totals(update) -> dict:
    return {
        (period, meter): tally.total for period, meters in update.usage.items() for meter, tally in meters.items()
    }


# --- the rules, one by one ------------------------------------------------


def test_first_reading_of_a_counter_is_its_baseline():
    update = run([reading(1, at(2), montages=12345, tracings=210)])
    assert update.usage == {}
    [result] = update.results
    assert result.outcome == ACCEPTED and set(result.baselines) == {"montages", "tracings"}
    assert result.period_start is None
    assert update.state.counters["montages"] == CounterState(Decimal(12345), 1, at(2))
    assert update.state.last_seq == 1 and update.state.last_ts == at(2)
    assert update.changed


def test_usage_is_the_difference_from_the_last_accepted_reading():
    first = run([reading(1, at(2), montages=12345, tracings=210)])
    update = run([reading(2, at(3), montages=12360, tracings=211)], first.state)
    assert totals(update) == {(NOV, "montages"): Decimal(15), (NOV, "tracings"): Decimal(1)}
    assert update.results[0].period_start == NOV
    assert update.state.counters["montages"].value == Decimal(12360)


def test_a_seq_already_seen_is_a_duplicate_and_changes_nothing():
    state = run([reading(1, at(2), montages=10), reading(2, at(3), montages=15)]).state
    again = run([reading(2, at(3), montages=15)], state)
    assert again.results[0].outcome == DUPLICATE
    assert again.usage == {} and again.state == state and not again.changed
    # Same seq with other content (a device bug): still a duplicate.
    other = run([reading(2, at(4), montages=99)], state)
    assert other.results[0].outcome == DUPLICATE and other.state == state


def test_a_duplicate_inside_one_batch_counts_once():
    state = run([reading(1, at(2), montages=10)]).state
    update = run([reading(2, at(3), montages=15), reading(2, at(3), montages=15)], state)
    assert [r.outcome for r in update.results] == [ACCEPTED, DUPLICATE]
    assert totals(update) == {(NOV, "montages"): Decimal(5)}


def test_an_older_reading_is_recorded_and_ignored_for_usage():
    state = run([reading(1, at(2), montages=10), reading(3, at(5), montages=30)]).state
    late = run([reading(2, at(4), montages=20)], state)
    assert late.results[0].outcome == OUT_OF_ORDER
    assert late.usage == {}
    assert late.state.counters == state.counters
    assert late.state.out_of_order == 1 and 2 in late.state.recent_seqs
    assert late.changed  # recorded
    # Delivered again, it is now a duplicate: nothing more is recorded.
    again = run([reading(2, at(4), montages=20)], late.state)
    assert again.results[0].outcome == DUPLICATE and again.state == late.state


def test_the_next_reading_after_a_late_one_still_counts_everything():
    state = run([reading(1, at(2), montages=10), reading(3, at(5), montages=30)]).state
    state = run([reading(2, at(4), montages=20)], state).state
    update = run([reading(4, at(6), montages=41)], state)
    assert totals(update) == {(NOV, "montages"): Decimal(11)}


def test_same_time_is_ordered_by_seq():
    state = run([reading(5, at(2), montages=10)]).state
    same_time_later_seq = run([reading(6, at(2), montages=12)], state)
    assert same_time_later_seq.results[0].outcome == ACCEPTED
    assert totals(same_time_later_seq) == {(NOV, "montages"): Decimal(2)}
    same_time_earlier_seq = run([reading(4, at(2), montages=9)], state)
    assert same_time_earlier_seq.results[0].outcome == OUT_OF_ORDER


def test_a_value_below_the_last_one_is_a_reset_usage_is_the_new_value():
    state = run([reading(1, at(2), montages=500, tracings=40)]).state
    update = run([reading(2, at(3), montages=7, tracings=45)], state)
    assert totals(update) == {(NOV, "montages"): Decimal(7), (NOV, "tracings"): Decimal(5)}
    [reset] = update.resets
    assert (reset.meter, reset.seq, reset.ts, reset.previous, reset.value) == ("montages", 2, at(3), 500, 7)
    assert update.results[0].resets == ("montages",)
    assert update.state.resets == 1
    # After the reset the counter continues from its new value.
    after = run([reading(3, at(4), montages=10)], update.state)
    assert totals(after) == {(NOV, "montages"): Decimal(3)} and after.resets == ()


def test_a_reset_to_zero_is_flagged_and_counts_nothing():
    state = run([reading(1, at(2), montages=500)]).state
    update = run([reading(2, at(3), montages=0)], state)
    assert totals(update) == {(NOV, "montages"): Decimal(0)}
    assert [r.meter for r in update.resets] == ["montages"]


def test_usage_counts_in_the_period_that_contains_ts():
    state = run([reading(1, at(29, month=11), montages=100)]).state
    update = run(
        [
            reading(2, at(30, 23, month=11), montages=110),
            reading(3, datetime(2026, 12, 1, 0, 0, tzinfo=UTC), montages=111),
            reading(4, at(2, month=12), montages=130),
        ],
        state,
    )
    assert totals(update) == {(NOV, "montages"): Decimal(10), (DEC, "montages"): Decimal(20)}
    assert list(update.usage) == [NOV, DEC]
    assert [r.period_start for r in update.results] == [NOV, DEC, DEC]


def test_periods_follow_the_merchant_time_zone():
    def paris(ts):
        return period_at(datetime(2026, 10, 31, 23, tzinfo=UTC), MONTH, ts, "Europe/Paris").start

    state = run([reading(1, datetime(2026, 11, 30, 22, tzinfo=UTC), montages=1)], period_of=paris).state
    # 23:30 UTC on 30 Nov is 00:30 on 1 Dec in Paris: December's period.
    update = run([reading(2, datetime(2026, 11, 30, 23, 30, tzinfo=UTC), montages=3)], state, period_of=paris)
    assert list(update.usage) == [datetime(2026, 11, 30, 23, tzinfo=UTC)]


def test_a_reading_before_the_first_period_moves_the_counter_but_counts_nowhere():
    state = run([reading(1, datetime(2026, 10, 20, tzinfo=UTC), montages=100)]).state
    before = run([reading(2, datetime(2026, 10, 25, tzinfo=UTC), montages=150)], state)
    assert before.usage == {} and before.results[0].outcome == ACCEPTED
    assert before.results[0].period_start is None
    after = run([reading(3, at(2), montages=160)], before.state)
    assert totals(after) == {(NOV, "montages"): Decimal(10)}


def test_a_counter_that_appears_later_starts_with_a_baseline():
    state = run([reading(1, at(2), montages=10)]).state
    update = run([reading(2, at(3), montages=12, tracings=300)], state)
    assert totals(update) == {(NOV, "montages"): Decimal(2)}
    assert update.results[0].baselines == ("tracings",)
    later = run([reading(3, at(4), tracings=301)], update.state)
    assert totals(later) == {(NOV, "tracings"): Decimal(1)}
    assert later.state.counters["montages"] == CounterState(Decimal(12), 2, at(3))


def test_decimal_counters_stay_exact():
    state = run([reading(1, at(2), kwh="1000.125")]).state
    update = run([reading(2, at(3), kwh="1000.2")], state)
    assert totals(update) == {(NOV, "kwh"): Decimal("0.075")}


def test_readings_of_one_batch_are_applied_in_time_order():
    state = run([reading(1, at(2), montages=10)]).state
    update = run([reading(4, at(5), montages=40), reading(2, at(3), montages=20), reading(3, at(4), montages=30)], state)
    assert [r.reading.seq for r in update.results] == [2, 3, 4]
    assert all(r.outcome == ACCEPTED for r in update.results)
    tally = update.usage[NOV]["montages"]
    assert (tally.total, tally.maximum, tally.last, tally.last_at) == (30, 10, 10, at(5))


def test_a_restarted_seq_with_newer_readings_keeps_counting():
    state = run([reading(900, at(2), montages=10), reading(901, at(3), montages=12)]).state
    update = run([reading(1, at(4), montages=15)], state)
    assert update.results[0].outcome == ACCEPTED
    assert totals(update) == {(NOV, "montages"): Decimal(3)}


def test_the_window_of_remembered_seqs_is_bounded():
    readings = [reading(seq, at(2) + timedelta(minutes=seq), montages=seq) for seq in range(1, 60)]
    update = run(readings)
    assert update.state.recent_seqs == tuple(range(60 - RECENT_SEQS, 60))
    # A seq older than the window is no longer known as a duplicate, but its
    # time makes it late: still nothing counted twice.
    again = run([readings[0]], update.state)
    assert again.results[0].outcome == OUT_OF_ORDER and again.usage == {}


def test_maximum_and_last_of_a_period_are_over_the_deltas():
    state = run([reading(1, at(2), montages=0)]).state
    update = run([reading(2, at(3), montages=5), reading(3, at(4), montages=6), reading(4, at(5), montages=9)], state)
    tally = update.usage[NOV]["montages"]
    assert tally.meter_usage().total == 9
    assert tally.meter_usage().maximum == 5
    assert tally.meter_usage().last == 3


# --- the open period ------------------------------------------------------


def end_of(period_start: datetime) -> datetime:
    return period_at(ANCHOR, MONTH, period_start).end


def tally(total) -> UsageTally:
    return UsageTally(Decimal(total), Decimal(total), Decimal(total), at(1))


def test_settle_merges_usage_of_the_open_period():
    open_usage = OpenUsage("sub_a", NOV, DEC, {"montages": tally(3)})
    new_open, closed = settle(open_usage, "sub_a", {NOV: {"montages": tally(2), "tracings": tally(1)}}, end_of)
    assert closed == []
    assert new_open.meters["montages"].total == 5 and new_open.meters["tracings"].total == 1


def test_settle_closes_a_period_the_device_has_left():
    open_usage = OpenUsage("sub_a", NOV, DEC, {"montages": tally(3)})
    jan = datetime(2027, 1, 1, tzinfo=UTC)
    new_open, closed = settle(open_usage, "sub_a", {DEC: {"montages": tally(2)}, jan: {"montages": tally(1)}}, end_of)
    assert [(c.period_start, c.meters["montages"].total) for c in closed] == [(NOV, 3), (DEC, 2)]
    assert (new_open.period_start, new_open.period_end, new_open.meters["montages"].total) == (jan, end_of(jan), 1)


def test_settle_closes_the_open_usage_of_another_subscription():
    open_usage = OpenUsage("sub_old", NOV, DEC, {"montages": tally(3)})
    new_open, closed = settle(open_usage, "sub_new", {NOV: {"montages": tally(2)}}, end_of)
    assert [(c.subscription_id, c.meters["montages"].total) for c in closed] == [("sub_old", 3)]
    assert (new_open.subscription_id, new_open.meters["montages"].total) == ("sub_new", 2)


def test_settle_without_usage_keeps_the_open_period():
    open_usage = OpenUsage("sub_a", NOV, DEC, {"montages": tally(3)})
    assert settle(open_usage, "sub_a", {}, end_of) == (open_usage, [])
    assert settle(None, "sub_a", {}, end_of) == (None, [])


def test_settle_never_loses_usage_of_an_earlier_period():
    open_usage = OpenUsage("sub_a", DEC, datetime(2027, 1, 1, tzinfo=UTC), {"montages": tally(3)})
    new_open, closed = settle(open_usage, "sub_a", {NOV: {"montages": tally(2)}}, end_of)
    assert new_open == open_usage
    assert [(c.period_start, c.meters["montages"].total) for c in closed] == [(NOV, 2)]


# --- properties -----------------------------------------------------------

START = datetime(2026, 11, 1, tzinfo=UTC)


@st.composite
def device_history(draw, resets: bool = False):
    """A device's readings in time order: seq 1..n, times strictly increasing
    over ~3 months, values non-decreasing (or arbitrary with resets)."""
    n = draw(st.integers(min_value=1, max_value=30))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=6 * 24 * 60), min_size=n, max_size=n))
    if resets:
        values = draw(st.lists(st.integers(min_value=0, max_value=1000), min_size=n, max_size=n))
    else:
        steps = draw(st.lists(st.integers(min_value=0, max_value=50), min_size=n, max_size=n))
        values = [sum(steps[: i + 1]) + 100 for i in range(n)]
    ts, readings = START, []
    for seq, (gap, value) in enumerate(zip(gaps, values), 1):
        ts = ts + timedelta(minutes=gap)
        readings.append(CounterReading(seq, ts, {"montages": Decimal(value)}, ref=seq))
    return readings


@st.composite
def deliveries(draw, readings):
    """The readings delivered in any order, some of them several times, in batches of any size."""
    order = draw(st.permutations(readings))
    repeats = draw(st.lists(st.sampled_from(readings), max_size=10))
    stream = list(order)
    for repeated in repeats:
        stream.insert(draw(st.integers(min_value=0, max_value=len(stream))), repeated)
    batches, i = [], 0
    while i < len(stream):
        size = draw(st.integers(min_value=1, max_value=8))
        batches.append(stream[i : i + size])
        i += size
    return batches


def deliver(batches, period_of=monthly):
    state, usage, results = DeviceCounters(), {}, []
    for batch in batches:
        update = apply_readings(state, batch, period_of)
        state = update.state
        results.extend(update.results)
        for period, meters in update.usage.items():
            for meter, tally_ in meters.items():
                key = (period, meter)
                usage[key] = usage[key].merge(tally_) if key in usage else tally_
    return state, usage, results


def total_of(usage) -> Decimal:
    return sum((t.total for t in usage.values()), Decimal(0))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_delivery_sums_to_the_last_value_minus_the_baseline(data):
    readings = data.draw(device_history())
    state, usage, results = deliver(data.draw(deliveries(readings)))
    newest = max(readings, key=lambda r: (r.ts, r.seq))
    assert state.counters["montages"].value == newest.counters["montages"]
    [baseline] = [r for r in results if r.baselines]
    assert total_of(usage) == newest.counters["montages"] - baseline.reading.counters["montages"]
    # Every reading is accounted for once, whatever was delivered again.
    assert {r.reading.seq for r in results if r.outcome != DUPLICATE} == {r.seq for r in readings}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_in_order_delivery_in_any_batches_counts_every_difference_in_its_period(data):
    readings = data.draw(device_history(resets=True))
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(readings) - 1)))))
    bounds = [0, *[c for c in cuts if c < len(readings)], len(readings)]
    batches = [readings[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    state, usage, _ = deliver(batches)
    expected: dict = {}
    for previous, current in zip(readings, readings[1:]):
        before, now = previous.counters["montages"], current.counters["montages"]
        delta = now - before if now >= before else now
        key = (monthly(current.ts), "montages")
        expected[key] = expected.get(key, Decimal(0)) + delta
    assert {key: t.total for key, t in usage.items()} == expected
    assert state.resets == sum(1 for p, c in zip(readings, readings[1:]) if c.counters["montages"] < p.counters["montages"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_batching_does_not_change_the_result(data):
    readings = data.draw(device_history(resets=True))
    one_by_one = deliver([[r] for r in readings])
    all_at_once = deliver([list(reversed(readings))])
    assert one_by_one[0] == all_at_once[0]
    assert one_by_one[1] == all_at_once[1]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_duplicate_never_changes_anything(data):
    readings = data.draw(device_history(resets=True))
    batches = data.draw(deliveries(readings))
    state, _, _ = deliver(batches)
    delivered = [r for batch in batches for r in batch]
    again = data.draw(st.lists(st.sampled_from(delivered), min_size=1, max_size=5))
    recent = [r for r in again if r.seq in state.recent_seqs]
    if recent:
        update = apply_readings(state, recent, monthly)
        assert update.state == state and update.usage == {} and not update.changed
    # Beyond the window a redelivery may be recorded as late, but never counts.
    update = apply_readings(state, again, monthly)
    assert update.usage == {} and update.state.counters == state.counters


def test_tally_merge_is_order_free():
    a = UsageTally(Decimal(3), Decimal(2), Decimal(1), at(2))
    b = UsageTally(Decimal(5), Decimal(4), Decimal(4), at(3))
    c = UsageTally(Decimal(1), Decimal(1), Decimal(1), at(3))
    assert a.merge(b).merge(c) == c.merge(a).merge(b) == b.merge(c).merge(a)
    assert a.merge(b).merge(c) == UsageTally(Decimal(9), Decimal(4), Decimal(4), at(3))


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=5)),
        min_size=1,
        max_size=20,
    ),
    st.randoms(),
)
def test_tally_split_any_way_merges_to_the_same(pairs, rnd):
    quantities = [(Decimal(q), at(1) + timedelta(hours=h)) for q, h in pairs]
    whole = UsageTally()
    for q, t in quantities:
        whole = whole.add(q, t)
    parts = [UsageTally(), UsageTally(), UsageTally()]
    for q, t in quantities:
        i = rnd.randrange(3)
        parts[i] = parts[i].add(q, t)
    rnd.shuffle(parts)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert (merged.total, merged.maximum, merged.last_at) == (whole.total, whole.maximum, whole.last_at)
    # At a tie of times the last value kept may differ, but it is one of the tied ones.
    tied = {q for q, t in quantities if t == whole.last_at}
    assert merged.last in tied


def test_tally_strings_round_trip():
    t = UsageTally(Decimal("7.5"), Decimal("3"), Decimal("0.25"), at(2))
    assert UsageTally.from_strings(t.as_strings()) == t
    assert t.as_strings() == {"total": "7.5", "maximum": "3", "last": "0.25", "last_at": "2026-11-02T10:00:00Z"}
    assert UsageTally.from_strings({"total": "0"}) == UsageTally()


@pytest.mark.parametrize("text", ["2026-11-22", "not a time", 5])
def test_parse_instant_refuses_naive_or_garbage(text):
    from chalicelib.domain.usage import parse_instant

    with pytest.raises(ValueError):
        parse_instant(text)
