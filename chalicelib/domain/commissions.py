"""Commissions and royalties of payees (resellers and licensors), pure.

A payee's rules say what it earns on a paid invoice:
- `percent` of each matching line, net of tax (the line's pre-tax amount);
  with `first_months` N and `then_percent`, the line earns `percent` while
  the subscription is younger than N months at the line's period start and
  `then_percent` afterwards ("20% for 3 months, then 10%");
- `per_unit`: an amount per unit of each matching usage line (a royalty per
  montage: the quantity of the `montage` component's lines);
- `flat_per_new_subscription`: an amount once per subscription, on the
  invoice that opened it.

A rule applies to the lines whose offer is among `applies_to.offer_codes`
and whose component (or option) is among `applies_to.components`; a list
left out matches everything.

Rounding, once per accrual line: everything the payee's rules give one
invoice line is added unrounded (several rules may match it), and the sum is
rounded half up to the currency's minor unit. A reversal (a credit note)
takes the same share of the accrual as the credit note takes of its line,
cumulatively: after credit notes taking the fractions f1..fk of a line, the
reversals add up to exactly `round(accrual x (f1 + ... + fk))`, so a line
credited in full nets to zero whatever the number of credit notes, and the
cents of a partial credit are never lost or doubled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from chalicelib.domain.money import HUNDRED, ONE, ZERO, format_decimal, round_money

# The key of the accrual of a flat amount per new subscription (not a line).
NEW_SUBSCRIPTION = "new_subscription"
USAGE_KINDS = ("usage",)


@dataclass(frozen=True)
class Rule:
    offer_codes: frozenset[str] | None = None
    components: frozenset[str] | None = None
    percent: Decimal | None = None
    per_unit: Decimal | None = None
    flat_per_new_subscription: Decimal | None = None
    first_months: int | None = None
    then_percent: Decimal | None = None

    def matches(self, line: "PaidLine") -> bool:
        if self.offer_codes is not None and line.offer_code not in self.offer_codes:
            return False
        return self.components is None or line.component in self.components

    def percent_at(self, age_months: int) -> Decimal | None:
        """The percentage this rule takes of a line `age_months` into the subscription."""
        if self.percent is None:
            return None
        if self.first_months is not None and age_months >= self.first_months:
            return self.then_percent if self.then_percent is not None else ZERO
        return self.percent


@dataclass(frozen=True)
class PaidLine:
    """One line of a paid invoice: its pre-tax `amount` (net of tax), its
    quantity, and the subscription's age in whole months at its period start."""

    line_id: str
    amount: Decimal
    kind: str = "fee"
    offer_code: str | None = None
    component: str | None = None
    quantity: Decimal = ZERO
    age_months: int = 0
    description: str = ""


@dataclass(frozen=True)
class Part:
    """What one rule gives one accrual: `base` x `rate` (a percentage of an
    amount, a per-unit amount of a quantity, a flat amount once)."""

    rule_index: int
    basis: str  # percent | per_unit | flat_per_new_subscription
    base: Decimal
    rate: Decimal

    @property
    def value(self) -> Decimal:
        if self.basis == "percent":
            return self.base * self.rate / HUNDRED
        return self.base * self.rate

    def as_dict(self) -> dict:
        return {"rule": self.rule_index, "basis": self.basis, "base": format_decimal(self.base),
                "rate": format_decimal(self.rate)}


@dataclass(frozen=True)
class Accrual:
    """What a payee earns on one invoice line (or once for a new
    subscription, `key` NEW_SUBSCRIPTION), rounded once."""

    key: str
    amount: Decimal
    parts: tuple[Part, ...]
    base_amount: Decimal = ZERO
    description: str = ""


def accrue(rules: list[Rule], lines: list[PaidLine], currency: str, *,
           new_subscription: bool = False, usage_units: dict[str, Decimal] | None = None) -> list[Accrual]:
    """The accruals of a paid invoice for one payee, one per line that earns
    something (in the invoice's order), then the flat amount of a new
    subscription. `usage_units` (component -> units) overrides the units a
    per-unit rule counts for a component (default: the quantity of the
    matching usage lines)."""
    accruals = []
    for line in lines:
        parts = []
        for index, rule in enumerate(rules):
            if not rule.matches(line):
                continue
            percent = rule.percent_at(line.age_months)
            if percent is not None and percent != ZERO and line.amount != ZERO:
                parts.append(Part(index, "percent", line.amount, percent))
            if rule.per_unit is not None and line.kind in USAGE_KINDS:
                units = line.quantity
                if usage_units is not None and line.component in usage_units:
                    units = _share_of_units(line, lines, usage_units[line.component])
                if units:
                    parts.append(Part(index, "per_unit", units, rule.per_unit))
        if parts:
            amount = round_money(sum((part.value for part in parts), ZERO), currency)
            accruals.append(Accrual(line.line_id, amount, tuple(parts), line.amount, line.description))
    if new_subscription:
        parts = [Part(index, "flat_per_new_subscription", ONE, rule.flat_per_new_subscription)
                 for index, rule in enumerate(rules)
                 if rule.flat_per_new_subscription is not None and _rule_touches(rule, lines)]
        if parts:
            amount = round_money(sum((part.value for part in parts), ZERO), currency)
            accruals.append(Accrual(NEW_SUBSCRIPTION, amount, tuple(parts), ZERO, "new subscription"))
    return accruals


