"""What an immediate change, an immediate cancellation or a resume bills, and
what is left of the period's usage afterwards, with plain numbers."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.periods import Period
from chalicelib.domain.proration import (
    BilledUsage,
    PricedPlan,
    cancel_now_lines,
    change_now_lines,
    resume_lines,
    usage_lines,
    worth_invoicing,
)
from chalicelib.domain.rating import MeterUsage

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
PERIOD = Period(START, datetime(2026, 12, 1, tzinfo=timezone.utc))  # 30 days
DAY_10 = START + timedelta(days=9, hours=8)  # the tenth day has started: 20 whole days remain


def offer(base: str, unit: str, *, express: str = "30.00", code: str = "plan", **metered):
    return parse_offer({
        "code": code, "name": code, "currency": "EUR", "billing_interval": "month",
        "components": [
            {"code": "base", "type": "flat", "amount": base},
            {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": unit, **metered},
        ],
        "options": [{"code": "express", "name": "4h on-site", "amount": express}],
    })


OLD = PricedPlan(offer("49.00", "1.20"), ("express",))
NEW = PricedPlan(offer("79.00", "1.05", code="plus"), ())


def amounts(lines):
    return [(line.kind, line.component, line.amount) for line in lines]


def test_change_on_day_10_of_30_credits_two_thirds_and_charges_two_thirds():
    usage = {"montages": MeterUsage(Decimal(100))}
    lines = change_now_lines(OLD, NEW, usage, None, PERIOD, DAY_10, fees_billed=True)
    assert amounts(lines) == [
        ("usage", "montage", Decimal("120.00")),          # 100 x 1.20, old terms
        ("proration", "base", Decimal("-32.67")),        # 49 x 20/30 = 32.666...
        ("proration", "express", Decimal("-20.00")),     # 30 x 20/30
        ("fee", "base", Decimal("52.67")),               # 79 x 20/30 = 52.666...
    ]
    assert lines[0].period_start == START and lines[0].period_end == DAY_10
    assert all(line.period_start == DAY_10 and line.period_end == PERIOD.end for line in lines[1:])


def test_fees_not_billed_yet_are_neither_credited_nor_charged():
    lines = change_now_lines(OLD, NEW, {}, None, PERIOD, DAY_10, fees_billed=False)
    assert amounts(lines) == [("usage", "montage", Decimal("0.00"))]
    assert not worth_invoicing(lines)


def test_the_rest_of_the_period_bills_only_the_usage_not_billed_yet():
    billed = BilledUsage(DAY_10, {"montages": MeterUsage(Decimal(100))})
    usage = {"montages": MeterUsage(Decimal(150))}
    lines = usage_lines(NEW, usage, billed, PERIOD, PERIOD.end)
    assert amounts(lines) == [("usage", "montage", Decimal("52.50"))]  # 50 x 1.05
    assert lines[0].quantity == 50
    assert lines[0].period_start == DAY_10 and "usage from 2026-11-10 08:00 UTC" in lines[0].description


def test_included_units_are_not_given_twice_after_a_change():
    plan = PricedPlan(offer("0", "1.00", included_units="100"), ())
    billed = BilledUsage(DAY_10, {"montages": MeterUsage(Decimal(80))})
    # 80 were within the 100 included; of the next 50, 20 still are.
    lines = usage_lines(plan, {"montages": MeterUsage(Decimal(130))}, billed, PERIOD, PERIOD.end)
    assert amounts(lines) == [("usage", "montage", Decimal("30.00"))]


def test_a_second_change_bills_the_usage_since_the_first():
    billed = BilledUsage(DAY_10, {"montages": MeterUsage(Decimal(100))})
    later = DAY_10 + timedelta(days=5)
    lines = change_now_lines(NEW, OLD, {"montages": MeterUsage(Decimal(110))}, billed, PERIOD, later, fees_billed=True)
    assert lines[0].amount == Decimal("10.50") and lines[0].period_start == DAY_10  # 10 x 1.05
    # 15 days remain of 30: half of each fee.
    assert amounts(lines[1:]) == [
        ("proration", "base", Decimal("-39.50")),
        ("fee", "base", Decimal("24.50")),
        ("option", "express", Decimal("15.00")),
    ]


def test_cancel_now_bills_usage_so_far_and_credits_unused_fees():
    lines = cancel_now_lines(OLD, {"montages": MeterUsage(Decimal(3))}, None, PERIOD, DAY_10, fees_billed=True)
    assert amounts(lines) == [
        ("usage", "montage", Decimal("3.60")),
        ("proration", "base", Decimal("-32.67")),
        ("proration", "express", Decimal("-20.00")),
    ]
    assert sum(line.amount for line in lines) == Decimal("-49.07")


def test_cancel_at_the_very_start_credits_everything():
    lines = cancel_now_lines(OLD, {}, None, PERIOD, START, fees_billed=True)
    assert sum(line.amount for line in lines) == Decimal("-79.00")


def test_resume_into_a_period_opened_while_paused_bills_its_rest():
    assert amounts(resume_lines(OLD, PERIOD, DAY_10, fees_billed=False)) == [
        ("fee", "base", Decimal("32.67")),
        ("option", "express", Decimal("20.00")),
    ]
    assert resume_lines(OLD, PERIOD, DAY_10, fees_billed=True) == []


def test_a_change_never_switches_currency():
    usd = PricedPlan(parse_offer({"code": "u", "name": "u", "currency": "USD", "billing_interval": "month",
                                  "components": [{"code": "base", "type": "flat", "amount": "1.00"}]}))
    with pytest.raises(ValueError):
        change_now_lines(OLD, usd, {}, None, PERIOD, DAY_10, fees_billed=True)
