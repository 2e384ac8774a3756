"""Invoice totals: lines -> subtotal, tax, credit applied, total, amount due.

API.md's rules:
- tax is the merchant's rate for the customer's country on the subtotal,
  rounded once per invoice (never line by line); a tax_exempt customer gets
  rate 0, amount 0 and a reverse-charge mention;
- the customer's credit balance is used first by the next invoices, never
  beyond what the invoice costs;
- a negative total becomes credit: nothing is due, the credit balance grows.

Everything is Decimal in major units, rounded to the currency's minor unit
with ROUND_HALF_UP (money.round_billed: to Stripe's coarser unit where it has
one, KWD 0.010), so the amount due is charged as it is.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from chalicelib.domain.money import HUNDRED, ZERO, format_amount, format_decimal, round_billed

REVERSE_CHARGE_NOTE = "Reverse charge: VAT to be accounted for by the customer."


@dataclass(frozen=True, slots=True)
class TaxLine:
    """One rate of tax on the invoice: `rate` in percent ("20.0"), `amount` rounded."""

    rate: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceTotals:
    """The money of one invoice.

    total = subtotal + tax; amount_due = total - credit_applied (never below
    0); credit_balance is the customer's balance after this invoice."""

    currency: str
    subtotal: Decimal
    tax: tuple[TaxLine, ...]
    tax_amount: Decimal
    total: Decimal
    credit_applied: Decimal
    amount_due: Decimal
    credit_balance: Decimal
    reverse_charge: bool = False

    @property
    def note(self) -> str | None:
        """The mention an exempt customer's invoice must carry."""
        return REVERSE_CHARGE_NOTE if self.reverse_charge else None

    def as_dict(self) -> dict:
        """The totals as API.md writes them (decimal strings)."""
        c = self.currency
        return {
            "subtotal": format_amount(self.subtotal, c),
            "tax": [{"rate": format_decimal(t.rate), "amount": format_amount(t.amount, c)} for t in self.tax],
            "credit_applied": format_amount(self.credit_applied, c),
            "total": format_amount(self.total, c),
            "amount_due": format_amount(self.amount_due, c),
            "reverse_charge": self.reverse_charge,
        }


def totals(
    lines: Iterable,
    currency: str,
    tax_rate: Decimal | None,
    tax_exempt: bool,
    credit_balance: Decimal,
) -> InvoiceTotals:
    """The totals of an invoice made of `lines` (anything with a Decimal `amount`).

    `tax_rate` is the merchant's rate for the customer's country in percent
    (Decimal("20.0")), or None when the merchant has none for it (no tax
    line). `credit_balance` is the customer's credit before this invoice
    (>= 0). Tax on a negative subtotal is negative too: crediting a charge
    also credits its tax."""
    if credit_balance < 0:
        raise ValueError("a credit balance is never negative; what a customer owes is an invoice")
    if tax_rate is not None and tax_rate < 0:
        raise ValueError("a tax rate is never negative")
    subtotal = round_billed(sum((line.amount for line in lines), ZERO), currency)
    if tax_exempt:
        tax = (TaxLine(ZERO, round_billed(ZERO, currency)),)
    elif tax_rate is None:
        tax = ()
    else:
        tax = (TaxLine(tax_rate, round_billed(subtotal * tax_rate / HUNDRED, currency)),)
    tax_amount = round_billed(sum((t.amount for t in tax), ZERO), currency)
    total = subtotal + tax_amount
    balance = round_billed(credit_balance, currency)
    if total >= 0:
        applied = min(balance, total)
        due = total - applied
        new_balance = balance - applied
    else:
        applied = round_billed(ZERO, currency)
        due = round_billed(ZERO, currency)
        new_balance = balance - total
    return InvoiceTotals(
        currency=currency,
        subtotal=subtotal,
        tax=tax,
        tax_amount=tax_amount,
        total=total,
        credit_applied=applied,
        amount_due=due,
        credit_balance=new_balance,
        reverse_charge=bool(tax_exempt),
    )
