"""Where a subscription's usage counts (domain/usage.UsageCalendar): the
period containing the reading's time, nothing before the start, nothing at
or after a cancellation — by `period_of` and by the cached `finder` alike."""
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.periods import Interval, Period
from chalicelib.domain.usage import UsageCalendar

UTC = timezone.utc
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV = Period(NOV_1, datetime(2026, 12, 1, tzinfo=UTC))
CANCELED = datetime(2026, 11, 20, 12, tzinfo=UTC)


def calendar(end=None) -> UsageCalendar:
    return UsageCalendar(start=NOV_1, anchor=NOV_1, interval=Interval("month"), end=end)


def test_a_live_calendar_places_a_reading_in_its_period():
    assert calendar().period_of(datetime(2026, 11, 25, tzinfo=UTC)) == NOV
    assert calendar().period_of(NOV_1 - timedelta(seconds=1)) is None


def test_nothing_counts_at_or_after_the_cancellation():
    ended = calendar(CANCELED)
    assert ended.period_of(CANCELED - timedelta(seconds=1)) == NOV
    assert ended.period_of(CANCELED) is None
    assert ended.period_of(datetime(2027, 3, 1, tzinfo=UTC)) is None


def test_the_finder_does_not_let_its_cached_period_outlive_the_cancellation():
    find = calendar(CANCELED).finder(hint=NOV)  # the device's open period, cached
    assert find(datetime(2026, 11, 15, tzinfo=UTC)) == NOV
    assert find(datetime(2026, 11, 22, tzinfo=UTC)) is None


@given(st.integers(min_value=-5 * 86400, max_value=60 * 86400), st.booleans())
def test_the_finder_and_period_of_always_agree(offset, hinted):
    ended = calendar(CANCELED)
    moment = NOV_1 + timedelta(seconds=offset)
    assert ended.finder(NOV if hinted else None)(moment) == ended.period_of(moment)
