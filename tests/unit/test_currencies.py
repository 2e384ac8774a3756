"""Currencies: ISO 4217's minor units with Stripe's rules, one table; what
Stripe is sent (payments.stripe_amount) is an integer it accepts, and an
invoice is rounded once, by the invoice rule, never again to be charged."""
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.invoices import totals
from chalicelib.domain.money import CURRENCIES, billing_quantum, format_amount, minor_units, round_billed
from chalicelib.domain.periods import Period
from chalicelib.domain.rating import MeterUsage, rate_fees, rate_usage
from chalicelib.payments import amount_from_stripe, stripe_amount

NOVEMBER = Period(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))

# Stripe's lists (docs.stripe.com/currencies).
ZERO_DECIMAL = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
THREE_DECIMAL = "BHD JOD KWD OMR TND".split()


@pytest.mark.parametrize("code", ZERO_DECIMAL)
def test_stripe_zero_decimal_currencies_are_sent_in_major_units(code):
    rule = CURRENCIES[code]
    assert (rule.stripe_exponent, rule.stripe_step, rule.quantum) == (0, 1, D(1))
    assert stripe_amount(D("1250"), code) == 1250


def test_mga_is_two_decimal_in_iso_but_charged_in_whole_ariary():
    assert minor_units("MGA") == 2
    assert billing_quantum("MGA") == D(1)
    assert format_amount(round_billed(D("1249.50"), "MGA"), "MGA") == "1250.00"
    assert stripe_amount(D("1250.00"), "MGA") == 1250
    with pytest.raises(ValueError):
        stripe_amount(D("1250.50"), "MGA")


@pytest.mark.parametrize("code", THREE_DECIMAL)
def test_three_decimal_currencies_end_in_zero_at_stripe(code):
    assert minor_units(code) == 3
    assert billing_quantum(code) == D("0.01")
    assert str(round_billed(D("5.124"), code)) == "5.120"
    assert str(round_billed(D("5.125"), code)) == "5.130"  # half up, once
    assert stripe_amount(D("5.120"), code) == 5120
    with pytest.raises(ValueError):  # never rounded a second time
        stripe_amount(D("5.124"), code)


def test_isk_is_whole_kronur_sent_with_two_decimals():
    assert minor_units("ISK") == 0
    assert billing_quantum("ISK") == D(1)
    assert stripe_amount(D("5"), "ISK") == 500
    assert amount_from_stripe(500, "ISK") == D("5")
    assert str(round_billed(D("4.5"), "ISK")) == "5"


@pytest.mark.parametrize("code", ["HUF", "TWD"])
def test_huf_and_twd_charge_with_two_decimals(code):
    # Only their payouts are whole units: charges keep the minor unit.
    assert billing_quantum(code) == D("0.01")
    assert stripe_amount(D("10.45"), code) == 1045


@pytest.mark.parametrize("code, amount, minor", [("EUR", "12.50", 1250), ("USD", "0.01", 1), ("GBP", "3", 300)])
def test_two_decimal_currencies_are_cents(code, amount, minor):
    assert stripe_amount(D(amount), code) == minor
    assert amount_from_stripe(minor, code) == D(amount)


def test_stripe_amount_refuses_what_an_invoice_never_holds():
    with pytest.raises(ValueError):
        stripe_amount(D("12.505"), "EUR")
    with pytest.raises(InvalidRequest):
        stripe_amount(D("1"), "XAU")
    with pytest.raises(TypeError):
        amount_from_stripe(12.5, "EUR")


def test_a_flat_price_stripe_could_not_charge_is_a_400_naming_it():
    body = {"code": "o", "name": "O", "currency": "KWD", "billing_interval": "month",
            "components": [{"code": "base", "type": "flat", "amount": "4.125"}]}
    with pytest.raises(InvalidRequest) as raised:
        parse_offer(body)
    assert raised.value.param == "components[0].amount"
    body["components"][0]["amount"] = "4.120"
    assert parse_offer(body).components[0].amount == D("4.120")


def test_the_eur_quantum_and_rounding_are_unchanged():
    for code in ("EUR", "USD", "JPY", "KRW", "CHF"):
        assert billing_quantum(code) == D(1).scaleb(-minor_units(code))
    assert str(round_billed(D("0.125"), "EUR")) == "0.13"
    assert str(round_billed(D("-0.001"), "EUR")) == "0.00"


# --- the property: whatever the prices, quantities and tax, the amount due
# goes to Stripe as an integer it accepts, equal to the invoice's own amount.

CURRENCY_SAMPLE = ["EUR", "USD", "JPY", "KRW", "VND", "CLP", "XOF", "MGA", "KWD", "BHD", "JOD", "OMR", "TND",
                   "ISK", "HUF", "TWD", "UGX", "GBP"]


@st.composite
def invoices(draw):
    code = draw(st.sampled_from(CURRENCY_SAMPLE))
    quantum = billing_quantum(code)
    flat = (draw(st.integers(min_value=0, max_value=10**6)) * quantum)
    unit = draw(st.decimals(min_value=D(0), max_value=D(100), places=6, allow_nan=False))
    quantity = draw(st.decimals(min_value=D(0), max_value=D(100000), places=2, allow_nan=False))
    rate = draw(st.sampled_from([None, D("0"), D("5.5"), D("19.6"), D("20.0"), D("8.25")]))
    credit = draw(st.integers(min_value=0, max_value=1000)) * quantum
    fraction = draw(st.sampled_from([D(1), D(17) / D(30), D(1) / D(3)]))
    offer = parse_offer({
        "code": "o", "name": "O", "currency": code, "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": format(flat.normalize(), "f")},
                       {"code": "m", "type": "metered", "meter": "m", "unit_amount": format(unit, "f")}],
    })
    return code, offer, quantity, rate, credit, fraction


@settings(max_examples=300, deadline=None)
@given(invoices())
def test_every_amount_sent_to_stripe_is_an_integer_it_takes_and_rounded_once(case):
    code, offer, quantity, rate, credit, fraction = case
    lines = rate_fees(offer, [], None, NOVEMBER, fraction) + rate_usage(
        offer, None, {"m": MeterUsage(total=quantity, maximum=quantity, last=quantity)}, NOVEMBER)
    money = totals(lines, code, rate, False, credit)
    rule = CURRENCIES[code]
    for amount in [line.amount for line in lines] + [money.subtotal, money.tax_amount, money.total, money.amount_due]:
        # every invoice amount is already a whole number of billing quanta...
        assert round_billed(amount, code) == amount
    # ...so the invoice adds up with no second rounding,
    assert money.subtotal == sum((line.amount for line in lines), D(0))
    assert money.total == money.subtotal + money.tax_amount
    # and Stripe gets exactly the amount due, an integer of its minor unit.
    if money.amount_due > 0:
        sent = stripe_amount(money.amount_due, code)
        assert isinstance(sent, int) and sent > 0
        assert sent % rule.stripe_step == 0
        assert amount_from_stripe(sent, code) == money.amount_due
