"""A report's total in the merchant's currency, at the rates the merchant
supplies (`PATCH /merchant` `{"fx_rates": {"USD": "0.92"}}`).

Billing never converts: invoices, charges and the per-currency figures stay
in their own currency. Only the report's `total` converts, and it says how:
each currency with a rate is converted (the rate and the time it was set are
shown), a currency without one is listed under `not_converted` and left out
of the sums, never summed as if it were the merchant's money.
"""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from chalicelib.domain.money import ZERO, format_amount, round_money

# The money figures of a currency's report that add up across currencies.
SUMMED = ("mrr", "mrr_recurring", "mrr_usage", "arr", "invoiced", "collected", "outstanding", "usage_charges")


def converted_total(currencies: Mapping[str, Mapping], default_currency: str,
                    rates: Mapping[str, Mapping[str, str]]) -> dict:
    """The total of `currencies` (a report's figures per currency, amounts as
    decimal strings) in `default_currency`; `rates`: currency -> {"rate",
    "set_at"}, one unit of it in `default_currency`. Each sum is rounded once,
    at the end, to the default currency's minor unit."""
    sums = {name: ZERO for name in SUMMED}
    converted, not_converted, used = [], [], {}
    for code, figures in sorted(currencies.items()):
        if code == default_currency:
            factor = Decimal(1)
        elif code in rates:
            factor = Decimal(rates[code]["rate"])
            converted.append(code)
            used[code] = {"rate": rates[code]["rate"], "set_at": rates[code].get("set_at")}
        else:
            not_converted.append(code)
            continue
        for name in SUMMED:
            if figures.get(name) is not None:
                sums[name] += Decimal(figures[name]) * factor
    total = {"currency": default_currency}
    total.update({name: format_amount(round_money(value, default_currency), default_currency)
                  for name, value in sums.items()})
    total.update(converted=converted, not_converted=not_converted, rates=used)
    return total
