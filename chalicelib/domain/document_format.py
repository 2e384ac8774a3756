"""How documents write money, numbers and dates, in French or English
(invoices, credit notes, e-mails, the console): `1 234,56 €` and
`31/12/2026` in French, `€1,234.56` and `2026-12-31` in English.

Dates are written in the merchant's time zone: a monthly period of a Paris
merchant starts on the 1st at midnight in Paris, which is the 31st at 23:00
in UTC. A period is half-open (its end is the next one's start): the last
day it covers is the day before its end when it ends at midnight.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalicelib.domain.money import minor_units

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def language_of(locale: str | None) -> str:
    """fr for `fr` and `fr-XX`, en for everything else."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def format_money(amount: str | Decimal | None, currency: str, language: str) -> str:
    """`1 234,56 €` in French, `€1,234.56` in English (a code when there is no symbol)."""
    if amount is None:
        return ""
    value = Decimal(amount)
    decimals = minor_units(currency)
    text = f"{abs(value):,.{decimals}f}"
    symbol = _SYMBOLS.get(currency)
    sign = "-" if value < 0 else ""
    if language == "fr":
        text = text.replace(",", " ").replace(".", ",")
        return f"{sign}{text} {symbol or currency}"
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def format_number(value: str | Decimal | None, language: str) -> str:
    """A quantity or unit price as given, with the language's decimal mark."""
    if value is None:
        return ""
    text = str(value)
    return text.replace(".", ",") if language == "fr" else text


def local_date(iso: str, timezone: str) -> date:
    """The day an instant falls on in `timezone`."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(timezone or "UTC")).date()


def last_day(iso_end: str, timezone: str) -> date:
    """The last day a period ending at `iso_end` covers (its end excluded)."""
    moment = datetime.fromisoformat(iso_end.replace("Z", "+00:00")).astimezone(ZoneInfo(timezone or "UTC"))
    return (moment - timedelta(microseconds=1)).date()


def write_date(day: date, language: str) -> str:
    return day.strftime("%d/%m/%Y") if language == "fr" else day.isoformat()


def format_date(iso: str | None, timezone: str, language: str) -> str:
    if not iso:
        return ""
    return write_date(local_date(iso, timezone), language)


def format_period(start: str | None, end: str | None, timezone: str, language: str) -> str:
    """`du 01/12/2026 au 31/12/2026` / `2026-12-01 to 2026-12-31`: the days
    a period covers, both included."""
    if not start or not end:
        return ""
    first = local_date(start, timezone)
    last = max(last_day(end, timezone), first)
    if language == "fr":
        return f"du {write_date(first, language)} au {write_date(last, language)}"
    return f"{write_date(first, language)} to {write_date(last, language)}"
