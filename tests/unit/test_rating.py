"""Rating: every pricing model with plain hand-computed numbers, the worked
examples of Stripe's and Lago's public docs, and properties."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import billing_quantum
from chalicelib.domain.periods import Period, proration_fraction
from chalicelib.domain.rating import (
    CHARGE_MODELS,
    InvoiceLine,
    MeterUsage,
    PriceBook,
    credit_unused_fees,
    price_book,
    prorate_fees,
    rate_fees,
    rate_late_usage,
    rate_period,
    rate_usage,
)

D = Decimal
UTC = timezone.utc
NOVEMBER = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
DECEMBER = Period(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def make_offer(*components, options=(), currency="EUR"):
    return parse_offer(
        {
            "code": "offer",
            "name": "Offer",
            "currency": currency,
            "billing_interval": "month",
            "components": list(components),
            "options": list(options),
        }
    )


def metered(**fields):
    return {"code": "m", "type": "metered", "meter": "units", **fields}


def used(quantity, meter="units") -> dict:
    return {meter: MeterUsage(D(quantity), D(quantity), D(quantity))}


def total(lines) -> Decimal:
    return sum((line.amount for line in lines), D(0))


def rated(component, quantity, currency="EUR"):
    return rate_usage(make_offer(component, currency=currency), None, used(quantity), NOVEMBER)


# --- Stripe: https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing
# Tiers: 1-5 fonts 7 USD, 6-10 6.50 USD, 11+ 6 USD.
STRIPE_TIERS = [
    {"up_to": "5", "unit_amount": "7"},
    {"up_to": "10", "unit_amount": "6.5"},
    {"up_to": None, "unit_amount": "6"},
]


@pytest.mark.parametrize("fonts, cost", [(1, "7.00"), (5, "35.00"), (6, "39.00"), (20, "120.00"), (25, "150.00")])
def test_stripe_volume_example(fonts, cost):
    # The page's volume table: the whole quantity at the tier it falls in.
    lines = rated(metered(tier_mode="volume", tiers=STRIPE_TIERS), fonts, "USD")
    assert total(lines) == D(cost)
    assert len(lines) == 1


@pytest.mark.parametrize("fonts, cost", [(1, "7.00"), (5, "35.00"), (6, "41.50"), (20, "127.50"), (25, "157.50")])
def test_stripe_graduated_example(fonts, cost):
    # Same tiers, graduated: 6 = 5 x 7 + 1 x 6.50; 20 = 35 + 5 x 6.50 + 10 x 6; 25 = 35 + 32.50 + 15 x 6.
    assert total(rated(metered(tier_mode="graduated", tiers=STRIPE_TIERS), fonts, "USD")) == D(cost)


def test_graduated_one_line_per_tier_touched():
    lines = rated(metered(tier_mode="graduated", tiers=STRIPE_TIERS), 20, "USD")
    assert [(l.quantity, l.unit_amount, l.amount) for l in lines] == [
        (D(5), D(7), D("35.00")),
        (D(5), D("6.5"), D("32.50")),
        (D(10), D(6), D("60.00")),
    ]
    assert all(l.kind == "usage" and l.component == "m" for l in lines)
    assert lines[1].description == "m: 5 units in tier 2 (5 to 10)"
    assert lines[2].description == "m: 10 units in tier 3 (above 10)"


# --- Stripe: https://stripe.com/docs/billing/subscriptions/quantity-transformation
# "10 USD for every 5 users (or portion thereof)".
@pytest.mark.parametrize("users, cost", [(1, "10.00"), (3, "10.00"), (5, "10.00"), (6, "20.00"), (7, "20.00")])
def test_stripe_package_example(users, cost):
    lines = rated(metered(package_size="5", unit_amount="10"), users, "USD")
    assert total(lines) == D(cost)


def test_stripe_car_rental_package_example():
    # https://docs.stripe.com/billing/subscriptions/usage-based/transform-quantities
    # 10 USD per started hour, usage in minutes: 150 minutes -> 3 hours -> 30 USD.
    (line,) = rated(metered(package_size="60", unit_amount="10"), 150, "USD")
    assert (line.quantity, line.unit_amount, line.amount) == (D(3), D(10), D("30.00"))
    assert line.description == "m: 150 units, 3 block(s) of 60"


# --- Lago: https://getlago.com/docs/guide/plans/charges/charge-models/volume
def test_lago_volume_example():
    # Tier 3 (50,001-100,000) at 0.0006 plus its 10 fixed fee: 65,000 calls cost 49.
    tiers = [
        {"up_to": "10000", "unit_amount": "0.0010", "flat_amount": "10"},
        {"up_to": "50000", "unit_amount": "0.0008", "flat_amount": "10"},
        {"up_to": "100000", "unit_amount": "0.0006", "flat_amount": "10"},
        {"up_to": None, "unit_amount": "0.0004", "flat_amount": "10"},
    ]
    lines = rated(metered(tier_mode="volume", tiers=tiers), 65000, "USD")
    assert [l.amount for l in lines] == [D("39.00"), D("10.00")]
    assert total(lines) == D("49.00")


# --- Lago: https://getlago.com/docs/guide/plans/charges/charge-models/package
def test_lago_package_example_with_free_units():
    # 5 per 100 units, the first 100 free: 201 units = 0 + 5 + 5 = 10.
    lines = rated(metered(package_size="100", unit_amount="5", included_units="100"), 201, "USD")
    assert total(lines) == D("10.00")
    assert lines[0].quantity == 2


# --- Lago: https://getlago.com/docs/guide/plans/charges/charge-models/graduated
def test_lago_graduated_example():
    # 1 per unit for the first 100, 0.50 for the next 100, 0.10 beyond (the page
    # gives no total; by hand): 250 units = 100 + 50 + 5 = 155.
    tiers = [
        {"up_to": "100", "unit_amount": "1"},
        {"up_to": "200", "unit_amount": "0.50"},
        {"up_to": None, "unit_amount": "0.10"},
    ]
    assert total(rated(metered(tier_mode="graduated", tiers=tiers), 250, "USD")) == D("155.00")


# --- pricing rules, by hand


def test_per_unit():
    (line,) = rated(metered(unit_amount="1.20"), 412)
    assert (line.kind, line.quantity, line.unit_amount, line.amount) == ("usage", D(412), D("1.20"), D("494.40"))
    assert (line.period_start, line.period_end) == (NOVEMBER.start, NOVEMBER.end)


def test_per_unit_rounds_each_line_half_up():
    assert rated(metered(unit_amount="0.0042"), 3)[0].amount == D("0.01")  # 0.0126
    assert rated(metered(unit_amount="0.005"), 1)[0].amount == D("0.01")  # 0.005, half up
    assert rated(metered(unit_amount="0.0049"), 1)[0].amount == D("0.00")
    assert str(rated(metered(unit_amount="0.5"), 3, "JPY")[0].amount) == "2"  # 1.5 -> 2
    # KWD: three decimals written, billed in multiples of 0.010 (what Stripe charges)
    assert str(rated(metered(unit_amount="0.0005"), 30, "KWD")[0].amount) == "0.020"  # 0.015
    assert str(rated(metered(unit_amount="0.0005"), 3, "KWD")[0].amount) == "0.000"  # 0.0015


def test_decimal_quantities():
    (line,) = rated(metered(unit_amount="38.00"), "7.5")
    assert line.amount == D("285.00")


def test_included_units_come_off_before_tiers():
    # API.md's example: 100 included; 1500 calls -> 1400 billable -> 1000 x 0.50 + 400 x 0.40.
    component = metered(
        tier_mode="graduated",
        included_units="100",
        tiers=[{"up_to": "1000", "unit_amount": "0.50"}, {"up_to": None, "unit_amount": "0.40", "flat_amount": "0"}],
    )
    lines = rated(component, 1500)
    assert [(l.quantity, l.amount) for l in lines] == [(D(1000), D("500.00")), (D(400), D("160.00"))]
    assert total(rated(component, 100)) == 0
    assert total(rated(component, 99)) == 0
    assert total(rated(component, 101)) == D("0.50")


def test_included_units_per_unit_and_description():
    (line,) = rated(metered(unit_amount="2", included_units="10"), 25)
    assert (line.quantity, line.amount) == (D(15), D("30.00"))
    assert line.description == "m: 15 units beyond 10 included"


def test_graduated_flat_amounts_of_touched_tiers():
    component = metered(
        tier_mode="graduated",
        tiers=[
            {"up_to": "10", "unit_amount": "1", "flat_amount": "5"},
            {"up_to": None, "unit_amount": "0.5", "flat_amount": "20"},
        ],
    )
    lines = rated(component, 15)
    assert [l.amount for l in lines] == [D("10.00"), D("5.00"), D("2.50"), D("20.00")]
    assert lines[1].description == "m: flat fee of tier 1 (0 to 10)"
    assert total(rated(component, 10)) == D("15.00")  # tier 2 not touched
    assert total(rated(component, "10.5")) == D("35.25")
    zero = rated(component, 0)
    assert len(zero) == 1 and zero[0].amount == 0 and zero[0].quantity == 0  # no tier touched, no flat fee


def test_volume_boundaries_and_flat_only_tier():
    component = metered(
        tier_mode="volume",
        tiers=[{"up_to": "10", "flat_amount": "50"}, {"up_to": None, "unit_amount": "4"}],
    )
    assert total(rated(component, 1)) == D("50.00")
    assert total(rated(component, 10)) == D("50.00")  # up_to is inclusive
    assert total(rated(component, 11)) == D("44.00")  # volume may decrease
    assert total(rated(component, 0)) == 0


def test_package_decimal_blocks_round_up():
    # Decimal `//` truncates toward zero: blocks must still round up (7 units, blocks of 2 -> 4).
    assert rated(metered(package_size="2", unit_amount="1"), 7)[0].quantity == 4
    assert rated(metered(package_size="0.25", unit_amount="10"), "1.3")[0].quantity == 6
    assert rated(metered(package_size="5", unit_amount="1"), 0)[0].amount == 0


def test_minimum_lifts_the_component():
    component = metered(unit_amount="1.20", minimum_amount="50.00")
    lines = rated(component, 30)
    assert [(l.kind, l.amount) for l in lines] == [("usage", D("36.00")), ("minimum", D("14.00"))]
    assert lines[1].description == "m: minimum of 50.00 per period"
    assert [l.kind for l in rated(component, 50)] == ["usage"]  # 60.00 >= 50
    assert total(rated(component, 0)) == D("50.00")


def test_aggregations():
    usage = {"units": MeterUsage(total=D(30), maximum=D(12), last=D(7))}
    offer = make_offer(
        metered(code="s", unit_amount="1"),
        metered(code="x", unit_amount="1", aggregation="max"),
        metered(code="l", unit_amount="1", aggregation="last"),
    )
    assert [l.quantity for l in rate_usage(offer, None, usage, NOVEMBER)] == [D(30), D(12), D(7)]
    # no reading: zero, never an error; a negative sum (over-correction) bills nothing
    empty = {"units": MeterUsage(total=D(-3))}
    assert [l.quantity for l in rate_usage(offer, None, empty, NOVEMBER)] == [0, 0, 0]
    assert [l.amount for l in rate_usage(offer, None, {}, NOVEMBER)] == [0, 0, 0]


def test_unpriced_meters_are_not_billed():
    offer = make_offer(metered(unit_amount="1"))
    usage = {**used(2), "tracings": MeterUsage(D(210))}
    assert total(rate_usage(offer, None, usage, NOVEMBER)) == D("2.00")


def test_time_and_materials():
    offer = make_offer(
        {
            "code": "support",
            "type": "time_and_materials",
            "hours_meter": "agent_hours",
            "hourly_rate": "38.00",
            "materials_meter": "parts_cost",
            "markup_percent": "15",
        }
    )
    usage = {"agent_hours": MeterUsage(D("7.5")), "parts_cost": MeterUsage(D("230.40"))}
    hours, materials = rate_usage(offer, None, usage, NOVEMBER)
    assert (hours.quantity, hours.unit_amount, hours.amount) == (D("7.5"), D("38.00"), D("285.00"))
    assert (materials.quantity, materials.unit_amount, materials.amount) == (D("230.40"), D("1.15"), D("264.96"))
    assert hours.description == "support: 7.5 h at 38.00"
    assert [l.amount for l in rate_usage(offer, None, {}, NOVEMBER)] == [0, 0]


def quality_offer(**quality):
    return make_offer(
        {"code": "base", "type": "flat", "amount": "49.00"},
        metered(code="calls", meter="calls", unit_amount="0.50"),
        metered(code="montage", meter="montages", unit_amount="1.00", minimum_amount="20.00"),
        {
            "code": "quality",
            "type": "bonus_malus",
            "kpi_meter": "service_level",
            "target": "0.90",
            "bonus_percent": "5",
            "malus_percent": "10",
            "applies_to": ["calls"],
            **quality,
        },
    )


def kpi(value):
    return {"calls": MeterUsage(D(1320)), "service_level": MeterUsage(D("2.7"), D("0.99"), None if value is None else D(value))}


def test_bonus_when_the_objective_is_met():
    lines = rate_usage(quality_offer(), None, kpi("0.93"), NOVEMBER)
    adjustment = lines[-1]
    # calls: 1320 x 0.50 = 660.00; bonus 5% = 33.00
    assert (adjustment.kind, adjustment.component, adjustment.amount) == ("adjustment", "quality", D("33.00"))
    assert adjustment.description == "quality: service_level 0.93 met target >= 0.90, bonus of 5% on calls"
    assert rate_usage(quality_offer(), None, kpi("0.90"), NOVEMBER)[-1].amount == D("33.00")  # at target is met


def test_malus_when_missed_is_a_credit():
    adjustment = rate_usage(quality_offer(), None, kpi("0.85"), NOVEMBER)[-1]
    assert adjustment.amount == D("-66.00")
    assert "missed target >= 0.90, malus of 10% on calls" in adjustment.description


def test_no_kpi_no_line():
    lines = rate_usage(quality_offer(), None, kpi(None), NOVEMBER)
    assert [l.kind for l in lines] == ["usage", "usage", "minimum"]
    assert rate_usage(quality_offer(), None, {}, NOVEMBER)[-1].kind == "minimum"


def test_at_most_direction():
    offer = quality_offer(direction="at_most", target="2")
    assert rate_usage(offer, None, kpi("1.5"), NOVEMBER)[-1].amount == D("33.00")
    assert rate_usage(offer, None, kpi("2.5"), NOVEMBER)[-1].amount == D("-66.00")


def test_bonus_base_includes_minimum_and_flat_components():
    # montage: 5 units = 5.00 + minimum 15.00 = 20.00; base (flat) counts at 49.00.
    offer = quality_offer(applies_to=["montage", "base"], bonus_percent="10")
    usage = {**kpi("0.95"), "montages": MeterUsage(D(5))}
    assert rate_usage(offer, None, usage, NOVEMBER)[-1].amount == D("6.90")


def test_malus_rounds_half_up_on_the_absolute_value():
    offer = quality_offer(malus_percent="1")
    usage = {"calls": MeterUsage(D(1)), "service_level": MeterUsage(D(0), None, D(0))}  # 0.50 x 1% = 0.005
    assert rate_usage(offer, None, usage, NOVEMBER)[-1].amount == D("-0.01")
    usage = {"calls": MeterUsage(D(0)), "service_level": MeterUsage(D(0), None, D(0))}
    assert str(rate_usage(offer, None, usage, NOVEMBER)[-1].amount) == "0.00"  # never -0.00


# --- fees, options, overrides, proration

FEES_OFFER = dict(
    options=[
        {"code": "express", "name": "4h on-site", "amount": "30.00", "entitlements": ["4h_response"]},
        {"code": "night", "name": "Night line", "amount": "12.00"},
    ]
)


def fees_offer():
    return make_offer({"code": "base", "type": "flat", "amount": "49.00"}, metered(unit_amount="1"), **FEES_OFFER)


def test_fees_in_advance():
    lines = rate_fees(fees_offer(), ["express"], None, DECEMBER)
    assert [(l.kind, l.component, l.quantity, l.unit_amount, l.amount) for l in lines] == [
        ("fee", "base", D(1), D("49.00"), D("49.00")),
        ("option", "express", D(1), D("30.00"), D("30.00")),
    ]
    assert lines[1].description == "Option express: 4h on-site"
    assert (lines[0].period_start, lines[0].period_end) == (DECEMBER.start, DECEMBER.end)
    assert [l.component for l in rate_fees(fees_offer(), [], None, DECEMBER)] == ["base"]
    assert [l.component for l in rate_fees(fees_offer(), None, None, DECEMBER)] == ["base"]


def test_unknown_option_is_refused():
    with pytest.raises(InvalidRequest) as raised:
        rate_fees(fees_offer(), ["express", "gold"], None, DECEMBER)
    assert raised.value.param == "options[1]"


def test_price_overrides_apply_to_this_subscription():
    offer = fees_offer()
    overrides = {"base": {"amount": "39.00"}, "m": {"unit_amount": "1.05"}}
    assert rate_fees(offer, [], overrides, DECEMBER)[0].amount == D("39.00")
    # API.md's invoice example: 412 montages at the overridden 1.05 = 432.60
    (line,) = rate_usage(offer, overrides, used(412), NOVEMBER)
    assert (line.quantity, line.unit_amount, line.amount) == (D(412), D("1.05"), D("432.60"))
    assert line.as_dict()["amount"] == "432.60"
    with pytest.raises(InvalidRequest) as raised:
        rate_usage(offer, {"m": {"hourly_rate": "1"}}, used(1), NOVEMBER)
    assert raised.value.param == "price_overrides.m.hourly_rate"


def test_fraction_of_fees():
    lines = rate_fees(fees_offer(), ["express"], None, DECEMBER, D(1) / D(3))
    assert [l.amount for l in lines] == [D("16.33"), D("10.00")]
    assert lines[0].description == "base (33.33% of the period)"
    assert lines[0].unit_amount is None
    with pytest.raises(ValueError):
        rate_fees(fees_offer(), [], None, DECEMBER, D(2))


def test_credit_unused_fees_and_prorate_new_ones():
    # A change on 16 November at noon: 30-day period, 16 days started, 14 remain.
    at = datetime(2026, 11, 16, 12, tzinfo=UTC)
    credits = credit_unused_fees(fees_offer(), ["express"], None, NOVEMBER, at)
    # 49 x 14/30 = 22.8666.. -> 22.87; 30 x 14/30 = 14.00
    assert [(l.kind, l.amount) for l in credits] == [("proration", D("-22.87")), ("proration", D("-14.00"))]
    assert credits[0].description == "Unused time on base (46.67% of the period)"
    assert (credits[0].period_start, credits[0].period_end) == (at, NOVEMBER.end)
    new_offer = make_offer({"code": "pro", "type": "flat", "amount": "99.00"})
    (charge,) = prorate_fees(new_offer, [], None, NOVEMBER, at)
    assert (charge.kind, charge.amount, charge.period_start) == ("fee", D("46.20"), at)
    # at the very start: the whole fee; at the end: nothing
    assert total(credit_unused_fees(fees_offer(), [], None, NOVEMBER, NOVEMBER.start)) == D("-49.00")
    assert total(credit_unused_fees(fees_offer(), [], None, NOVEMBER, NOVEMBER.end)) == 0


@given(
    st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2),
    st.lists(st.integers(min_value=1, max_value=29), max_size=10, unique=True),
    st.sampled_from(["EUR", "JPY", "KWD"]),
)
def test_prorated_parts_add_up_to_the_fee(amount, cuts, currency):
    # The billing unit: KWD's minor unit is 0.001, but it bills (and Stripe charges) multiples of 0.010.
    minor = billing_quantum(currency)
    amount = amount.quantize(minor)
    offer = make_offer({"code": "base", "type": "flat", "amount": str(amount)}, currency=currency)
    start, end = NOVEMBER.start, NOVEMBER.end
    points = [start] + [start + timedelta(days=d) for d in sorted(cuts)] + [end]
    parts = []
    for a, b in zip(points, points[1:]):
        fraction = proration_fraction(start, end, a) - proration_fraction(start, end, b)
        (line,) = rate_fees(offer, [], None, Period(a, b), fraction)
        parts.append(line.amount)
    assert abs(sum(parts) - amount) <= minor * len(parts)


# --- the boundary invoice, late usage


def api_offer():
    from tests.unit.test_catalog import API_EXAMPLE

    return parse_offer(API_EXAMPLE)


def test_rate_period_api_example():
    usage = {
        "montages": MeterUsage(D(412)),
        "calls": MeterUsage(D(1500)),
        "agent_hours": MeterUsage(D("7.5")),
        "parts_cost": MeterUsage(D("230.40")),
        "service_level": MeterUsage(D("2.79"), D("0.95"), D("0.93")),
        "tracings": MeterUsage(D(210)),
    }
    lines = rate_period(api_offer(), ["express"], {"montage": {"unit_amount": "1.05"}}, usage, NOVEMBER, DECEMBER)
    assert [(l.kind, l.component, l.amount) for l in lines] == [
        ("usage", "montage", D("432.60")),
        ("usage", "calls", D("500.00")),
        ("usage", "calls", D("160.00")),
        ("usage", "support", D("285.00")),
        ("usage", "support", D("264.96")),
        ("adjustment", "quality", D("33.00")),  # 5% of calls' 660.00
        ("fee", "base", D("49.00")),
        ("option", "express", D("30.00")),
    ]
    assert all(l.period_start == NOVEMBER.start for l in lines[:6])
    assert all(l.period_start == DECEMBER.start for l in lines[6:])
    assert total(lines) == D("1754.56")


def test_first_and_last_invoices():
    first = rate_period(api_offer(), [], None, {}, None, NOVEMBER)
    assert [l.kind for l in first] == ["fee"]
    last = rate_period(api_offer(), ["express"], None, {"calls": MeterUsage(D(10))}, NOVEMBER, None)
    assert {l.kind for l in last} == {"usage"}


def test_late_usage_is_the_difference_of_the_period():
    offer = api_offer()
    billed = {"calls": MeterUsage(D(1000)), "service_level": MeterUsage(D(1), D("0.93"), D("0.93"))}
    usage = {"calls": MeterUsage(D(1500)), "service_level": MeterUsage(D(1), D("0.93"), D("0.93"))}
    lines = rate_late_usage(offer, None, billed, usage, NOVEMBER)
    # calls: 900 billable = 450.00 -> 1400 billable = 660.00; bonus 22.50 -> 33.00
    assert [(l.kind, l.component, l.quantity, l.amount) for l in lines] == [
        ("usage", "calls", D(500), D("210.00")),
        ("adjustment", "quality", D(0), D("10.50")),
    ]
    assert lines[0].description == "calls: late usage for the period 2026-11-01 to 2026-12-01"
    assert lines[0].period_start == NOVEMBER.start
    assert rate_late_usage(offer, None, usage, usage, NOVEMBER) == []


# --- the machinery


def test_every_pricing_has_a_charge_model():
    assert set(CHARGE_MODELS) == {
        ("flat", None),
        ("metered", "per_unit"),
        ("metered", "package"),
        ("metered", "graduated"),
        ("metered", "volume"),
        ("time_and_materials", None),
        ("bonus_malus", None),
    }


def test_price_books_are_compiled_once():
    offer = api_offer()
    book = price_book(offer, {"montage": {"unit_amount": "1.05"}})
    assert price_book(offer, {"montage": {"unit_amount": "1.05"}}) is book
    assert price_book(offer, {"montage": {"unit_amount": "1.10"}}) is not book
    assert price_book(book) is book
    assert isinstance(book, PriceBook) and book.currency == "EUR"
    with pytest.raises(ValueError):
        price_book(book, {"montage": {"unit_amount": "1"}})
    with pytest.raises(ValueError):
        price_book(offer.terms)  # Terms alone need a currency
    terms_book = price_book(offer.terms, currency="JPY")
    assert terms_book.currency == "JPY"
    assert rate_fees(book, [], None, NOVEMBER)[0].amount == D("49.00")


def test_versions_rate_with_the_offer_currency():
    from chalicelib.domain.catalog import parse_offer_version

    version = parse_offer_version(
        {"effective_from": "2027-01-01T00:00:00Z", "components": [{"code": "base", "type": "flat", "amount": "59.00"}]}, "EUR"
    )
    assert rate_fees(version, [], None, DECEMBER, currency="EUR")[0].amount == D("59.00")


def test_invoice_line_is_frozen_and_serializes_to_api_strings():
    line = rate_usage(make_offer(metered(unit_amount="0.0042")), None, used(1000), NOVEMBER)[0]
    with pytest.raises(AttributeError):
        line.amount = D(0)
    assert line == InvoiceLine(**line._asdict()) and hash(line) == hash(line._replace())
    assert line != line._replace(amount=D("4.21"))
    assert InvoiceLine.from_dict(line.as_dict()) == line
    assert line.as_dict() == {
        "kind": "usage",
        "component": "m",
        "description": "m: 1000 units",
        "quantity": "1000",
        "unit_amount": "0.0042",
        "amount": "4.20",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        # What it bills, named for the invoice document.
        "offer_code": "offer",
        "offer_name": "Offer",
        "component_name": None,
        "unit": "unit",
    }


# --- properties

TIER_PRICES = st.decimals(min_value=D(0), max_value=D(100), places=4)
QUANTITIES = st.decimals(min_value=D(0), max_value=D(10**6), places=3)


@st.composite
def tier_lists(draw):
    bounds = sorted(draw(st.sets(st.integers(1, 10**5), max_size=5)))
    tiers = [
        {"up_to": str(b), "unit_amount": str(draw(TIER_PRICES)), "flat_amount": str(draw(TIER_PRICES.map(lambda d: d.quantize(D("0.01"))))) }
        for b in bounds
    ]
    tiers.append({"up_to": None, "unit_amount": str(draw(TIER_PRICES))})
    return tiers


@settings(max_examples=200)
@given(tier_lists(), QUANTITIES, QUANTITIES, st.decimals(min_value=D(0), max_value=D(1000), places=0))
def test_graduated_total_never_decreases_with_quantity(tiers, a, b, included):
    offer = make_offer(metered(tier_mode="graduated", tiers=tiers, included_units=str(included)))
    low, high = sorted((a, b))
    assert total(rate_usage(offer, None, used(low), NOVEMBER)) <= total(rate_usage(offer, None, used(high), NOVEMBER))


@given(TIER_PRICES, TIER_PRICES.map(lambda d: d.quantize(D("0.01"))), QUANTITIES)
def test_volume_equals_graduated_with_one_tier(unit, flat, quantity):
    tiers = [{"up_to": None, "unit_amount": str(unit), "flat_amount": str(flat)}]
    graduated = rate_usage(make_offer(metered(tier_mode="graduated", tiers=tiers)), None, used(quantity), NOVEMBER)
    volume = rate_usage(make_offer(metered(tier_mode="volume", tiers=tiers)), None, used(quantity), NOVEMBER)
    assert total(graduated) == total(volume)
    assert total(graduated) == (quantity * unit).quantize(D("0.01"), rounding="ROUND_HALF_UP") + (flat if quantity else 0)


@given(tier_lists(), QUANTITIES)
def test_volume_with_one_price_everywhere_equals_per_unit(tiers, quantity):
    for tier in tiers:
        tier["unit_amount"], tier["flat_amount"] = "0.37", "0"
    volume = rate_usage(make_offer(metered(tier_mode="volume", tiers=tiers)), None, used(quantity), NOVEMBER)
    per_unit = rate_usage(make_offer(metered(unit_amount="0.37")), None, used(quantity), NOVEMBER)
    assert total(volume) == total(per_unit)


USAGE = st.builds(
    MeterUsage,
    st.decimals(min_value=D(-10), max_value=D(10**5), places=4),
    st.none() | st.decimals(min_value=D(0), max_value=D(10**4), places=2),
    st.none() | st.decimals(min_value=D(0), max_value=D(2), places=3),
)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["montages", "calls", "agent_hours", "parts_cost", "service_level", "other"]), USAGE))
def test_rating_never_produces_a_float(usage):
    lines = rate_period(api_offer(), ["express"], {"montage": {"unit_amount": "1.05"}}, usage, NOVEMBER, DECEMBER)
    for line in lines:
        assert type(line.amount) is Decimal
        assert type(line.quantity) is Decimal
        assert line.unit_amount is None or type(line.unit_amount) is Decimal
        assert line.amount == line.amount.quantize(D("0.01"))  # rounded to the cent
        assert line.kind in ("fee", "option", "usage", "minimum", "proration", "adjustment", "credit")
