"""Offline payments (`POST /invoices/{id}/payments`): cash, cheque, bank
transfer recorded by the merchant, and the customer's payments of every
method for its page.

A payment is recorded on its invoice (`offline_payments`), in one write
conditional on the invoice's version: a partial one lowers the amount due;
the one that leaves nothing due makes the invoice paid, with the same news
as a card payment (`invoice.paid`, the subscription settled); what is paid
beyond the amount due goes to the customer's credit balance in the same
transaction. Only an open or uncollectible invoice takes one, and never
while a charge is in flight (the card could be charged the same amount).
The request's Idempotency-Key is kept (as a digest) on the payment, so the
same request retried after a failure records it once.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.domain.money import ZERO, format_amount, format_decimal, round_money
from chalicelib.ids import new_id
from chalicelib.services import collecting, invoices
from chalicelib.services.credit_notes import close_unsent_attempt, request_digest
from chalicelib.store import invoices as invoice_store

METHODS = ("cash", "cheque", "bank_transfer")
# A payment is received before it is recorded; a clock a little ahead is tolerated.
FUTURE_TOLERANCE = timedelta(minutes=5)
# The customer page shows the payments of this many of its latest invoices.
INVOICES_ON_CUSTOMER_PAGE = 50
PAYMENTS_ON_CUSTOMER_PAGE = 20
ATTEMPTS = 4


def record_payment(merchant_id: str, invoice_id: str, *, method: str, amount: Decimal, reference: str | None,
                   received_at: datetime | None, request_key: str | None = None) -> dict:
    now = clock().now()
    if received_at is not None and received_at > now + FUTURE_TOLERANCE:
        raise InvalidRequest("received_at: a payment is recorded once received, not in the future",
                             param="received_at")
    digest = request_digest(merchant_id, invoice_id, request_key)
    for _ in range(ATTEMPTS):
        invoice = invoice_store.get_invoice(merchant_id, invoice_id)
        done = next((p for p in invoice.payment_entries() if digest and p.get("request") == digest), None)
        if done is not None:
            return serialize(done, invoice)
        invoice = _payable(invoice, now)
        currency = invoice.currency
        if round_money(amount, currency) != amount:
            raise InvalidRequest(f"amount: {format_decimal(amount)} has more decimals than {currency} has",
                                 param="amount")
        status_read = invoice.status
        due = invoice.money("amount_due")
        applied = min(amount, due)
        excess = amount - applied
        entry = {
            "id": new_id("pay"), "method": method, "amount": format_amount(amount, currency),
            "applied": format_amount(applied, currency), "to_credit_balance": format_amount(excess, currency),
            "reference": reference, "received_at": isoformat(received_at or now), "request": digest,
            "created_at": isoformat(now),
        }
        invoice.set_payment_entries(invoice.payment_entries() + [entry])
        invoice.amount_paid = format_amount(invoice.money("amount_paid") + applied, currency)
        invoice.amount_due = format_amount(due - applied, currency)
        if due - applied == 0:
            invoice.status = "paid"
            invoice.paid_at = isoformat(now)
            invoice.next_payment_attempt = None
            invoice.set_due(None)
            close_unsent_attempt(invoice, "paid_out_of_band")
        also = _to_credit_balance(invoice, excess) if excess > 0 else None
        try:
            invoice_store.save(invoice, expected_status=status_read, also=also)
        except Conflict:
            continue
        if invoice.status == "paid":
            collecting.settle_subscription(invoice)
        return serialize(entry, invoice)
    raise Conflict("the invoice kept changing while the payment was recorded; read it again",
                   code="version_conflict")


def serialize(entry: dict, invoice: invoice_store.InvoiceRecord) -> dict:
    return {
        **invoices.public_payment(entry),
        "object": "payment",
        "currency": invoice.currency,
        "invoice_id": invoice.invoice_id,
        "customer_id": invoice.customer_id,
        "invoice": invoices.serialize(invoice),
    }


def customer_payments(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer page's payments, newest first, of every method: card
    payments (its invoices' succeeded attempts) and offline ones, read from
    its latest invoices (one Query of its item collection)."""
    records, _ = invoice_store.customer_invoices(merchant_id, customer_id, limit=INVOICES_ON_CUSTOMER_PAGE)
    found = []
    for record in records:
        found += payments_of_invoice(record)
    found.sort(key=lambda payment: (payment["received_at"] or "", payment["id"]), reverse=True)
    return found[:PAYMENTS_ON_CUSTOMER_PAGE]


def payments_of_invoice(record: invoice_store.InvoiceRecord) -> list[dict]:
    currency = record.currency
    common = {"object": "payment", "currency": currency, "invoice_id": record.invoice_id,
              "invoice_number": record.number}
    offline = record.payment_entries()
    found = [{**invoices.public_payment(entry), **common} for entry in offline]
    succeeded = [a for a in record.attempts() if a["status"] == "succeeded" and a.get("payment_intent")]
    if succeeded:
        by_card = record.money("amount_paid") - sum((Decimal(p["applied"]) for p in offline), ZERO)
        refunded = sum((Decimal(e["total"]) for e in record.credit_note_entries() if e["refund"] == "card"), ZERO)
        attempt = succeeded[-1]
        found.append({
            "id": attempt["payment_intent"], "method": "card", "amount": format_amount(by_card, currency),
            "applied": format_amount(by_card, currency), "to_credit_balance": format_amount(ZERO, currency),
            "reference": attempt["payment_intent"], "received_at": record.paid_at or attempt["at"],
            "created_at": attempt["at"], "amount_refunded": format_amount(refunded, currency), **common,
        })
    return found


def _payable(invoice: invoice_store.InvoiceRecord, now) -> invoice_store.InvoiceRecord:
    if invoice.status not in ("open", "uncollectible"):
        raise Conflict(f"the invoice is {invoice.status}: only an open or uncollectible invoice takes a payment",
                       code="invalid_state")
    if collecting.in_flight(invoice, now):
        raise Conflict("a charge of this invoice is in progress; look again in a few minutes", code="invalid_state")
    invoice = collecting.conclude_from_stripe(invoice, now)
    if invoice.status == "paid":
        raise Conflict("the card payment of this invoice went through: it is paid", code="invalid_state")
    last = collecting.last_attempt(invoice)
    if last is not None and last["status"] == "processing":
        raise Conflict("a card payment of this invoice is being processed by the bank", code="invalid_state")
    return invoice


def _to_credit_balance(invoice: invoice_store.InvoiceRecord, excess: Decimal):
    from chalicelib.store import customers as customer_store

    currency = invoice.currency
    before = collecting.customer_of(invoice.merchant_id, invoice.customer_id).credit_balance(currency)

    def also(write) -> None:
        customer_store.credit_balance_update(write, invoice.merchant_id, invoice.customer_id, currency,
                                             before, before + excess)

    return also