def _rule_touches(rule: Rule, lines: list[PaidLine]) -> bool:
    """A flat amount per new subscription is earned on an invoice of the
    rule's offers (any invoice when the rule names no offer)."""
    if rule.offer_codes is None:
        return True
    return any(line.offer_code in rule.offer_codes for line in lines)


def _share_of_units(line: PaidLine, lines: list[PaidLine], units: Decimal) -> Decimal:
    """The units of a component given as a whole, counted on its first usage line only."""
    first = next(other for other in lines if other.kind in USAGE_KINDS and other.component == line.component)
    return units if first.line_id == line.line_id else ZERO


# -- reversals -------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditNote:
    """A credit note of the invoice as reversals read it: the pre-tax amount
    it credits on each invoice line (`lines`), and what it credits without
    naming a line (`unattributed`, shared by every line in proportion)."""

    credit_note_id: str
    lines: dict[str, Decimal] = field(default_factory=dict)
    unattributed: Decimal = ZERO

    @property
    def subtotal(self) -> Decimal:
        return sum(self.lines.values(), ZERO) + self.unattributed


@dataclass(frozen=True)
class Reversal:
    credit_note_id: str
    key: str  # the accrual's: its invoice line, or NEW_SUBSCRIPTION
    amount: Decimal  # negative (or zero: not written)
    fraction: Decimal  # of the accrual this credit note takes


def credited_fraction(note: CreditNote, key: str, line_amounts: dict[str, Decimal],
                      invoice_subtotal: Decimal) -> Decimal:
    """The share of the accrual `key` that a credit note takes: of its line,
    what the note credits on it over the line's amount, plus the note's
    unattributed credit over the invoice's subtotal; of a new subscription's
    flat amount, the note's subtotal over the invoice's subtotal."""
    whole = ZERO if invoice_subtotal <= 0 else ONE / invoice_subtotal
    if key == NEW_SUBSCRIPTION:
        return note.subtotal * whole
    fraction = note.unattributed * whole
    line_amount = line_amounts.get(key, ZERO)
    if key in note.lines and line_amount > 0:
        fraction += note.lines[key] / line_amount
    return fraction


def reverse(accruals: list[Accrual], notes: list[CreditNote], line_amounts: dict[str, Decimal],
            invoice_subtotal: Decimal, currency: str) -> list[Reversal]:
    """The reversals of an invoice's accruals by its credit notes, in the
    notes' order (oldest first): each the difference of the cumulative
    rounded shares (module docstring), the cumulative share capped at the
    whole accrual. Zero reversals are left out."""
    reversals = []
    for accrual in accruals:
        taken = ZERO
        for note in notes:
            fraction = credited_fraction(note, accrual.key, line_amounts, invoice_subtotal)
            if fraction <= 0:
                continue
            after = min(taken + fraction, ONE)
            amount = round_money(accrual.amount * taken, currency) - round_money(accrual.amount * after, currency)
            if amount:
                reversals.append(Reversal(note.credit_note_id, accrual.key, amount, after - taken))
            taken = after
    return reversals


# -- the statement ---------------------------------------------------------------------


def subscription_age_months(start: datetime, at: datetime, tz: str | None = None) -> int:
    """Whole months from `start` to `at`, counted on the merchant's calendar
    (`tz`) as billing periods step: the largest k with start + k months <= at
    (a month end clamped: 31 Jan + 1 month is 28/29 Feb); 0 in the first month."""
    from dateutil.relativedelta import relativedelta

    from chalicelib.domain.periods import zone

    local = zone(tz)
    start, at = start.astimezone(local), at.astimezone(local)
    if at <= start:
        return 0
    months = (at.year - start.year) * 12 + at.month - start.month
    while months > 0 and start + relativedelta(months=months) > at:
        months -= 1
    return months


def statement_total(amounts: list[Decimal], currency: str) -> Decimal:
    """A statement's total: the sum of its accrual lines, each already rounded."""
    return round_money(sum(amounts, ZERO), currency)


def statement_number(prefix: str, year: int, sequence: int) -> str:
    """`{prefix}ST{YYYY}-{000001}`: the merchant's invoice prefix, a series of its own."""
    return f"{prefix}ST{year:04d}-{sequence:06d}"


def rule_from_dict(rule: dict) -> Rule:
    """A rule as the API writes it (decimal strings), checked by the API's model first."""
    applies_to = rule.get("applies_to") or {}

    def decimal(name: str) -> Decimal | None:
        return None if rule.get(name) is None else Decimal(str(rule[name]))

    def codes(name: str) -> frozenset[str] | None:
        return None if applies_to.get(name) is None else frozenset(applies_to[name])

    return Rule(offer_codes=codes("offer_codes"), components=codes("components"), percent=decimal("percent"),
                per_unit=decimal("per_unit"), flat_per_new_subscription=decimal("flat_per_new_subscription"),
                first_months=None if rule.get("first_months") is None else int(rule["first_months"]),
                then_percent=decimal("then_percent"))


def month_of(moment: datetime, tz: str | None = None) -> str:
    """`YYYY-MM` of an instant on the merchant's calendar."""
    from chalicelib.domain.periods import zone

    return moment.astimezone(zone(tz)).strftime("%Y-%m")


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def statement_event_types(old: dict | None, new: dict | None) -> list[str]:
    """The domain events of a write of a statement's head (images as plain
    values): `statement.issued` and `statement.paid` when its status moves there."""
    if new is None:
        return []
    status, before = new.get("status"), (old or {}).get("status")
    if status == before:
        return []
    return {"issued": ["statement.issued"], "paid": ["statement.paid"]}.get(status, [])
