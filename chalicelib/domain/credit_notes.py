"""What a credit note credits: its lines, subtotal, tax and total (pure).

As Stripe does it:
- a credit note's lines are pre-tax amounts of the invoice's lines (each at
  most what is left of its line); the tax is added at the invoice's rates on
  the credit note's subtotal, rounded once per credit note (a reverse-charge
  invoice has rate 0: its credit notes carry 0 tax);
- a credit note given as one `amount` (no lines) is its total, tax included:
  the tax in it is taken out at the invoice's rate (`amount x rate / (100 +
  rate)`, rounded), the rest is its subtotal;
- the credit notes of an invoice never add up to more than its total. So
  that rounding never makes them do, a credit note that takes the last of
  the invoice's subtotal (or of its total) takes the last of its tax too,
  and no credit note takes more tax than is left.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import HUNDRED, ZERO, format_amount, format_decimal, round_billed


@dataclass(frozen=True)
class Credited:
    """What the invoice's earlier credit notes took: subtotal, tax per rate
    (the rate as the invoice writes it, "20.0"), total, and per line id."""

    subtotal: Decimal = ZERO
    tax: dict[str, Decimal] = field(default_factory=dict)
    total: Decimal = ZERO
    lines: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class CreditLine:
    invoice_line_id: str | None
    description: str
    amount: Decimal


@dataclass(frozen=True)
class CreditAmounts:
    currency: str
    lines: tuple[CreditLine, ...]
    subtotal: Decimal
    tax: tuple[tuple[str, Decimal], ...]
    total: Decimal

    @property
    def tax_amount(self) -> Decimal:
        return sum((amount for _, amount in self.tax), ZERO)

    def lines_as_dicts(self) -> list[dict]:
        return [{"invoice_line_id": line.invoice_line_id, "description": line.description,
                 "amount": format_amount(line.amount, self.currency)} for line in self.lines]

    def tax_as_dicts(self) -> list[dict]:
        return [{"rate": rate, "amount": format_amount(amount, self.currency)} for rate, amount in self.tax]


def credit_amounts(
    *,
    currency: str,
    invoice_lines: list[dict],
    invoice_tax: list[dict],
    invoice_subtotal: Decimal,
    invoice_total: Decimal,
    credited: Credited,
    lines: list[tuple[str, Decimal]] | None,
    amount: Decimal | None,
    description: str,
) -> CreditAmounts:
    """The credit note asked for by `lines` ([(invoice line id, pre-tax
    amount)]) or by `amount` (its total, tax included), exactly one of them,
    against an invoice whose lines carry `id`, `amount` and `description`.
    InvalidRequest naming the field when it asks for more than is left."""
    if (lines is None) == (amount is None):
        raise InvalidRequest("give either lines or amount", param="lines" if lines is not None else "amount")
    left_total = invoice_total - credited.total
    left_subtotal = invoice_subtotal - credited.subtotal
    if lines is not None:
        credit_lines = _credit_lines(currency, invoice_lines, credited, lines)
        subtotal = sum((line.amount for line in credit_lines), ZERO)
        last = subtotal >= left_subtotal
        tax = []
        for rate in _rates(invoice_tax):
            left = _tax_left(rate, invoice_tax, credited)
            tax.append((rate, left if last else min(round_billed(subtotal * Decimal(rate) / HUNDRED, currency), left)))
        tax = tuple(tax)
        param = "lines"
    else:
        _check_money(amount, currency, "amount")
        if amount >= left_total:
            tax = tuple((rate, _tax_left(rate, invoice_tax, credited)) for rate in _rates(invoice_tax))
        else:
            rates = sum((Decimal(rate) for rate in _rates(invoice_tax)), ZERO)
            inside = round_billed(amount * rates / (HUNDRED + rates), currency)
            # One rate per invoice here (the merchant's for the country); all of it on that rate.
            tax = tuple((rate, min(inside if i == 0 else ZERO, _tax_left(rate, invoice_tax, credited)))
                        for i, rate in enumerate(_rates(invoice_tax)))
        subtotal = amount - sum((t for _, t in tax), ZERO)
        credit_lines = (CreditLine(None, description, round_billed(subtotal, currency)),)
        param = "amount"
    total = subtotal + sum((t for _, t in tax), ZERO)
    if total <= 0:
        raise InvalidRequest(f"{param}: a credit note credits more than 0", param=param)
    if total > left_total:
        raise InvalidRequest(
            f"{param}: the credit note's total {format_amount(total, currency)} is more than what is left to credit "
            f"on the invoice ({format_amount(max(left_total, ZERO), currency)}: its total less earlier credit notes)",
            param=param,
        )
    if subtotal > left_subtotal:
        raise InvalidRequest(f"{param}: more than is left of the invoice's subtotal "
                             f"({format_amount(max(left_subtotal, ZERO), currency)})", param=param)
    return CreditAmounts(currency, tuple(credit_lines), round_billed(subtotal, currency),
                         tuple((rate, round_billed(t, currency)) for rate, t in tax), round_billed(total, currency))


def _credit_lines(currency: str, invoice_lines: list[dict], credited: Credited,
                  lines: list[tuple[str, Decimal]]) -> list[CreditLine]:
    by_id = {line["id"]: line for line in invoice_lines}
    taken: dict[str, Decimal] = {}
    result = []
    for index, (line_id, amount) in enumerate(lines):
        line = by_id.get(line_id)
        if line is None:
            raise InvalidRequest(f"lines[{index}].invoice_line_id: the invoice has no line {line_id}",
                                 param=f"lines[{index}].invoice_line_id")
        where = f"lines[{index}].amount"
        _check_money(amount, currency, where)
        left = Decimal(line["amount"]) - credited.lines.get(line_id, ZERO) - taken.get(line_id, ZERO)
        if amount > left:
            raise InvalidRequest(f"{where}: more than is left to credit on line {line_id} "
                                 f"({format_amount(max(left, ZERO), currency)})", param=where)
        taken[line_id] = taken.get(line_id, ZERO) + amount
        result.append(CreditLine(line_id, line.get("description") or "", amount))
    return result


def _check_money(amount: Decimal, currency: str, param: str) -> None:
    if amount <= 0:
        raise InvalidRequest(f"{param}: must be greater than 0", param=param)
    if round_billed(amount, currency) != amount:
        raise InvalidRequest(f"{param}: {format_decimal(amount)} has more decimals than {currency} has",
                             param=param)


def _rates(invoice_tax: list[dict]) -> list[str]:
    return [line["rate"] for line in invoice_tax]


def _tax_left(rate: str, invoice_tax: list[dict], credited: Credited) -> Decimal:
    on_invoice = sum((Decimal(line["amount"]) for line in invoice_tax if line["rate"] == rate), ZERO)
    return max(on_invoice - credited.tax.get(rate, ZERO), ZERO)
