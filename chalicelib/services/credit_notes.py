"""Credit notes: `POST /invoices/{id}/credit-notes`, reading, listing, the PDF.

A credit note on an `open` (or uncollectible) invoice lowers its amount due
(nothing was paid to give back: `refund` must be `none`); one that leaves
nothing due makes it paid, as a payment would. On a `paid` invoice the
credited total goes back to the card (a Stripe Refund of the invoice's
succeeded PaymentIntent), to the customer's credit balance (used first by
the next invoices), or nowhere (`none`: settled outside).

Exactly once, whatever is retried:
- the credit note, its number, the invoice's new amounts (and the credit
  balance) are one transaction conditional on the invoice's version
  (store/credit_notes.issue): two credit notes racing on one invoice are
  checked one after the other against what is left to credit;
- a card refund is recorded `pending` in that transaction, before Stripe is
  asked; Stripe is asked with the idempotency key `credit-note-{id}-refund`
  and the credit note's id in the refund's metadata, and the outcome is
  written once (only while pending);
- the request's Idempotency-Key is kept (as a digest) on the invoice's list
  of its credit notes: the same request retried after a failure (Stripe
  unreachable, a crash) finds the credit note it made, looks for its refund
  at Stripe, and makes it only if Stripe has none. An answer below 500 is
  replayed by the API's idempotency layer without coming here.
"""
from __future__ import annotations

import hashlib
from decimal import Decimal

from chalicelib.clock import clock, isoformat
from chalicelib.domain import credit_notes as rules
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.ids import new_id
from chalicelib.observability import logger
from chalicelib.services import collecting, invoices
from chalicelib.store import credit_notes as store
from chalicelib.store import invoices as invoice_store

REASONS = ("duplicate", "product_unsatisfactory", "order_change", "goodwill")
REFUNDS = ("card", "credit_balance", "none")
ON_CUSTOMER_PAGE = 10
ATTEMPTS = 4


def request_digest(merchant_id: str, target_id: str, key: str | None) -> str | None:
    """What an invoice keeps of the Idempotency-Key that made a credit note or a payment."""
    if not key:
        return None
    return hashlib.sha256(f"{merchant_id}|{target_id}|{key}".encode()).hexdigest()[:32]


def create_credit_note(merchant_id: str, invoice_id: str, *, reason: str, refund: str, memo: str | None,
                       lines: list[tuple[str, Decimal]] | None, amount: Decimal | None,
                       request_key: str | None = None) -> dict:
    digest = request_digest(merchant_id, invoice_id, request_key)
    now = clock().now()
    for _ in range(ATTEMPTS):
        invoice = invoice_store.get_invoice(merchant_id, invoice_id)
        done = next((e for e in invoice.credit_note_entries() if digest and e.get("request") == digest), None)
        if done is not None:
            return serialize(_refund_if_pending(_get(merchant_id, done["id"]), resume=True))
        invoice = _settled_with_stripe(invoice, now)
        note, also = _prepare(invoice, reason=reason, refund=refund, memo=memo, lines=lines, amount=amount,
                              digest=digest, now=now)
        status_read = invoice.status
        entries = invoice.credit_note_entries()
        entry = _entry(note, lines, digest)
        _apply_to_invoice(invoice, note, now)

        def show_number(number: str) -> None:
            invoice.set_credit_note_entries(entries + [{**entry, "number": number}])

        merchant = collecting.merchant_settings(merchant_id)
        try:
            store.issue(note, invoice, prefix=merchant.invoice_prefix, year=_year(now, merchant),
                        expected_status=[status_read], before_write=show_number, also=also)
        except Conflict:
            continue
        _settled(invoice, became_paid=status_read != "paid" and invoice.status == "paid")
        return serialize(_refund_if_pending(note, resume=False))
    raise Conflict("the invoice kept changing while the credit note was issued; read it again",
                   code="version_conflict")


def get_credit_note(merchant_id: str, credit_note_id: str) -> dict:
    return serialize(_get(merchant_id, credit_note_id))


