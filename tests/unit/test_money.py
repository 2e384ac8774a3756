"""Money: currencies from ISO 4217, strict decimal strings, half-up rounding."""
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import (
    decimal_from_text,
    format_amount,
    format_decimal,
    from_minor,
    is_known_currency,
    minor_units,
    parse_amount,
    require_same_currency,
    round_money,
    to_minor,
)


@pytest.mark.parametrize(
    "currency, units",
    [("EUR", 2), ("USD", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3), ("TND", 3), ("CLF", 4)],
)
def test_minor_units_come_from_iso_4217(currency, units):
    assert minor_units(currency) == units
    assert is_known_currency(currency)


@pytest.mark.parametrize("code", ["XAU", "XTS", "XXX", "XDR", "eur", "EURO", "", None, 978, "ZZZ"])
def test_codes_without_minor_unit_or_malformed_are_unknown(code):
    assert not is_known_currency(code)


def test_unknown_currency_is_a_400_on_currency():
    with pytest.raises(InvalidRequest) as raised:
        minor_units("XAU")
    assert raised.value.param == "currency"
    assert raised.value.status == 400


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12.50", Decimal("12.50")),
        ("0", Decimal("0")),
        ("0.0042", Decimal("0.0042")),
        ("0.000000000001", Decimal("0.000000000001")),
        ("007", Decimal("7")),
        ("999999999999999.99", Decimal("999999999999999.99")),
    ],
)
def test_parse_amount_accepts_plain_decimal_strings(text, expected):
    value = parse_amount(text, param="amount")
    assert value == expected
    assert isinstance(value, Decimal)
    assert str(value) == str(expected)


@pytest.mark.parametrize(
    "value",
    [
        12.5,  # a JSON number: never a float
        12,
        True,
        None,
        "NaN",
        "Infinity",
        "-Infinity",
        "1e3",
        "1E+999999",
        "12,50",
        " 12.50",
        "12.50 ",
        "+1",
        ".5",
        "5.",
        "",
        "0x10",
        "1_000",
        "0.0000000000001",  # 13 decimals
        "1000000000000000",  # 16 integer digits
        "-1",
    ],
)
def test_parse_amount_refuses_everything_else_naming_the_param(value):
    with pytest.raises(InvalidRequest) as raised:
        parse_amount(value, param="components[0].amount")
    assert raised.value.param == "components[0].amount"
    assert raised.value.code == "invalid_request"
    assert "components[0].amount" in raised.value.message


def test_parse_amount_options():
    assert parse_amount("-3.5", param="quantity", allow_negative=True) == Decimal("-3.5")
    with pytest.raises(InvalidRequest):
        parse_amount("1.234", param="amount", max_decimals=2)
    assert parse_amount("1.23", param="amount", max_decimals=2) == Decimal("1.23")


def test_negative_zero_parses_as_zero():
    assert str(decimal_from_text("-0.00", allow_negative=True)) == "0.00"


def test_a_decimal_from_python_code_is_accepted_but_not_nan():
    assert decimal_from_text(Decimal("1.5")) == Decimal("1.5")
    with pytest.raises(ValueError):
        decimal_from_text(Decimal("NaN"))
    with pytest.raises(ValueError):
        decimal_from_text(Decimal("Infinity"))


@pytest.mark.parametrize(
    "amount, currency, expected",
    [
        ("0.125", "EUR", "0.13"),  # half up, not half even
        ("0.135", "EUR", "0.14"),
        ("0.124999", "EUR", "0.12"),
        ("-0.125", "EUR", "-0.13"),  # half away from zero
        ("1249.5", "JPY", "1250"),
        ("1250.4", "JPY", "1250"),
        ("1.2345", "KWD", "1.235"),
        ("-0.001", "EUR", "0.00"),  # never "-0.00"
        ("12.5", "EUR", "12.50"),
    ],
)
def test_round_money_half_up_to_the_minor_unit(amount, currency, expected):
    assert str(round_money(Decimal(amount), currency)) == expected


def test_minor_units_for_stripe_and_back():
    assert to_minor(Decimal("12.50"), "EUR") == 1250
    assert to_minor(Decimal("12.505"), "EUR") == 1251
    assert to_minor(Decimal("1250"), "JPY") == 1250
    assert to_minor(Decimal("1.250"), "KWD") == 1250
    assert to_minor(Decimal("-3.10"), "EUR") == -310
    assert from_minor(1250, "EUR") == Decimal("12.50")
    assert str(from_minor(1250, "EUR")) == "12.50"
    assert str(from_minor(1250, "JPY")) == "1250"
    assert str(from_minor(1250, "KWD")) == "1.250"
    with pytest.raises(TypeError):
        from_minor(12.5, "EUR")


@given(st.integers(min_value=-10**12, max_value=10**12), st.sampled_from(["EUR", "JPY", "KWD", "CLF"]))
def test_to_minor_inverts_from_minor(minor, currency):
    assert to_minor(from_minor(minor, currency), currency) == minor


def test_format_amount_is_the_api_string():
    assert format_amount(Decimal("12.5"), "EUR") == "12.50"
    assert format_amount(Decimal("1250"), "JPY") == "1250"
    assert format_amount(Decimal("1E+3"), "EUR") == "1000.00"
    assert format_amount(Decimal("-0"), "EUR") == "0.00"
    assert format_amount(Decimal("0.5"), "JPY") == "1"


def test_format_decimal_keeps_precision_in_plain_notation():
    assert format_decimal(Decimal("0.0042")) == "0.0042"
    assert format_decimal(Decimal("1.20")) == "1.20"
    assert format_decimal(Decimal("1E+3")) == "1000"
    assert format_decimal(Decimal("-0")) == "0"


def test_currencies_are_never_mixed():
    require_same_currency("EUR", "EUR")
    with pytest.raises(InvalidRequest) as raised:
        require_same_currency("EUR", "USD", param="usage.currency")
    assert raised.value.param == "usage.currency"
    assert "never converted" in raised.value.message
