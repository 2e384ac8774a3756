"""A subscription's price overrides of its options (domain/price_overrides.py),
with plain numbers: an option granted free (`{"express": {"amount": "0.00"}}`)
or at a negotiated price is billed at that amount in advance, prorated on a
change and credited on a cancellation; what an option delivers cannot be
overridden; an override names a component first, else an option."""
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from chalicelib.domain import catalog
from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.invoicing import at_boundary, cancel_now, change_now, first_invoice, key
from chalicelib.domain.lifecycle import Plan
from chalicelib.domain.periods import Period
from chalicelib.domain.price_overrides import apply_option_overrides, apply_price_overrides, priced_terms
from chalicelib.domain.rating import credit_unused_fees, price_book, rate_fees
from tests.unit.invoicing_catalog import DAY_10, NOV, TERMS, account, amounts, usage_of, used

D = Decimal
UTC = timezone.utc
DECEMBER = Period(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
FREE_EXPRESS = {"express": {"amount": "0.00"}}


def shop_offer(currency="EUR", **extra):
    """49.00 a month, 1.20 a montage, an express option at 30.00 and a night line at 12.00."""
    return parse_offer({
        "code": "shop", "name": "Shop", "currency": currency, "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": "49.00" if currency != "JPY" else "4900"},
                       {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
        "options": [{"code": "express", "name": "4h on-site", "amount": "30.00" if currency != "JPY" else "3000",
                     "entitlements": ["4h_response"]},
                    {"code": "night", "name": "Night line", "amount": "12.00" if currency != "JPY" else "1200"}],
        **extra,
    })


def test_an_option_granted_free_is_billed_at_zero_with_its_name_and_the_others_at_their_price():
    lines = rate_fees(shop_offer(), ["express", "night"], FREE_EXPRESS, DECEMBER)
    assert [(l.kind, l.component, l.description, l.unit_amount, l.amount) for l in lines] == [
        ("fee", "base", "base", D("49.00"), D("49.00")),
        ("option", "express", "Option express: 4h on-site", D("0.00"), D("0.00")),
        ("option", "night", "Option night: Night line", D("12.00"), D("12.00")),
    ]
    # 49.00 + 0.00 + 12.00
    assert sum(l.amount for l in lines) == D("61.00")


def test_a_negotiated_option_price_is_billed_and_prorated_at_that_amount():
    offer = shop_offer()
    overrides = {"express": {"amount": "18.00"}, "montage": {"unit_amount": "1.05"}}
    lines = rate_fees(offer, ["express"], overrides, DECEMBER)
    assert [l.amount for l in lines] == [D("49.00"), D("18.00")]
    # A third of the period: 49 / 3 = 16.333 -> 16.33; 18 / 3 = 6.00
    assert [l.amount for l in rate_fees(offer, ["express"], overrides, DECEMBER, D(1) / D(3))] == [
        D("16.33"), D("6.00")]
    # Cancelled on 16 November at noon: 14 of 30 days unused; 18 x 14/30 = 8.40 credited
    at = datetime(2026, 11, 16, 12, tzinfo=UTC)
    november = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    credits = credit_unused_fees(offer, ["express"], overrides, november, at)
    assert [(l.component, l.amount) for l in credits] == [("base", D("-22.87")), ("express", D("-8.40"))]


def test_the_options_keep_their_code_name_and_entitlements():
    offer = shop_offer()
    express, night = apply_option_overrides("EUR", offer, FREE_EXPRESS)
    assert (express.code, express.name, express.amount, express.entitlements) == (
        "express", "4h on-site", D("0.00"), ["4h_response"])
    assert night is offer.options[1]
    # The components are untouched by an option's override, and the offer itself too.
    assert apply_price_overrides("EUR", offer, FREE_EXPRESS) == list(offer.components)
    assert offer.option("express").amount == D("30.00")
    assert priced_terms("EUR", offer, None) == (list(offer.components), list(offer.options))


def test_the_override_of_an_option_not_chosen_bills_nothing():
    lines = rate_fees(shop_offer(), [], FREE_EXPRESS, DECEMBER)
    assert amounts(lines) == [("fee", "base", D("49.00"))]


def test_a_compiled_price_book_is_not_shared_between_overrides():
    offer = shop_offer()
    assert price_book(offer, FREE_EXPRESS).options["express"].rounded == D("0.00")
    assert price_book(offer).options["express"].rounded == D("30.00")
    assert price_book(offer, {"express": {"amount": "5.50"}}).options["express"].rounded == D("5.50")


@pytest.mark.parametrize("overrides, param", [
    ({"express": {"amount": "-1"}}, "price_overrides.express.amount"),
    ({"express": {"amount": 0}}, "price_overrides.express.amount"),
    ({"express": {"amount": "0.001"}}, "price_overrides.express.amount"),  # EUR has 2 decimals
    ({"express": {"entitlements": []}}, "price_overrides.express.entitlements"),
    ({"express": {"name": "Free"}}, "price_overrides.express.name"),
    ({"express": {}}, "price_overrides.express"),
    ({"express": "0.00"}, "price_overrides.express"),
    ({"gold": {"amount": "0.00"}}, "price_overrides.gold"),
])
def test_an_override_an_option_cannot_take_is_refused_naming_the_field(overrides, param):
    with pytest.raises(InvalidRequest) as raised:
        apply_price_overrides("EUR", shop_offer(), overrides)
    assert raised.value.param == param, raised.value.message
    with pytest.raises(InvalidRequest):
        rate_fees(shop_offer(), ["express"], overrides, DECEMBER)


def test_unknown_codes_are_named_as_neither_component_nor_option():
    with pytest.raises(InvalidRequest) as raised:
        catalog.apply_price_overrides("EUR", shop_offer(), {"gold": {"amount": "1.00"}})
    assert raised.value.message == "price_overrides.gold: no component or option 'gold' in this offer"
    with pytest.raises(InvalidRequest) as raised:
        catalog.apply_price_overrides("EUR", shop_offer(), {"express": {"entitlements": []}})
    assert "an option's entitlements cannot be overridden (allowed: amount)" in raised.value.message


def test_a_currency_without_decimals_takes_whole_amounts_only():
    offer = shop_offer("JPY")
    assert rate_fees(offer, ["express"], {"express": {"amount": "1500"}}, DECEMBER)[1].amount == D("1500")
    with pytest.raises(InvalidRequest) as raised:
        rate_fees(offer, ["express"], {"express": {"amount": "1500.5"}}, DECEMBER)
    assert raised.value.param == "price_overrides.express.amount"


def test_a_code_naming_a_component_and_an_option_overrides_the_component():
    offer = parse_offer({
        "code": "twin", "name": "Twin", "currency": "EUR", "billing_interval": "month",
        "components": [{"code": "express", "type": "flat", "amount": "10.00"}],
        "options": [{"code": "express", "name": "Express", "amount": "30.00"}],
    })
    lines = rate_fees(offer, ["express"], {"express": {"amount": "0.00"}}, DECEMBER)
    assert amounts(lines) == [("fee", "express", D("0.00")), ("option", "express", D("30.00"))]


# --- the invoice rule with an option granted free -------------------------------
# tests/unit/invoicing_catalog.py: basic is 49.00 a month with express at 30.00;
# November has 30 days, DAY_10 leaves 20 whole days.

FREE_PLAN = Plan("off_basic", ("express",), FREE_EXPRESS)


def test_the_first_invoice_bills_the_free_option_at_zero():
    draft = first_invoice(FREE_PLAN, NOV, TERMS)
    assert amounts(draft.lines) == [("fee", "base", D("49.00")), ("option", "express", D("0.00"))]


def test_granting_the_option_free_mid_period_credits_its_unused_part():
    draft = change_now(account(fees_billed=True), usage_of((NOV, used(montages=0))), TERMS, DAY_10, FREE_PLAN)
    fees = [line for line in amounts(draft.lines) if line[0] != "usage"]
    assert fees == [
        ("proration", "base", D("-32.67")),     # 49 x 20/30
        ("proration", "express", D("-20.00")),  # 30 x 20/30
        ("fee", "base", D("32.67")),
        ("option", "express", D("0.00")),       # the rest of the period, free
    ]
    assert sum(amount for _, _, amount in fees) == D("-20.00")


def test_the_next_boundary_and_a_cancellation_bill_the_option_at_zero():
    free = account(plan=FREE_PLAN, fees_billed=True)
    draft = at_boundary(free, {}, usage_of((NOV, used(montages=10))), TERMS)
    assert [line for line in amounts(draft.lines) if line[0] in ("fee", "option")] == [
        ("fee", "base", D("49.00")), ("option", "express", D("0.00"))]
    canceled = cancel_now(free, {key(NOV.start): used()}, TERMS, DAY_10)
    assert [line for line in amounts(canceled.lines) if line[0] == "proration"] == [
        ("proration", "base", D("-32.67")), ("proration", "express", D("0.00"))]
