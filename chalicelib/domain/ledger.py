"""The double-entry rule (pure): an issued invoice and what happened to it
-> balanced journal entries. The journal CSV and the FEC file
(domain/ledger_files.py) are two renderings of these entries.

Entries name accounts by their role; the merchant's `accounts` map (PATCH
/merchant) gives each role its number, by default the French chart of
accounts (plan comptable général):

| role | default | used for |
| --- | --- | --- |
| customers | 411000 | what customers owe (with the customer as auxiliary account) |
| revenue | 706000 | services sold: fees, options, usage, minimums, bonus-malus |
| discounts | 709000 | credit notes and invoice lines of kind `credit` |
| vat_collected | 445710 | VAT on invoices and credit notes |
| customer_credit | 419000 | the customers' credit balances (and overpayments) |
| bank | 512000 | card payments, bank transfers, card refunds |
| cheques | 511200 | cheques received, to be paid in |
| cash | 530000 | cash received |

Entries, each dated on the merchant's day of its fact:
- an invoice, when finalized (journal VE): debit customers with its total,
  credit revenue / discounts with its lines and vat_collected with its tax;
  the credit balance it used moves from customer_credit to customers; a
  negative total goes to customer_credit;
- a credit note (VE): debit discounts and vat_collected, credit customers;
  to the credit balance, customer_credit is credited instead; refunded to the
  card, a second entry (BQ) debits customers and credits bank;
- a payment: by card or bank transfer (BQ, bank), cheque (BQ, cheques), cash
  (CA, cash): debit that account, credit customers with what it paid of the
  invoice and customer_credit with any overpayment;
- a void invoice: its finalization entry reversed on the void day (VE).
An uncollectible invoice stays owed: writing it off is the merchant's call.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from chalicelib.domain.books import BookInvoice
from chalicelib.domain.money import ZERO

DEFAULT_ACCOUNTS = {
    "customers": "411000",
    "revenue": "706000",
    "discounts": "709000",
    "vat_collected": "445710",
    "customer_credit": "419000",
    "bank": "512000",
    "cheques": "511200",
    "cash": "530000",
}
ACCOUNT_LABELS = {
    "customers": "Clients",
    "revenue": "Prestations de services",
    "discounts": "Rabais, remises et ristournes accordés",
    "vat_collected": "TVA collectée",
    "customer_credit": "Clients - avances et acomptes reçus",
    "bank": "Banque",
    "cheques": "Chèques à encaisser",
    "cash": "Caisse",
}
JOURNALS = {"VE": "Ventes", "BQ": "Banque", "CA": "Caisse"}
# Roles whose lines name the customer (its auxiliary account).
CUSTOMER_ROLES = ("customers", "customer_credit")
PAYMENT_ACCOUNT = {"card": ("BQ", "bank"), "bank_transfer": ("BQ", "bank"), "cheque": ("BQ", "cheques"),
                   "cash": ("CA", "cash")}
# An account number as PATCH /merchant takes it: 3 to 20 digits.
ACCOUNT_NUMBER = r"^[0-9]{3,20}$"


def accounts_map(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The merchant's account numbers: its overrides over the defaults."""
    return {**DEFAULT_ACCOUNTS, **{k: v for k, v in (overrides or {}).items() if k in DEFAULT_ACCOUNTS and v}}


