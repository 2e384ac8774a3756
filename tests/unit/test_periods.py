"""Billing periods: stepped from the anchor, month ends clamped, in the merchant's zone."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.periods import (
    Interval,
    Period,
    period_at,
    period_bounds,
    period_days,
    period_index_at,
    period_start,
    proration_fraction,
)

UTC = timezone.utc
MONTH = Interval("month")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def starts(anchor, interval, n, tz=None):
    return [period_start(anchor, interval, k, tz) for k in range(n)]


def test_month_end_anchor_clamps_and_comes_back():
    # 31 Jan -> 28 Feb -> 31 Mar -> 30 Apr -> 31 May: from the anchor, never chained.
    assert starts(utc(2026, 1, 31), MONTH, 5) == [
        utc(2026, 1, 31),
        utc(2026, 2, 28),
        utc(2026, 3, 31),
        utc(2026, 4, 30),
        utc(2026, 5, 31),
    ]


def test_leap_year_february():
    assert starts(utc(2028, 1, 31), MONTH, 3) == [utc(2028, 1, 31), utc(2028, 2, 29), utc(2028, 3, 31)]


def test_leap_day_anchor_yearly():
    year = Interval("year")
    assert starts(utc(2028, 2, 29), year, 5) == [
        utc(2028, 2, 29),
        utc(2029, 2, 28),
        utc(2030, 2, 28),
        utc(2031, 2, 28),
        utc(2032, 2, 29),  # back on the 29th: computed from the anchor
    ]


def test_leap_day_anchor_monthly():
    assert starts(utc(2028, 2, 29), MONTH, 3) == [utc(2028, 2, 29), utc(2028, 3, 29), utc(2028, 4, 29)]


def test_interval_count_quarterly():
    quarter = Interval("month", 3)
    assert starts(utc(2026, 11, 30), quarter, 4) == [
        utc(2026, 11, 30),
        utc(2027, 2, 28),
        utc(2027, 5, 30),
        utc(2027, 8, 30),
    ]


def test_days_and_weeks():
    assert starts(utc(2026, 12, 30, 15), Interval("day", 2), 3) == [
        utc(2026, 12, 30, 15),
        utc(2027, 1, 1, 15),
        utc(2027, 1, 3, 15),
    ]
    assert starts(utc(2026, 2, 26), Interval("week"), 2) == [utc(2026, 2, 26), utc(2026, 3, 5)]


def test_paris_monthly_spring_forward():
    # Anchor 2026-03-01 00:00 Paris (CET, UTC+1) = 2026-02-28T23:00Z; the
    # next local midnight, 1 April, is CEST (UTC+2) = 2026-03-31T22:00Z.
    anchor = utc(2026, 2, 28, 23)
    assert period_start(anchor, MONTH, 1, "Europe/Paris") == utc(2026, 3, 31, 22)
    period = period_bounds(anchor, MONTH, 0, "Europe/Paris")
    assert period == Period(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    assert period.end - period.start == timedelta(days=31, hours=-1)
    assert period_days(period.start, period.end) == 31


def test_paris_monthly_fall_back():
    # 1 October 2026 00:00 CEST = 2026-09-30T22:00Z; 1 November 00:00 CET = 2026-10-31T23:00Z.
    anchor = utc(2026, 9, 30, 22)
    assert starts(anchor, MONTH, 3, "Europe/Paris") == [
        utc(2026, 9, 30, 22),
        utc(2026, 10, 31, 23),
        utc(2026, 11, 30, 23),
    ]
    period = period_bounds(anchor, MONTH, 0, "Europe/Paris")
    assert period.end - period.start == timedelta(days=31, hours=1)
    assert period_days(period.start, period.end) == 31


def test_paris_a_year_of_local_midnights():
    anchor = utc(2025, 12, 31, 23)  # 1 January 2026 00:00 Paris
    for k, start in enumerate(starts(anchor, MONTH, 13, "Europe/Paris")):
        local = start.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
        assert (local.day, local.hour, local.minute) == (1, 0, 0)
        assert local.month == (k % 12) + 1


def test_daily_periods_keep_local_time_across_dst():
    anchor = utc(2026, 3, 28, 8)  # 09:00 Paris
    day = Interval("day")
    assert period_start(anchor, day, 1, "Europe/Paris") == utc(2026, 3, 29, 7)  # 09:00 CEST
    assert period_bounds(anchor, day, 0, "Europe/Paris").end - anchor == timedelta(hours=23)


def test_a_skipped_local_time_lands_after_the_gap():
    # 02:30 does not exist in Paris on 29 March 2026: the first instant after the gap's offset applies.
    anchor = utc(2026, 2, 1, 1, 30)  # 02:30 CET on 1 February
    assert period_start(anchor, Interval("day"), 56, "Europe/Paris") == utc(2026, 3, 29, 1, 30)  # 03:30 CEST


def test_utc_default_and_names():
    anchor = utc(2026, 1, 31)
    assert period_start(anchor, MONTH, 1) == period_start(anchor, MONTH, 1, "UTC") == utc(2026, 2, 28)


def test_negative_k_goes_before_the_anchor():
    assert period_start(utc(2026, 3, 31), MONTH, -1) == utc(2026, 2, 28)


def test_bad_inputs():
    with pytest.raises(InvalidRequest) as raised:
        Interval("fortnight")
    assert raised.value.param == "billing_interval"
    with pytest.raises(InvalidRequest) as raised:
        Interval("month", 0)
    assert raised.value.param == "interval_count"
    with pytest.raises(InvalidRequest) as raised:
        period_start(utc(2026, 1, 1), MONTH, 1, "Mars/Olympus")
    assert raised.value.param == "timezone"
    with pytest.raises(ValueError):
        period_start(datetime(2026, 1, 1), MONTH, 1)
    with pytest.raises(ValueError):
        Period(utc(2026, 2, 1), utc(2026, 1, 1))


def test_period_index_at_boundaries():
    anchor = utc(2026, 1, 31)
    assert period_index_at(anchor, MONTH, anchor) == 0
    assert period_index_at(anchor, MONTH, utc(2026, 2, 27, 23, 59)) == 0
    assert period_index_at(anchor, MONTH, utc(2026, 2, 28)) == 1
    assert period_index_at(anchor, MONTH, utc(2026, 3, 30)) == 1
    assert period_index_at(anchor, MONTH, utc(2026, 3, 31)) == 2
    assert period_index_at(anchor, MONTH, utc(2026, 1, 30)) == -1
    assert period_at(anchor, MONTH, utc(2026, 3, 1)) == Period(utc(2026, 2, 28), utc(2026, 3, 31))


def test_period_index_at_in_paris():
    anchor = utc(2026, 2, 28, 23)
    assert period_index_at(anchor, MONTH, utc(2026, 3, 31, 21, 59), "Europe/Paris") == 0
    assert period_index_at(anchor, MONTH, utc(2026, 3, 31, 22), "Europe/Paris") == 1


def test_period_index_at_is_direct_for_daily_periods_far_away():
    anchor = utc(2000, 1, 1, 6)
    instant = utc(2026, 11, 22, 10)
    k = period_index_at(anchor, Interval("day"), instant, "Europe/Paris")
    assert period_start(anchor, Interval("day"), k, "Europe/Paris") <= instant
    assert period_start(anchor, Interval("day"), k + 1, "Europe/Paris") > instant
    assert k == 9822


INTERVALS = st.builds(Interval, st.sampled_from(["day", "week", "month", "year"]), st.integers(1, 4))
ZONES = st.sampled_from([None, "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
ANCHORS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC))


@given(ANCHORS, INTERVALS, ZONES)
def test_period_starts_strictly_increase(anchor, interval, tz):
    ks = starts(anchor, interval, 30, tz)
    assert all(a < b for a, b in zip(ks, ks[1:]))


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)), st.integers(1, 3), st.integers(0, 120))
def test_monthly_periods_never_drift(anchor_naive, count, k):
    # Period k falls on the anchor's day, clamped to the month's length, at the anchor's time.
    anchor = anchor_naive.replace(tzinfo=UTC)
    start = period_start(anchor, Interval("month", count), k)
    months = anchor.month - 1 + k * count
    year, month = anchor.year + months // 12, months % 12 + 1
    import calendar

    day = min(anchor.day, calendar.monthrange(year, month)[1])
    assert start == anchor.replace(year=year, month=month, day=day)


@given(ANCHORS, INTERVALS, ZONES, st.integers(-50, 400), st.floats(0, 1))
def test_period_index_at_finds_the_containing_period(anchor, interval, tz, k, where):
    period = period_bounds(anchor, interval, k, tz)
    instant = period.start + (period.end - period.start) * where
    if instant >= period.end:
        instant = period.end - timedelta(microseconds=1)
    assert period_index_at(anchor, interval, instant, tz) == k


def test_proration_fraction_counts_remaining_whole_days():
    start, end = utc(2026, 4, 1), utc(2026, 5, 1)  # 30 days
    assert proration_fraction(start, end, start) == 1
    assert proration_fraction(start, end, utc(2026, 4, 1, 0, 1)) == Decimal(29) / Decimal(30)
    assert proration_fraction(start, end, utc(2026, 4, 16)) == Decimal(15) / Decimal(30)
    assert proration_fraction(start, end, utc(2026, 4, 16, 12)) == Decimal(14) / Decimal(30)
    assert proration_fraction(start, end, utc(2026, 4, 30, 23, 59)) == 0
    assert proration_fraction(start, end, end) == 0
    assert proration_fraction(start, end, utc(2026, 3, 1)) == 1
    assert proration_fraction(start, end, utc(2026, 6, 1)) == 0
    assert isinstance(proration_fraction(start, end, utc(2026, 4, 16)), Decimal)


def test_proration_fraction_in_a_dst_shortened_period():
    # Paris March 2026: 31 days minus one hour in UTC (days = 31). Remaining
    # whole days count back from the end, 31 Mar 22:00Z: from 16 Mar 22:00Z
    # exactly 15 days remain, an hour later 14 days and 23 hours, i.e. 14.
    start, end = utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)
    assert proration_fraction(start, end, start) == 1
    assert proration_fraction(start, end, start + timedelta(minutes=1)) == Decimal(30) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 3, 16, 22)) == Decimal(15) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 3, 16, 22, 30)) == Decimal(14) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 3, 16, 23)) == Decimal(14) / Decimal(31)
    assert proration_fraction(start, end, end - timedelta(minutes=1)) == 0


def test_proration_fraction_in_a_dst_lengthened_period():
    # Paris October 2026: 30 Sep 22:00Z to 31 Oct 23:00Z, 31 days and one
    # hour (days = 31). The count moves at 23:00Z every day, never an hour early.
    start, end = utc(2026, 9, 30, 22), utc(2026, 10, 31, 23)
    assert proration_fraction(start, end, start + timedelta(minutes=30)) == 1  # 31 days 30 minutes remain
    assert proration_fraction(start, end, utc(2026, 10, 16, 22, 30)) == Decimal(15) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 10, 16, 23)) == Decimal(15) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 10, 16, 23, 1)) == Decimal(14) / Decimal(31)
    assert proration_fraction(start, end, utc(2026, 10, 30, 23, 30)) == 0


@given(ANCHORS, INTERVALS, ZONES, st.floats(0.001, 0.999))
def test_proration_fraction_is_the_whole_days_left_to_the_end(anchor, interval, tz, where):
    period = period_bounds(anchor, interval, 0, tz)
    at = period.start + (period.end - period.start) * where
    days = period_days(period.start, period.end)
    fraction = proration_fraction(period.start, period.end, at)
    remaining = round(fraction * days)
    assert fraction == Decimal(remaining) / Decimal(days)
    left = period.end - at
    if remaining < days:  # else a period an hour longer than its days, in its first hour
        assert timedelta(days=remaining) <= left < timedelta(days=remaining + 1)


@given(ANCHORS, INTERVALS, ZONES, st.floats(-0.5, 1.5))
def test_proration_fraction_is_between_0_and_1_and_decreasing(anchor, interval, tz, where):
    period = period_bounds(anchor, interval, 0, tz)
    at = period.start + (period.end - period.start) * where
    fraction = proration_fraction(period.start, period.end, at)
    assert 0 <= fraction <= 1
    later = proration_fraction(period.start, period.end, at + timedelta(hours=7))
    assert later <= fraction
