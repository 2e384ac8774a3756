"""Revenue recognition (pure): each invoice line spread by day over its
service period, credit notes and voids reversing what they credit.

The rule
--------
- A line is earned evenly per day of its service period [start, end) (the
  merchant's days). What is earned by the start of day d is the line's
  amount x elapsed days / days of the period, rounded half up to the
  currency's minor unit: cumulative rounding, so the months of a line add up
  to its amount exactly, to the cent, and no month ever moves by more than
  a rounding step from its share.
- Nothing is recognised before the document is dated (no accrual of what is
  not invoiced yet): a line billed in arrears, or an invoice finalized late,
  catches up on its date with the days already past. So a closed month's
  figures never change afterwards.
- A line without a service period (or of zero days) is earned on its date.
- A credit note line credited on an invoice line is that line's reversal:
  a negative amount over the same service period, dated the credit note's
  day, so it takes back at once its share of the days already earned and
  lowers the days to come by the same proportion. A credit note (or the
  part of one) that names no line credits the invoice's positive lines in
  proportion to their amounts (largest remainder, to the cent).
- A voided invoice is credited in full on its void day, by the same rule.

Hence, over any run of months: recognised + deferred at the end ==
deferred at the start + invoiced - credited (all net of tax), and once
every period is over, recognised == invoiced - credited.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from chalicelib.domain.books import BookInvoice, BookLine
from chalicelib.domain.money import ZERO, minor_units, round_money


@dataclass(frozen=True)
class Earning:
    """An amount (net of tax; negative for a credit) to recognise over
    [start, end), not before `dated`."""

    amount: Decimal
    dated: date
    start: date | None
    end: date | None

    @property
    def days(self) -> int:
        if self.start is None or self.end is None:
            return 0
        return max((self.end - self.start).days, 0)


def earned_before(item: Earning, day: date, currency: str) -> Decimal:
    """What of `item` is recognised on the days before `day`."""
    if day <= item.dated:
        return ZERO
    days = item.days
    if days == 0:
        return item.amount
    elapsed = min(max((day - item.start).days, 0), days)
    return round_money(item.amount * elapsed / days, currency)


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def first_day(month: str) -> date:
    return date(int(month[:4]), int(month[5:7]), 1)


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def months_of(item: Earning) -> Iterator[str]:
    """The months in which `item` recognises something, in order."""
    last_day = item.dated
    if item.days:
        last_day = max(last_day, date.fromordinal(item.end.toordinal() - 1))
    month, last = month_key(item.dated), month_key(last_day)
    while month <= last:
        yield month
        month = next_month(month)


def by_month(item: Earning, currency: str) -> dict[str, Decimal]:
    """Month (YYYY-MM) -> what `item` recognises in it; the values add up to
    `item.amount` exactly."""
    result: dict[str, Decimal] = {}
    for month in months_of(item):
        amount = (earned_before(item, first_day(next_month(month)), currency)
                  - earned_before(item, first_day(month), currency))
        if amount:
            result[month] = amount
    return result


def allocate(total: Decimal, weights: list[Decimal], currency: str) -> list[Decimal]:
    """`total` split in proportion to `weights` (all > 0) in minor units,
    the units left by rounding down given to the largest remainders."""
    unit = Decimal(1).scaleb(-minor_units(currency))
    units = int(total / unit)
    whole = sum(weights, ZERO)
    shares = [units * w / whole for w in weights]
    floors = [int(share) for share in shares]  # toward zero: a negative total stays symmetric
    left = units - sum(floors)
    step = 1 if left >= 0 else -1
    order = sorted(range(len(weights)), key=lambda i: (-(abs(shares[i] - floors[i])), i))
    for i in order[:abs(left)]:
        floors[i] += step
    return [Decimal(f) * unit for f in floors]


def earnings(invoice: BookInvoice) -> list[tuple[str, Earning]]:
    """(what, earning) of an invoice: its lines (`invoiced`) on its
    finalization day; its credit notes and its voiding (`credited`)."""
    items: list[tuple[str, Earning]] = [
        ("invoiced", Earning(line.amount, invoice.finalized, line.start, line.end)) for line in invoice.lines
    ]
    by_id = {line.line_id: line for line in invoice.lines}
    for note in invoice.credit_notes:
        named = ZERO
        for line_id, amount in note.lines.items():
            line = by_id.get(line_id)
            start, end = (line.start, line.end) if line else (None, None)
            items.append(("credited", Earning(-amount, note.day, start, end)))
            named += amount
        items.extend(("credited", e) for e in _spread(note.subtotal - named, invoice.lines, note.day,
                                                        invoice.currency))
    if invoice.voided is not None:
        # Voiding takes back whatever the invoice still holds: each earning so far, reversed on the void day.
        items.extend(("credited", Earning(-e.amount, max(e.dated, invoice.voided), e.start, e.end))
                     for _, e in list(items))
    return items


def _spread(amount: Decimal, lines: tuple[BookLine, ...], day: date, currency: str) -> list[Earning]:
    if not amount:
        return []
    positive = [line for line in lines if line.amount > 0]
    if not positive:
        return [Earning(-amount, day, None, None)]
    shares = allocate(amount, [line.amount for line in positive], currency)
    return [Earning(-share, day, line.start, line.end) for line, share in zip(positive, shares) if share]


# Figures of one month and currency: recognised, invoiced, credited (net of tax).
FIGURES = ("recognized", "invoiced", "credited")


def contribution(invoice: BookInvoice | None) -> dict[str, dict[str, Decimal]]:
    """Month -> {recognized, invoiced, credited} of one invoice, as it
    stands: what it adds to the merchant's monthly revenue figures (a change
    of the invoice adds the new contribution less the old one)."""
    months: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    if invoice is None:
        return {}
    for what, item in earnings(invoice):
        if not item.amount:
            continue
        months[month_key(item.dated)][what] += -item.amount if what == "credited" else item.amount
        for month, amount in by_month(item, invoice.currency).items():
            months[month]["recognized"] += amount
    return {m: {k: v for k, v in f.items() if v} for m, f in months.items() if any(f.values())}


def report(month: str, history: Iterable[tuple[str, str, dict[str, Decimal]]]) -> dict:
    """The revenue report of `month` from (month, currency, figures) of
    every month up to it: per currency, what was recognised, invoiced and
    credited in the month, and the revenue deferred at its start and end
    (invoiced - credited - recognised to date)."""
    from chalicelib.domain.money import format_amount

    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for item_month, currency, figures in history:
        if item_month > month:
            continue
        moved = figures.get("invoiced", ZERO) - figures.get("credited", ZERO) - figures.get("recognized", ZERO)
        totals[currency]["deferred"] += moved
        if item_month == month:
            for name in FIGURES:
                totals[currency][name] += figures.get(name, ZERO)
        else:
            totals[currency]["deferred_at_start"] += moved
    currencies = {}
    for currency in sorted(totals):
        t = totals[currency]
        if not any(t.values()):
            continue
        currencies[currency] = {name: format_amount(t[name], currency)
                                for name in ("recognized", "invoiced", "credited", "deferred_at_start", "deferred")}
    return {"object": "revenue_report", "month": month, "currencies": currencies}
