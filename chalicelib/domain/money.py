"""Amounts of money: `Decimal` in major units, an ISO 4217 currency beside them.

API.md: amounts travel as decimal strings ("12.50"), unit prices may carry up
to 12 decimals, every invoice amount is rounded to the currency's minor unit
with ROUND_HALF_UP, never a binary float. Currencies are never converted:
mixing two is an error.

Precision: Python's default decimal context keeps 28 significant digits.
Amounts are bounded to 15 integer digits and 12 decimals (27 digits), so a
parsed amount is exact; a product such as quantity x unit price may be
rounded at the 28th digit, far below the minor unit of any invoice total the
bounds allow.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import iso4217

from chalicelib.domain.errors import InvalidRequest

MAX_UNIT_DECIMALS = 12
MAX_INTEGER_DIGITS = 15
# The longest decimal string read: sign, 15 digits, point, 12 decimals and a
# few leading zeros. A bound on the text itself, checked before any parsing.
MAX_DECIMAL_TEXT = 32

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


def _minor_units_table() -> dict[str, int]:
    # From ISO 4217's own table (the iso4217 package's data), not a hand-typed
    # list. Codes whose minor unit is "N.A." (gold XAU, SDR XDR, test XTS...)
    # are not money a merchant bills in: they are unknown here.
    table = {}
    for code, entry in iso4217.raw_table.items():
        units = entry.get("CcyMnrUnts") or ""
        if code and units.isdigit():
            table[code] = int(units)
    return table


_MINOR_UNITS = _minor_units_table()
_QUANTUM = {code: Decimal(1).scaleb(-units) for code, units in _MINOR_UNITS.items()}


# How Stripe reads an amount (docs.stripe.com/currencies, "Minor units in API
# amounts" and "Special cases"), for the codes where it is not simply ISO
# 4217's minor unit: the power of ten of Stripe's integer, and the step that
# integer must be a multiple of.
# - zero-decimal: the integer is the amount in major units (MGA included,
#   which ISO 4217 gives two decimals);
# - three-decimal: thousandths, but the last digit must be 0 (5.124 KWD is
#   refused; 5.120 is 5120);
# - ISK: zero-decimal in effect, yet still two decimals in the API: 5 ISK is
#   500, and the integer must be a multiple of 100.
# HUF and TWD stay two-decimal for charges (only their payouts are whole
# units), so they follow ISO 4217. Any other code: ISO 4217's minor unit, step 1.
_STRIPE_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
_STRIPE_THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
_STRIPE_SPECIAL = {"ISK": (2, 100)}


@dataclass(frozen=True, slots=True)
class CurrencyRule:
    """One currency's amounts: `decimals` as ISO 4217 writes them (EUR 2,
    JPY 0, KWD 3); `stripe_exponent` and `stripe_step`: Stripe's integer is
    the amount x 10**stripe_exponent, a multiple of stripe_step; `quantum`:
    the smallest amount an invoice bills, the coarser of the two (KWD 0.01,
    ISK 1, MGA 1, EUR 0.01)."""

    code: str
    decimals: int
    stripe_exponent: int
    stripe_step: int
    quantum: Decimal


def _rule(code: str, decimals: int) -> CurrencyRule:
    if code in _STRIPE_ZERO_DECIMAL:
        exponent, step = 0, 1
    elif code in _STRIPE_THREE_DECIMAL:
        exponent, step = 3, 10
    else:
        exponent, step = _STRIPE_SPECIAL.get(code, (decimals, 1))
    quantum = max(Decimal(step).scaleb(-exponent), Decimal(1).scaleb(-decimals)).normalize()
    return CurrencyRule(code, decimals, exponent, step, quantum)


# The one table of currencies: ISO 4217's minor units with Stripe's rules.
CURRENCIES: dict[str, CurrencyRule] = {code: _rule(code, units) for code, units in _MINOR_UNITS.items()}
# The codes whose invoices bill in a coarser unit than ISO 4217's minor unit.
_COARSE = {code: rule for code, rule in CURRENCIES.items() if rule.quantum != _QUANTUM[code]}

_DECIMAL_TEXT = re.compile(r"-?(\d+)(?:\.(\d+))?")


def is_known_currency(code: object) -> bool:
    """True for an upper-case ISO 4217 code with a minor unit ("EUR", "JPY", "KWD")."""
    return isinstance(code, str) and code in _MINOR_UNITS


def minor_units(currency: str) -> int:
    """Decimals of the currency's minor unit: EUR 2, JPY 0, KWD 3."""
    try:
        return _MINOR_UNITS[currency]
    except (KeyError, TypeError):
        raise InvalidRequest(f"unknown currency {currency!r}", param="currency") from None