@dataclass(frozen=True)
class EntryLine:
    role: str
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True)
class Entry:
    """One balanced journal entry. `key` is unique and stable per fact."""

    key: str
    journal: str
    day: date
    currency: str
    piece_ref: str
    piece_day: date
    label: str
    customer_id: str
    customer_name: str
    lines: tuple[EntryLine, ...]

    def __post_init__(self):
        if sum((line.debit - line.credit for line in self.lines), ZERO) != 0:
            raise ValueError(f"entry {self.key} is not balanced")

    def as_dict(self) -> dict:
        return {
            "key": self.key, "journal": self.journal, "day": self.day.isoformat(), "currency": self.currency,
            "piece_ref": self.piece_ref, "piece_day": self.piece_day.isoformat(), "label": self.label,
            "customer_id": self.customer_id, "customer_name": self.customer_name,
            "lines": [[line.role, str(line.debit), str(line.credit)] for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Entry":
        return cls(
            key=data["key"], journal=data["journal"], day=date.fromisoformat(data["day"]),
            currency=data["currency"], piece_ref=data["piece_ref"], piece_day=date.fromisoformat(data["piece_day"]),
            label=data["label"], customer_id=data["customer_id"], customer_name=data["customer_name"],
            lines=tuple(EntryLine(role, Decimal(debit), Decimal(credit)) for role, debit, credit in data["lines"]),
        )


def _entry(key: str, journal: str, day: date, invoice: BookInvoice, piece_ref: str, piece_day: date, label: str,
           signed: Mapping[str, Decimal]) -> Entry | None:
    """An entry from role -> signed amount (debit > 0, credit < 0), one line
    a role, in the order of DEFAULT_ACCOUNTS; None when every amount is 0."""
    lines = tuple(
        EntryLine(role, signed[role] if signed[role] > 0 else ZERO, -signed[role] if signed[role] < 0 else ZERO)
        for role in DEFAULT_ACCOUNTS if signed.get(role)
    )
    if not lines:
        return None
    name = invoice.customer_name
    return Entry(key, journal, day, invoice.currency, piece_ref, piece_day, f"{label} {name}".strip()[:200],
                 invoice.customer_id, name, lines)


def line_role(kind: str) -> str:
    """The role of the account an invoice line of `kind` is credited to."""
    return "discounts" if kind == "credit" else "revenue"


def _add(signed: dict[str, Decimal], role: str, amount: Decimal) -> None:
    signed[role] = signed.get(role, ZERO) + amount


def invoice_entries(invoice: BookInvoice | None) -> list[Entry]:
    """Every entry an invoice makes as it stands (module docstring)."""
    if invoice is None:
        return []
    entries: list[Entry | None] = []
    issued = _issue_amounts(invoice)
    entries.append(_entry(f"{invoice.invoice_id}#invoice", "VE", invoice.finalized, invoice, invoice.number,
                          invoice.finalized, f"Facture {invoice.number}", issued))
    for note in invoice.credit_notes:
        signed: dict[str, Decimal] = {}
        _add(signed, "discounts", note.subtotal)
        _add(signed, "vat_collected", note.tax)
        _add(signed, "customer_credit" if note.refund == "credit_balance" else "customers", -note.total)
        entries.append(_entry(f"{note.credit_note_id}#credit_note", "VE", note.day, invoice, note.number, note.day,
                              f"Avoir {note.number} sur {invoice.number}", signed))
        if note.refund == "card":
            entries.append(_entry(f"{note.credit_note_id}#refund", "BQ", note.day, invoice, note.number, note.day,
                                  f"Remboursement {note.number}", {"customers": note.total, "bank": -note.total}))
    for payment in invoice.payments:
        journal, role = PAYMENT_ACCOUNT.get(payment.method, ("BQ", "bank"))
        signed = {}
        _add(signed, role, payment.amount)
        _add(signed, "customers", -payment.applied)
        _add(signed, "customer_credit", -payment.to_credit_balance)
        entries.append(_entry(f"{payment.payment_id}#payment", journal, payment.day, invoice, payment.reference
                              or payment.payment_id, payment.day, f"Règlement {_METHOD_LABEL.get(payment.method, '')}"
                              f" {invoice.number}".replace("  ", " "), signed))
    if invoice.voided is not None:
        reversed_ = {role: -amount for role, amount in issued.items()}
        entries.append(_entry(f"{invoice.invoice_id}#void", "VE", invoice.voided, invoice, invoice.number,
                              invoice.finalized, f"Annulation facture {invoice.number}", reversed_))
    return [entry for entry in entries if entry is not None]


_METHOD_LABEL = {"card": "carte", "bank_transfer": "virement", "cheque": "chèque", "cash": "espèces"}


def _issue_amounts(invoice: BookInvoice) -> dict[str, Decimal]:
    signed: dict[str, Decimal] = {}
    for line in invoice.lines:
        _add(signed, line_role(line.kind), -line.amount)
    # The subtotal is the lines' sum rounded once: any difference stays on revenue.
    _add(signed, "revenue", -(invoice.subtotal - sum((line.amount for line in invoice.lines), ZERO)))
    _add(signed, "vat_collected", -invoice.tax)
    _add(signed, "customers", invoice.total)
    if invoice.total < 0:
        # A negative total is the customer's credit.
        _add(signed, "customers", -invoice.total)
        _add(signed, "customer_credit", invoice.total)
    if invoice.credit_applied:
        _add(signed, "customer_credit", invoice.credit_applied)
        _add(signed, "customers", -invoice.credit_applied)
    return signed
