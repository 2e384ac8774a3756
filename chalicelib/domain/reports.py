"""Reports: what each fact adds to a merchant's monthly figures, and the
figures of a month read back from those sums. Pure: no I/O, no clock.

A fact (an invoice, a subscription, a usage event, a device's usage) is
summarised by its *contribution*: the amounts it puts in the monthly
aggregates as it stands now. When a record changes, the change of the
figures is the new contribution minus the old one (`delta`), so the
aggregates only ever need additions, whatever order or way a record moved
(open -> paid, open -> void, active -> canceled ...).

Two kinds of figures:
- flows, counted in the month the fact happened (merchant's time zone):
  `invoiced`, `usage_charges`, `collected`, `new`, `churned`, usage per
  meter (`usage#<meter>`);
- stocks, true at an instant (`recurring`: recurring fees normalized to a
  month, `active`: live subscriptions, `outstanding`: what open invoices
  still ask for). A stock is kept as its value now (`stock#<currency>`) and
  as its change per month (`<name>_delta` in the month's item); its value at
  the end of month M is the value now minus the changes of the months after
  M, so a past month is answered from the few month items after it.
"""
from __future__ import annotations

import calendar
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import ZERO, format_amount, round_money

STOCKS = ("recurring", "active", "outstanding")
# Line kinds charged in arrears for what was used: the usage part of MRR.
USAGE_LINE_KINDS = ("usage", "minimum", "adjustment")
# A subscription counts as live (in MRR and active_subscriptions) in these
# states, unless paused (no fees while paused).
LIVE_STATUSES = ("active", "past_due")
# Exact enough for any currency and unit price (API.md allows 12 decimals),
# and deterministic: an old contribution subtracts exactly what it added.
QUANTUM = Decimal("1e-12")
MONTHS_OF_USAGE_IN_MRR = 3
CHURN_RATE_QUANTUM = Decimal("0.0001")

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Key of one aggregate (its sort key in the merchant's report partition) and
# of one figure in it.
Figures = dict[tuple[str, str], Decimal]


def month_sk(month: str, currency: str) -> str:
    return f"month#{month}#{currency}"


def stock_sk(currency: str) -> str:
    return f"stock#{currency}"


# ---------------------------------------------------------------------------
# Calendar


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def month_of(instant: datetime | str, tz: str | None) -> str:
    """The merchant's month (`YYYY-MM`) of an instant: a period that starts at
    local midnight on the 1st belongs to that month, not the one before."""
    if isinstance(instant, str):
        instant = parse_instant(instant)
    return instant.astimezone(zone(tz)).strftime("%Y-%m")


def day_of(instant: datetime | str, tz: str | None) -> str:
    if isinstance(instant, str):
        instant = parse_instant(instant)
    return instant.astimezone(zone(tz)).strftime("%Y-%m-%d")


def parse_month(text: str | None, param: str = "month") -> str:
    if not isinstance(text, str) or not MONTH.match(text):
        raise InvalidRequest(f"{param}: a month as YYYY-MM (e.g. 2026-10)", param=param)
    return text


def parse_day(text: str | None, param: str) -> str:
    """A day `YYYY-MM-DD`, or a month `YYYY-MM` (its first day)."""
    if isinstance(text, str) and MONTH.match(text):
        return f"{text}-01"
    if not isinstance(text, str) or not DAY.match(text):
        raise InvalidRequest(f"{param}: a day as YYYY-MM-DD (or a month as YYYY-MM)", param=param)
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise InvalidRequest(f"{param}: {text} is not a day of the calendar", param=param) from None
    return text


def add_months(month: str, count: int) -> str:
    year, number = int(month[:4]), int(month[5:7])
    index = year * 12 + number - 1 + count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_bounds(month: str, tz: str | None) -> tuple[datetime, datetime]:
    """[start, end) of the merchant's month, as UTC instants."""
    year, number = int(month[:4]), int(month[5:7])
    local = zone(tz)
    start = datetime(year, number, 1, tzinfo=local)
    days = calendar.monthrange(year, number)[1]
    end = (start.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=local)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


# ---------------------------------------------------------------------------
# Contributions


def exact(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM)


def monthly_amount(fee_per_period: Decimal, unit: str, count: int) -> Decimal:
    """A recurring fee normalized to a month: a yearly fee / 12, a quarterly
    (3 months) fee / 3, a weekly fee x 52 / 12, a daily fee x 365 / 12."""
    per_month = {
        "month": Decimal(1),
        "year": Decimal(12),
        "week": Decimal(12) / Decimal(52),
        "day": Decimal(12) / Decimal(365),
    }[unit]
    return exact(fee_per_period / (per_month * count))


@dataclass(frozen=True)
class InvoiceFacts:
    """What of an invoice the reports read (amounts are decimal strings)."""

    status: str
    currency: str
    timezone: str | None
    finalized_at: str | None
    paid_at: str | None
    total: str
    amount_paid: str
    amount_due: str
    lines: tuple[dict, ...]


def invoice_contribution(invoice: InvoiceFacts | None) -> Figures:
    """An issued invoice (open, paid, uncollectible) is invoiced in the month
    it was finalized, its usage lines are that month's usage charges; a paid
    invoice is collected in the month it was paid; an open one is
    outstanding. A void invoice contributes nothing (voiding takes it back
    out of its month); a draft is not issued yet."""
    figures: Figures = {}
    if invoice is None or invoice.status == "draft":
        return figures
    currency, tz = invoice.currency, invoice.timezone
    if invoice.status in ("open", "paid", "uncollectible") and invoice.finalized_at:
        sk = month_sk(month_of(invoice.finalized_at, tz), currency)
        _add(figures, sk, "invoiced", Decimal(invoice.total))
        usage = sum((Decimal(line["amount"]) for line in invoice.lines if line["kind"] in USAGE_LINE_KINDS), ZERO)
        _add(figures, sk, "usage_charges", usage)
    if invoice.status == "paid" and invoice.paid_at:
        _add(figures, month_sk(month_of(invoice.paid_at, tz), currency), "collected", Decimal(invoice.amount_paid))
    if invoice.status == "open":
        _add(figures, stock_sk(currency), "outstanding", Decimal(invoice.amount_due))
    return figures


@dataclass(frozen=True)
class SubscriptionFacts:
    status: str
    paused: bool
    currency: str
    timezone: str | None
    created_at: str
    canceled_at: str | None
    # The recurring fees of its current period normalized to a month.
    recurring_per_month: Decimal


def is_live(subscription: SubscriptionFacts) -> bool:
    return subscription.status in LIVE_STATUSES and not subscription.paused


def subscription_contribution(subscription: SubscriptionFacts | None) -> Figures:
    """New in the month it was created; churned in the month it was canceled;
    while live, one active subscription and its recurring fees per month."""
    figures: Figures = {}
    if subscription is None:
        return figures
    currency, tz = subscription.currency, subscription.timezone
    _add(figures, month_sk(month_of(subscription.created_at, tz), currency), "new", Decimal(1))
    if subscription.status == "canceled" and subscription.canceled_at:
        _add(figures, month_sk(month_of(subscription.canceled_at, tz), currency), "churned", Decimal(1))
    if is_live(subscription):
        _add(figures, stock_sk(currency), "active", Decimal(1))
        _add(figures, stock_sk(currency), "recurring", exact(subscription.recurring_per_month))
    return figures


def usage_contribution(currency: str, month: str, meter: str, quantity: Decimal) -> Figures:
    figures: Figures = {}
    _add(figures, month_sk(month, currency), f"usage#{meter}", quantity)
    return figures


def delta(before: Figures, after: Figures, month_of_change: str) -> Figures:
    """What a change adds to the aggregates: after - before, and each change
    of a stock also recorded as that stock's change in the month it happened."""
    changes: Figures = {}
    for key in set(before) | set(after):
        change = after.get(key, ZERO) - before.get(key, ZERO)
        if not change:
            continue
        changes[key] = changes.get(key, ZERO) + change
        sk, name = key
        if sk.startswith("stock#"):
            currency = sk[len("stock#"):]
            month_key = (month_sk(month_of_change, currency), f"{name}_delta")
            changes[month_key] = changes.get(month_key, ZERO) + change
    return {key: value for key, value in changes.items() if value}


def _add(figures: Figures, sk: str, name: str, value: Decimal) -> None:
    if value:
        figures[(sk, name)] = figures.get((sk, name), ZERO) + value


# ---------------------------------------------------------------------------
# The summary of a month


def summarize(month: str, aggregates: Mapping[str, Mapping[str, Decimal]]) -> dict:
    """API.md's report of `month` from the aggregate items (sort key ->
    figures) of the months from `month` - 2 on and the stocks now.

    MRR = recurring fees normalized to a month (at the month's end) plus the
    average usage charges of the month and the two before it; ARR = 12 x
    MRR; churn rate = churned in the month / active at its start."""
    months = defaultdict(dict)
    stocks: dict[str, Mapping[str, Decimal]] = {}
    for sk, figures in aggregates.items():
        if sk.startswith("stock#"):
            stocks[sk[len("stock#"):]] = figures
        elif sk.startswith("month#"):
            _, item_month, currency = sk.split("#", 2)
            months[currency][item_month] = figures
    currencies = {}
    for currency in sorted(set(stocks) | set(months)):
        by_month = months.get(currency, {})
        now = stocks.get(currency, {})
        later = [figures for item_month, figures in by_month.items() if item_month > month]
        this = by_month.get(month, {})

        def at_end(name: str) -> Decimal:
            return _get(now, name) - sum((_get(f, f"{name}_delta") for f in later), ZERO)

        recurring = at_end("recurring")
        active = at_end("active")
        active_at_start = active - _get(this, "active_delta")
        window = [add_months(month, -k) for k in range(MONTHS_OF_USAGE_IN_MRR)]
        usage_average = sum((_get(by_month.get(m, {}), "usage_charges") for m in window), ZERO) / MONTHS_OF_USAGE_IN_MRR
        if month not in by_month and not (recurring or active or at_end("outstanding") or usage_average):
            continue  # nothing of this currency was true or happened in the month
        mrr_recurring = round_money(recurring, currency)
        mrr_usage = round_money(usage_average, currency)
        mrr = mrr_recurring + mrr_usage
        churned = _get(this, "churned")
        currencies[currency] = {
            "mrr": format_amount(mrr, currency),
            "mrr_recurring": format_amount(mrr_recurring, currency),
            "mrr_usage": format_amount(mrr_usage, currency),
            "arr": format_amount(mrr * 12, currency),
            "active_subscriptions": int(active),
            "active_subscriptions_at_start": int(active_at_start),
            "new_subscriptions": int(_get(this, "new")),
            "churned_subscriptions": int(churned),
            "churn_rate": (
                None if active_at_start <= 0
                else str((churned / active_at_start).quantize(CHURN_RATE_QUANTUM, rounding=ROUND_HALF_UP))
            ),
            "invoiced": format_amount(_get(this, "invoiced"), currency),
            "collected": format_amount(_get(this, "collected"), currency),
            "outstanding": format_amount(at_end("outstanding"), currency),
            "usage_charges": format_amount(_get(this, "usage_charges"), currency),
            "usage": {
                name[len("usage#"):]: _plain(value)
                for name, value in sorted(this.items()) if name.startswith("usage#") and value
            },
        }
    return {"object": "report", "month": month, "currencies": currencies}


def _get(figures: Mapping[str, Decimal], name: str) -> Decimal:
    return Decimal(figures.get(name, ZERO))


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


# ---------------------------------------------------------------------------
# Usage statistics


def usage_report(meter: str, rows: Iterable[tuple[str, str, Decimal]], group_by: str) -> dict:
    """Usage of `meter` from (day, subscription, quantity) rows: per day or
    month, the total and the split per subscription."""
    if group_by not in ("day", "month"):
        raise InvalidRequest("group_by: day or month", param="group_by")
    buckets: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for day, subscription_id, quantity in rows:
        bucket = day if group_by == "day" else day[:7]
        buckets[bucket][subscription_id] += quantity
    data = []
    for bucket in sorted(buckets):
        per_subscription = {sub: q for sub, q in sorted(buckets[bucket].items()) if q}
        data.append({
            group_by: bucket,
            "quantity": _plain(sum(per_subscription.values(), ZERO)),
            "subscriptions": [{"subscription_id": sub, "quantity": _plain(q)} for sub, q in per_subscription.items()],
        })
    return {"object": "usage_report", "meter": meter, "group_by": group_by, "data": data}


# ---------------------------------------------------------------------------
# The accounting export


EXPORT_COLUMNS = (
    "invoice_number", "invoice_id", "status", "invoice_date", "finalized_at", "customer_id", "customer_name",
    "line", "kind", "account_code", "component", "description", "period_start", "period_end", "quantity",
    "unit_amount", "net_amount", "vat_rate", "vat_amount", "gross_amount", "currency",
)


def line_taxes(amounts: list[Decimal], rate: Decimal | None, invoice_tax: Decimal, currency: str) -> list[Decimal]:
    """The invoice's VAT split over its lines: each line's net x rate,
    rounded, with the cents that the invoice's single rounding differs by
    put on the largest line, so the lines add up to the invoice's VAT."""
    if not amounts:
        return []
    if rate is None:
        return [round_money(ZERO, currency) for _ in amounts]
    # No shortcut when the invoice's VAT is 0: lines of opposite signs (a
    # credit beside a fee) each carry their VAT, which add up to 0.
    taxes = [round_money(amount * rate / 100, currency) for amount in amounts]
    difference = invoice_tax - sum(taxes, ZERO)
    if difference:
        largest = max(range(len(amounts)), key=lambda i: abs(amounts[i]))
        taxes[largest] += difference
    return taxes


def export_rows(invoice: Mapping, account_of_kind: Callable[[str], str]) -> list[list[str]]:
    """The CSV rows of one invoice (API.md's invoice object plus the
    customer's name): one per line, with the account the journal credits
    for its kind (`account_of_kind`, from domain/ledger.py)."""
    currency = invoice["currency"]
    lines = invoice["lines"]
    tax_lines = invoice.get("tax") or []
    rate = Decimal(tax_lines[0]["rate"]) if tax_lines else None
    invoice_tax = sum((Decimal(t["amount"]) for t in tax_lines), ZERO)
    amounts = [Decimal(line["amount"]) for line in lines]
    taxes = line_taxes(amounts, rate, invoice_tax, currency)
    rows = []
    for index, (line, net, tax) in enumerate(zip(lines, amounts, taxes), start=1):
        rows.append([
            invoice.get("number") or "", invoice["id"], invoice["status"], invoice.get("invoice_date") or "",
            invoice.get("finalized_at") or "", invoice["customer_id"], invoice.get("customer_name") or "",
            str(index), line["kind"], account_of_kind(line["kind"]), line.get("component") or "",
            line.get("description") or "", line.get("period_start") or "", line.get("period_end") or "",
            line.get("quantity") or "", line.get("unit_amount") or "",
            format_amount(net, currency), "" if rate is None else format(rate, "f"),
            format_amount(tax, currency), format_amount(net + tax, currency), currency,
        ])
    return rows