def decimal_from_text(text: object, *, max_decimals: int = MAX_UNIT_DECIMALS, allow_negative: bool = False) -> Decimal:
    """A decimal string as a `Decimal`, or ValueError saying what is wrong.

    Only plain notation is accepted ("12.50", "0.0042", "-3" when negatives
    are allowed): no float, no exponent ("1e3"), no NaN or Infinity, no
    spaces, at most `max_decimals` decimals and MAX_INTEGER_DIGITS integer
    digits. The caller that knows the field wraps the ValueError
    (`parse_amount`, the catalog's pydantic types)."""
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise ValueError("must be a finite decimal number")
        text = format(text, "f")
    elif not isinstance(text, str):
        raise ValueError('must be a decimal string such as "12.50", not a JSON number')
    if len(text) > MAX_DECIMAL_TEXT:
        raise ValueError(f"must be at most {MAX_DECIMAL_TEXT} characters")
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None:
        raise ValueError('must be a decimal string such as "12.50"')
    integer, decimals = match.group(1), match.group(2) or ""
    if len(integer.lstrip("0")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"must have at most {MAX_INTEGER_DIGITS} digits before the decimal point")
    if len(decimals) > max_decimals:
        raise ValueError(f"must have at most {max_decimals} decimals")
    value = Decimal(text)
    if value < 0 and not allow_negative:
        raise ValueError("must not be negative")
    if value == 0:
        value = value.copy_abs()
    return value


def parse_amount(text: object, *, param: str, max_decimals: int = MAX_UNIT_DECIMALS, allow_negative: bool = False) -> Decimal:
    """A decimal string from a request as a `Decimal`; InvalidRequest naming `param` otherwise."""
    try:
        return decimal_from_text(text, max_decimals=max_decimals, allow_negative=allow_negative)
    except ValueError as error:
        raise InvalidRequest(f"{param}: {error}", param=param) from None


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded to the currency's minor unit, half up (API.md), never "-0.00"."""
    try:
        quantum = _QUANTUM[currency]
    except (KeyError, TypeError):
        raise InvalidRequest(f"unknown currency {currency!r}", param="currency") from None
    rounded = amount.quantize(quantum, rounding=ROUND_HALF_UP)
    return rounded if rounded else rounded.copy_abs()


def currency_rule(currency: str) -> CurrencyRule:
    """The currency's row of the table; InvalidRequest on `currency` when unknown."""
    try:
        return CURRENCIES[currency]
    except (KeyError, TypeError):
        raise InvalidRequest(f"unknown currency {currency!r}", param="currency") from None


def billing_quantum(currency: str) -> Decimal:
    """The smallest amount an invoice bills: the minor unit, or the coarser
    unit Stripe charges in (KWD 0.01, ISK 1, MGA 1)."""
    return currency_rule(currency).quantum


def round_billed(amount: Decimal, currency: str) -> Decimal:
    """An invoice amount: half up to the billing quantum, written with the
    currency's ISO decimals (KWD 5.1249 -> 5.120), never "-0.00". The same as
    `round_money` for every currency Stripe charges in its minor unit (EUR, JPY...)."""
    coarse = _COARSE.get(currency)
    if coarse is None:
        return round_money(amount, currency)
    rounded = amount.quantize(coarse.quantum, rounding=ROUND_HALF_UP).quantize(_QUANTUM[currency])
    return rounded if rounded else rounded.copy_abs()


def is_billed_amount(amount: Decimal, currency: str) -> bool:
    """True when `amount` is a whole number of billing quanta (an amount an invoice can hold)."""
    return round_billed(amount, currency) == amount


def to_minor(amount: Decimal, currency: str) -> int:
    """Integer ISO 4217 minor units: EUR 12.50 -> 1250, JPY 1250 -> 1250,
    KWD 1.250 -> 1250. What Stripe is sent is `payments.stripe_amount`, by
    Stripe's rules (the table above), which differ for ISK and MGA."""
    return int(round_money(amount, currency).scaleb(minor_units(currency)))


def from_minor(minor: int, currency: str) -> Decimal:
    """The inverse of `to_minor`: 1250 EUR cents -> Decimal("12.50")."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("minor units are an int")
    return round_money(Decimal(minor).scaleb(-minor_units(currency)), currency)


def format_amount(amount: Decimal, currency: str) -> str:
    """The API's string for an invoice amount: "12.50" (EUR), "1250" (JPY), "1.250" (KWD)."""
    return format(round_money(amount, currency), "f")


def format_decimal(value: Decimal) -> str:
    """A quantity or unit price as the API writes it: plain notation, as precise
    as given ("0.0042", "412", "7.5"), never "1E+3"."""
    text = format(value, "f")
    return text[1:] if text.startswith("-") and not value else text


def require_same_currency(expected: str, actual: str, *, param: str = "currency") -> None:
    """Refuse to mix currencies: billing never converts, the caller must say which."""
    if expected != actual:
        raise InvalidRequest(
            f"{param}: {actual} does not match {expected}; amounts are never converted between currencies",
            param=param,
        )
