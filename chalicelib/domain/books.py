"""An issued invoice as the books read it: what revenue recognition
(domain/revenue.py) and the double-entry rule (domain/ledger.py) both start
from. Pure: built from the invoice as the API shows it (decimal strings,
ISO instants) and the merchant's time zone; days are the merchant's days.

One invoice carries every document of accounting interest about it: its
lines (with their service periods), its credit notes, its payments (offline
and by card) and its voiding. So one record of the billing table's stream
says everything the books must learn from a change.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

from chalicelib.domain.money import ZERO
from chalicelib.domain.reports import zone

# Statuses of an invoice that has been finalized (numbered) at some point.
ISSUED = ("open", "paid", "uncollectible", "void")


@dataclass(frozen=True)
class BookLine:
    """An invoice line: its pre-tax amount and the days it pays for,
    [start, end) as the merchant's days (None: no service period)."""

    line_id: str
    kind: str
    description: str
    amount: Decimal
    start: date | None
    end: date | None


@dataclass(frozen=True)
class BookCreditNote:
    credit_note_id: str
    number: str
    day: date
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    refund: str  # card, credit_balance or none
    # invoice line id -> pre-tax amount credited on it; what of the subtotal
    # no line names was credited on the invoice as a whole.
    lines: Mapping[str, Decimal]


@dataclass(frozen=True)
class BookPayment:
    payment_id: str
    method: str  # card, cash, cheque, bank_transfer
    day: date
    amount: Decimal
    applied: Decimal
    to_credit_balance: Decimal
    reference: str


@dataclass(frozen=True)
class BookInvoice:
    invoice_id: str
    number: str
    currency: str
    customer_id: str
    customer_name: str
    finalized: date
    voided: date | None
    lines: tuple[BookLine, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    credit_applied: Decimal
    credit_notes: tuple[BookCreditNote, ...]
    payments: tuple[BookPayment, ...]


def local_day(instant: str | None, tz: str | None) -> date | None:
    if not instant:
        return None
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.astimezone(zone(tz)).date()


def book_invoice(invoice: Mapping, tz: str | None) -> BookInvoice | None:
    """The books' view of an invoice (API.md's invoice object plus
    `finalized_at`, `voided_at`, `paid_at`, `customer_name`, the credit note
    entries `credit_note_entries` and the payment entries `payment_entries`
    and `payment_attempts` the invoice keeps), or None when it was never
    finalized (a draft, or a draft voided)."""
    if invoice.get("status") not in ISSUED or not invoice.get("finalized_at") or not invoice.get("number"):
        return None
    lines = tuple(
        BookLine(
            line_id=line.get("id") or f"line-{index}", kind=line.get("kind") or "fee",
            description=line.get("description") or "", amount=Decimal(line["amount"]),
            start=local_day(line.get("period_start"), tz), end=local_day(line.get("period_end"), tz),
        )
        for index, line in enumerate(invoice.get("lines") or [], start=1)
    )
    credit_notes = tuple(
        BookCreditNote(
            credit_note_id=entry["id"], number=entry.get("number") or entry["id"],
            day=local_day(entry["created_at"], tz), subtotal=Decimal(entry["subtotal"]),
            tax=sum((Decimal(t["amount"]) for t in entry.get("tax") or []), ZERO), total=Decimal(entry["total"]),
            refund=entry.get("refund") or "none",
            lines={line_id: Decimal(amount) for line_id, amount in (entry.get("lines") or {}).items()},
        )
        for entry in invoice.get("credit_note_entries") or []
    )
    offline = [
        BookPayment(
            payment_id=entry["id"], method=entry["method"], day=local_day(entry.get("received_at")
                                                                          or entry["created_at"], tz),
            amount=Decimal(entry["amount"]), applied=Decimal(entry["applied"]),
            to_credit_balance=Decimal(entry.get("to_credit_balance") or "0"), reference=entry.get("reference") or "",
        )
        for entry in invoice.get("payment_entries") or []
    ]
    payments = offline + _card_payment(invoice, offline, tz)
    return BookInvoice(
        invoice_id=invoice["id"], number=invoice["number"], currency=invoice["currency"],
        customer_id=invoice["customer_id"], customer_name=invoice.get("customer_name") or "",
        finalized=local_day(invoice["finalized_at"], tz),
        voided=local_day(invoice.get("voided_at"), tz) if invoice["status"] == "void" else None,
        lines=lines, subtotal=Decimal(invoice["subtotal"]),
        tax=sum((Decimal(t["amount"]) for t in invoice.get("tax") or []), ZERO), total=Decimal(invoice["total"]),
        credit_applied=Decimal(invoice.get("credit_applied") or "0"), credit_notes=credit_notes,
        payments=tuple(payments),
    )


def _card_payment(invoice: Mapping, offline: list[BookPayment], tz: str | None) -> list[BookPayment]:
    """What the card paid: the invoice's amount paid less what offline
    payments applied, on the day it was paid (as the customer page shows it)."""
    succeeded = [a for a in invoice.get("payment_attempts") or []
                 if a.get("status") == "succeeded" and a.get("payment_intent")]
    if not succeeded:
        return []
    by_card = Decimal(invoice.get("amount_paid") or "0") - sum((p.applied for p in offline), ZERO)
    if by_card <= 0:
        return []
    attempt = succeeded[-1]
    day = local_day(invoice.get("paid_at") or attempt.get("at"), tz)
    return [BookPayment(payment_id=attempt["payment_intent"], method="card", day=day, amount=by_card,
                        applied=by_card, to_credit_balance=ZERO, reference=attempt["payment_intent"])]