def list_credit_notes(merchant_id: str, *, customer_id: str | None, invoice_id: str | None, limit: int,
                      cursor: str | None) -> tuple[list[dict], str | None]:
    """The merchant's credit notes, newest first, by customer and/or invoice
    (both read in the customer's item collection); never a scan."""
    if customer_id is not None and not _looks_like(customer_id, "cus_"):
        raise InvalidRequest("customer_id: not a customer id (cus_...)", param="customer_id")
    if invoice_id is not None and not _looks_like(invoice_id, "inv_"):
        raise InvalidRequest("invoice_id: not an invoice id (inv_...)", param="invoice_id")
    if invoice_id is not None:
        invoice = invoice_store.find_invoice(merchant_id, invoice_id, consistent=False)
        if invoice is None or (customer_id is not None and customer_id != invoice.customer_id):
            return [], None
        customer_id = invoice.customer_id
    if customer_id is not None:
        records, next_cursor = store.customer_credit_notes(merchant_id, customer_id, limit=limit, cursor=cursor,
                                                           invoice_id=invoice_id)
    else:
        records, next_cursor = store.merchant_credit_notes(merchant_id, limit=limit, cursor=cursor)
    return [serialize(record) for record in records], next_cursor


def customer_credit_notes(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer page's latest credit notes."""
    records, _ = store.customer_credit_notes(merchant_id, customer_id, limit=ON_CUSTOMER_PAGE)
    return [serialize(record) for record in records]


def credit_note_pdf(merchant_id: str, credit_note_id: str) -> tuple[bytes, str]:
    from chalicelib.services.invoice_pdf import language_of, render_credit_note_pdf

    record = _get(merchant_id, credit_note_id)
    seller = record.party("seller")
    invoice = invoice_store.find_invoice(merchant_id, record.invoice_id, consistent=False)
    document = render_credit_note_pdf(serialize(record), seller, record.party("buyer"),
                                      language=language_of(record.locale),
                                      timezone=seller.get("timezone") or "UTC",
                                      invoice=None if invoice is None else invoices.serialize(invoice))
    return document, f"{record.number}.pdf"


def serialize(record: store.CreditNoteRecord) -> dict:
    card = record.refund == "card"
    return {
        "id": record.credit_note_id,
        "object": "credit_note",
        "number": record.number,
        "status": "issued",
        # Stripe's words: before payment it lowers what is due; after, it gives money back.
        "type": "post_payment" if record.invoice_status == "paid" else "pre_payment",
        "invoice_id": record.invoice_id,
        "invoice_number": record.invoice_number,
        "customer_id": record.customer_id,
        "subscription_id": record.subscription_id,
        "currency": record.currency,
        "reason": record.reason,
        "memo": record.memo,
        "lines": record.line_items(),
        "subtotal": record.subtotal,
        "tax": record.tax_lines(),
        "total": record.total,
        "reverse_charge": bool(record.reverse_charge),
        "refund": record.refund,
        "refund_status": record.refund_status if card else None,
        "stripe_refund_id": record.refund_id if card else None,
        "refund_failure_code": record.refund_failure if card else None,
        "created_at": record.created_at,
    }


# ---------------------------------------------------------------------------


def _get(merchant_id: str, credit_note_id: str) -> store.CreditNoteRecord:
    record = store.find_credit_note(merchant_id, credit_note_id)
    if record is None:
        raise NotFound(f"no credit note {credit_note_id}")
    return record


def _settled_with_stripe(invoice: invoice_store.InvoiceRecord, now) -> invoice_store.InvoiceRecord:
    """The invoice as a credit note may change it: not draft or void, no
    charge in flight, an unconcluded attempt first concluded as Stripe has it
    (the invoice may turn out paid)."""
    if invoice.status in ("draft", "void"):
        raise Conflict(f"the invoice is {invoice.status}: only an open or paid invoice is credited",
                       code="invalid_state")
    if invoice.status in ("open", "uncollectible"):
        if collecting.in_flight(invoice, now):
            raise Conflict("a charge of this invoice is in progress; look again in a few minutes",
                           code="invalid_state")
        invoice = collecting.conclude_from_stripe(invoice, now)
        last = collecting.last_attempt(invoice)
        if invoice.status != "paid" and last is not None and last["status"] == "processing":
            raise Conflict("a payment of this invoice is being processed by the bank; credit it once it is "
                           "concluded", code="invalid_state")
    return invoice


def _prepare(invoice, *, reason, refund, memo, lines, amount, digest, now):
    """The credit note for `invoice` (checked against what is left to credit
    and how it can be given back) and what its transaction adds."""
    currency = invoice.currency
    paid = invoice.status == "paid"
    if not paid and refund != "none":
        raise InvalidRequest(f"refund: the invoice is {invoice.status}, nothing was paid to give back; "
                             "a credit note lowers its amount due (refund: none)", param="refund")
    entries = invoice.credit_note_entries()
    amounts = rules.credit_amounts(
        currency=currency, invoice_lines=invoices.lines_with_ids(invoice), invoice_tax=invoice.tax_lines(),
        invoice_subtotal=invoice.money("subtotal"), invoice_total=invoice.money("total"),
        credited=_credited(entries), lines=lines, amount=amount,
        description=f"Credit on invoice {invoice.number}",
    )
    param = "lines" if lines is not None else "amount"
    due = invoice.money("amount_due")
    if not paid and amounts.total > due:
        raise InvalidRequest(f"{param}: the credit note's total {format_amount(amounts.total, currency)} is more "
                             f"than the invoice's amount due ({format_amount(due, currency)})", param=param)
    payment_intent = None
    if refund == "card":
        payment_intent, refundable = _card_refundable(invoice, entries)
        if payment_intent is None:
            raise InvalidRequest("refund: the invoice was not paid by card; refund to credit_balance or none",
                                 param="refund")
        if amounts.total > refundable:
            raise InvalidRequest(f"refund: the card paid {format_amount(refundable, currency)} that is not yet "
                                 f"refunded, less than the credit note's total "
                                 f"{format_amount(amounts.total, currency)}", param="refund")
    credit_note_id = new_id("cn")
    note = store.CreditNoteRecord(
        *store.CreditNoteRecord.key(invoice.merchant_id, credit_note_id), credit_note_id=credit_note_id,
        merchant_id=invoice.merchant_id, invoice_id=invoice.invoice_id, invoice_number=invoice.number,
        customer_id=invoice.customer_id, subscription_id=invoice.subscription_id, currency=currency,
        reason=reason, memo=memo, lines=_json(amounts.lines_as_dicts()), tax=_json(amounts.tax_as_dicts()),
        subtotal=format_amount(amounts.subtotal, currency), tax_amount=format_amount(amounts.tax_amount, currency),
        total=format_amount(amounts.total, currency), invoice_status=invoice.status, refund=refund,
        refund_status="pending" if refund == "card" else None, payment_intent=payment_intent,
        reverse_charge=bool(invoice.reverse_charge), seller=invoice.seller, buyer=invoice.buyer,
        locale=invoice.locale or "en", request=digest, created_at=isoformat(now), version=1,
    )
    also = None
    if refund == "credit_balance":
        from chalicelib.store import customers as customer_store

        before = collecting.customer_of(invoice.merchant_id, invoice.customer_id).credit_balance(currency)

        def also(write) -> None:
            customer_store.credit_balance_update(write, invoice.merchant_id, invoice.customer_id, currency,
                                                 before, before + amounts.total)
    return note, also


def _credited(entries: list[dict]) -> rules.Credited:
    tax: dict[str, Decimal] = {}
    lines: dict[str, Decimal] = {}
    for entry in entries:
        for line in entry.get("tax") or []:
            tax[line["rate"]] = tax.get(line["rate"], ZERO) + Decimal(line["amount"])
        for line_id, amount in (entry.get("lines") or {}).items():
            lines[line_id] = lines.get(line_id, ZERO) + Decimal(amount)
    return rules.Credited(
        subtotal=sum((Decimal(e["subtotal"]) for e in entries), ZERO), tax=tax,
        total=sum((Decimal(e["total"]) for e in entries), ZERO), lines=lines,
    )


def _card_refundable(invoice, entries: list[dict]) -> tuple[str | None, Decimal]:
    """The PaymentIntent that paid the invoice, and what of it is not yet refunded."""
    succeeded = [a for a in invoice.attempts() if a["status"] == "succeeded" and a.get("payment_intent")]
    if not succeeded:
        return None, ZERO
    offline = sum((Decimal(p["applied"]) for p in invoice.payment_entries()), ZERO)
    by_card = invoice.money("amount_paid") - offline
    refunded = sum((Decimal(e["total"]) for e in entries if e["refund"] == "card"), ZERO)
    return succeeded[-1]["payment_intent"], by_card - refunded


def _entry(note: store.CreditNoteRecord, lines, digest: str | None) -> dict:
    credited_lines: dict[str, str] = {}
    for line in note.line_items():
        if line["invoice_line_id"]:
            previous = Decimal(credited_lines.get(line["invoice_line_id"], "0"))
            credited_lines[line["invoice_line_id"]] = format_amount(previous + Decimal(line["amount"]),
                                                                    note.currency)
    return {"id": note.credit_note_id, "number": None, "subtotal": note.subtotal, "tax": note.tax_lines(),
            "total": note.total, "refund": note.refund, "lines": credited_lines, "request": digest,
            "created_at": note.created_at}


def _apply_to_invoice(invoice, note: store.CreditNoteRecord, now) -> None:
    currency = invoice.currency
    total = Decimal(note.total)
    credited = Decimal(invoice.amount_credited or "0") + total
    invoice.amount_credited = format_amount(credited, currency)
    if invoice.status == "paid":
        return
    due = invoice.money("amount_due") - total
    invoice.amount_due = format_amount(due, currency)
    if due == 0:
        # Nothing left to pay: paid, as Stripe marks a fully credited invoice.
        invoice.status = "paid"
        invoice.paid_at = isoformat(now)
        invoice.next_payment_attempt = None
        invoice.set_due(None)
        close_unsent_attempt(invoice, "invoice_credited")


def close_unsent_attempt(invoice, code: str) -> None:
    """An attempt Stripe has no PaymentIntent for (its worker died before
    charging) is closed when the invoice is settled otherwise: nothing will
    charge it."""
    attempts = invoice.attempts()
    if attempts and attempts[-1]["status"] == "pending":
        attempts[-1].update(status="failed", failure_code=code)
        invoice.set_attempts(attempts)


def _settled(invoice, *, became_paid: bool) -> None:
    """A credit note that leaves nothing due settles the invoice's subscription
    (the events of both are derived from their writes: services/domain_events.py)."""
    if became_paid:
        collecting.settle_subscription(invoice)


def _refund_if_pending(note: store.CreditNoteRecord, *, resume: bool) -> store.CreditNoteRecord:
    """Give the credit note's total back to the card, once. `resume`: an
    earlier call may have reached Stripe; its refund is looked for first."""
    from chalicelib import payments

    if note.refund != "card" or note.refund_status != "pending" or note.refund_id:
        return note
    found = None
    if resume:
        found = next((r for r in payments.find_refunds(note.payment_intent)
                      if r.metadata.get("credit_note_id") == note.credit_note_id), None)
    if found is None:
        try:
            found = payments.refund(
                note.payment_intent, idempotency_key=f"credit-note-{note.credit_note_id}-refund",
                amount=Decimal(note.total), currency=note.currency,
                metadata={"credit_note_id": note.credit_note_id, "invoice_id": note.invoice_id,
                          "merchant_id": note.merchant_id},
            )
        except payments.PaymentError as error:
            if error.retryable:
                logger.warning("credit note refund not made yet", extra={"credit_note_id": note.credit_note_id})
                # A 5xx is not kept by the idempotency layer: the same request
                # retried with its key comes back here and finishes the refund.
                raise payments.Unavailable("the credit note is issued but its refund could not be made now; "
                                           "send the same request again (same Idempotency-Key)") from error
            logger.error("credit note refund refused by Stripe",
                         extra={"credit_note_id": note.credit_note_id, "code": error.code})
            store.record_refund(note, status="failed", refund_id=None, failure=error.code)
            return _get(note.merchant_id, note.credit_note_id)
    status = found.status if found.status in ("succeeded", "pending", "failed", "canceled") else "pending"
    if not store.record_refund(note, status=status, refund_id=found.id):
        return _get(note.merchant_id, note.credit_note_id)
    return note


def _year(now, merchant) -> int:
    from zoneinfo import ZoneInfo

    return now.astimezone(ZoneInfo(merchant.timezone or "UTC")).year


def _looks_like(value: str, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith(prefix) and 4 < len(value) <= 64 and value.isascii()


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
