"""Invoices as the API shows them: listing, reading, the PDF.

Issuing (`services/issuing.py`) writes invoices, collecting
(`services/collecting.py`) charges them; this module only reads and
serializes, so both can show an invoice without importing each other.
"""
from __future__ import annotations

from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.store import invoices as store


LATEST_ON_CUSTOMER_PAGE = 5


def list_invoices(merchant_id: str, *, customer_id: str | None, subscription_id: str | None, status: str | None,
                  limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """The merchant's invoices, newest first, by customer, subscription
    and/or status; never a scan (see store/invoices.py)."""
    if status is not None and status not in store.STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(store.STATUSES)}", param="status")
    if customer_id is not None and not _looks_like(customer_id, "cus_"):
        raise InvalidRequest("customer_id: not a customer id (cus_...)", param="customer_id")
    if subscription_id is not None and not _looks_like(subscription_id, "sub_"):
        raise InvalidRequest("subscription_id: not a subscription id (sub_...)", param="subscription_id")
    if subscription_id is not None:
        from chalicelib.store import subscriptions as subscription_store

        try:
            subscription = subscription_store.get_subscription(merchant_id, subscription_id)
        except NotFound:
            return [], None
        if customer_id is not None and customer_id != subscription.customer_id:
            return [], None
        customer_id = subscription.customer_id
    if customer_id is not None:
        records, next_cursor = store.customer_invoices(
            merchant_id, customer_id, limit=limit, cursor=cursor, subscription_id=subscription_id, status=status
        )
    else:
        records, next_cursor = store.invoices_by_status(
            merchant_id, [status] if status else store.STATUSES, limit=limit, cursor=cursor
        )
    return [serialize(record) for record in records], next_cursor


def get_invoice(merchant_id: str, invoice_id: str) -> dict:
    return serialize(store.get_invoice(merchant_id, invoice_id))


def latest_invoices(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer page's latest invoices, newest first."""
    return [serialize(record) for record in store.latest_for_customer(merchant_id, customer_id,
                                                                      LATEST_ON_CUSTOMER_PAGE)]


def open_invoices_of_subscription(merchant_id: str, customer_id: str, subscription_id: str) -> list[dict]:
    """The subscription's open invoices, oldest first."""
    return [serialize(record) for record in store.open_invoices_of_customer(merchant_id, customer_id)
            if record.subscription_id == subscription_id]


def invoice_pdf(merchant_id: str, invoice_id: str) -> tuple[bytes, str]:
    """The invoice as a PDF in its customer's language, and a file name for it."""
    from chalicelib.services.invoice_pdf import language_of, render_invoice_pdf

    record = store.get_invoice(merchant_id, invoice_id)
    seller = record.party("seller")
    buyer = record.party("buyer")
    language = language_of(record.locale)
    document = render_invoice_pdf(
        serialize(record), seller, buyer, language=language, timezone=seller.get("timezone") or "UTC"
    )
    return document, f"{record.number or record.invoice_id}.pdf"


def _looks_like(value: str, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith(prefix) and 4 < len(value) <= 64 and value.isascii()


def serialize(record: store.InvoiceRecord) -> dict:
    """API.md's invoice object (plus when it happened, why it exists, and a
    payment link when the customer has to act)."""
    return {
        "id": record.invoice_id,
        "object": "invoice",
        "number": record.number,
        "status": record.status,
        "billing_reason": record.billing_reason,
        "customer_id": record.customer_id,
        "subscription_id": record.subscription_id,
        "currency": record.currency,
        "period_start": record.period_start,
        "period_end": record.period_end,
        "lines": lines_with_ids(record),
        "subtotal": record.subtotal,
        "tax": record.tax_lines(),
        "credit_applied": record.credit_applied,
        "total": record.total,
        "amount_paid": record.amount_paid,
        "amount_due": record.amount_due,
        "reverse_charge": bool(record.reverse_charge),
        "amount_credited": record.amount_credited or format_amount(ZERO, record.currency),
        "credit_notes": [
            {"id": e["id"], "number": e["number"], "total": e["total"], "refund": e["refund"],
             "created_at": e["created_at"]}
            for e in record.credit_note_entries()
        ],
        "payments": [public_payment(e) for e in record.payment_entries()],
        "payment_attempts": [
            {"at": a["at"], "status": a["status"], "payment_intent": a.get("payment_intent"),
             "failure_code": a.get("failure_code")}
            for a in record.attempts()
        ],
        "next_payment_attempt": record.next_payment_attempt,
        "payment_link": (
            {"url": record.payment_link_url, "expires_at": record.payment_link_expires_at}
            if record.payment_link_url else None
        ),
        "created_at": record.created_at,
        "finalized_at": record.finalized_at,
        "paid_at": record.paid_at,
        "voided_at": record.voided_at,
        "marked_uncollectible_at": record.marked_uncollectible_at,
    }


def line_id(invoice_id: str, index: int) -> str:
    """The stable id of an invoice's line: lines are fixed once the invoice
    is finalized, so its position names it (`il_<invoice id suffix>_<index>`)."""
    return f"il_{invoice_id.split('_', 1)[-1]}_{index}"


def lines_with_ids(record: store.InvoiceRecord) -> list[dict]:
    """The invoice's lines as stored, each with its `id` first (a line that
    carries one keeps it)."""
    return [{"id": line.get("id") or line_id(record.invoice_id, index), **line}
            for index, line in enumerate(record.line_items())]


def public_payment(entry: dict) -> dict:
    """An offline payment as the invoice and the customer page show it."""
    return {key: entry.get(key) for key in ("id", "method", "amount", "applied", "to_credit_balance",
                                             "reference", "received_at", "created_at")}


def brief(record: store.InvoiceRecord | None, invoice_id: str | None = None) -> dict:
    if record is None:
        return {"id": invoice_id, "status": "not_found"}
    return {"id": record.invoice_id, "number": record.number, "status": record.status,
            "amount_due": record.amount_due}
