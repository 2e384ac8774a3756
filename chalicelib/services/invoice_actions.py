"""What is asked of an issued invoice outside the billing run: pay it now
(`POST /invoices/{id}/pay`), charge a customer's open invoices with the
card just saved, void it (`POST /invoices/{id}/void`).

Each first asks Stripe about an attempt left unconcluded whose lease ran
out (`collecting.conclude_from_stripe`): a charge Stripe accepted, or one
a bank is still processing, is never made a second time, and an invoice
is never voided while Stripe holds its money.
"""
from __future__ import annotations

from datetime import datetime

from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import Conflict
from chalicelib.services import collecting, invoices
from chalicelib.store import invoices as store

IN_PROGRESS = "a charge of this invoice is in progress; look again in a few minutes"
PROCESSING = ("a payment of this invoice is being processed by the bank; its outcome comes within days "
              "and the invoice follows it")


def pay_invoice(merchant_id: str, invoice_id: str) -> dict:
    """`POST /invoices/{id}/pay`: charge now (a new attempt). 409 when the
    invoice is not open (or uncollectible), when a charge is in flight or
    being processed by the bank, or when the customer has no card; 402
    `card_error` when the card is declined (the attempt is recorded on the
    invoice). An earlier attempt Stripe turns out to have succeeded makes
    the invoice paid, and the answer shows it, without a new charge."""
    now = clock().now()
    invoice = _checked_with_stripe(store.get_invoice(merchant_id, invoice_id), now, "paid")
    if invoice.status == "paid":
        return invoices.serialize(invoice)
    customer = collecting.customer_of(merchant_id, invoice.customer_id)
    if invoice.money("amount_due") > 0 and not (customer.card() or {}).get("payment_method_id"):
        raise Conflict("the customer has no card: send it a payment link (POST /customers/{id}/payment-link)",
                       code="no_payment_method")
    with collecting.interactive():
        result = collecting.start_attempt_and_collect(invoice, now, customer=customer)
    last = collecting.last_attempt(result)
    if result.status != "paid" and last is not None and last["status"] == "failed":
        from chalicelib import payments

        raise payments.Declined(last.get("failure_code") or "card_declined", "the card was declined",
                                payment_intent_id=last.get("payment_intent"))
    return invoices.serialize(result)


def retry_open_invoices(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer has a new default card: charge its open invoices now,
    oldest first (each one a new attempt; an attempt in flight, or being
    processed by the bank, is left to finish). Returns what happened to each."""
    now = clock().now()
    results = []
    for invoice in store.open_invoices_of_customer(merchant_id, customer_id):
        try:
            invoice = _checked_with_stripe(invoice, now, "paid")
        except Conflict:
            results.append(invoices.brief(invoice, invoice.invoice_id))
            continue
        if invoice.status not in ("open", "uncollectible"):
            results.append(invoices.brief(invoice, invoice.invoice_id))
            continue
        try:
            with collecting.interactive():
                results.append(invoices.brief(collecting.start_attempt_and_collect(invoice, now)))
        except Conflict:
            results.append(invoices.brief(store.find_invoice(merchant_id, invoice.invoice_id), invoice.invoice_id))
    return results


def void_invoice(merchant_id: str, invoice_id: str) -> dict:
    """`POST /invoices/{id}/void`: an open invoice takes no money from now
    on. An attempt not concluded is first asked of Stripe: if Stripe took
    the money the invoice is `paid` and the answer is 409 (issue a credit
    note instead); while a charge is in flight or processed by the bank,
    409. Its number stays used (an issued number is never given again);
    credit it used goes back to the customer's balance. Money that reaches
    it later anyway is refunded (`collecting.refund_stray_payment`)."""
    now = clock().now()
    for _ in range(3):
        invoice = _checked_with_stripe(store.get_invoice(merchant_id, invoice_id), now, "voided")
        if invoice.status == "paid":
            raise Conflict("Stripe took this invoice's payment: it is paid and cannot be voided; "
                           "issue a credit note (POST /invoices/{id}/credit-notes)", code="invalid_state")
        if invoice.status != "open":
            raise Conflict(f"the invoice is {invoice.status}; only an open invoice can be voided",
                           code="invalid_state")
        _abandon_unsent_attempt(invoice)
        invoice.status = "void"
        invoice.voided_at = isoformat(now)
        invoice.next_payment_attempt = None
        invoice.set_due(None)
        try:
            _save_with_credit_back(invoice)
        except Conflict:
            continue
        if invoice.billing_reason != "subscription_create":
            # A void first invoice does not start the subscription: it stays incomplete.
            collecting.settle_subscription(invoice)
        return invoices.serialize(invoice)
    raise Conflict("the invoice kept changing; read it again", code="version_conflict")


def _checked_with_stripe(invoice: store.InvoiceRecord, now: datetime, action: str) -> store.InvoiceRecord:
    """The invoice once its last attempt is concluded as Stripe has it (it
    may then be paid, for the caller to answer); 409 when it cannot be
    `action` now: not open, a charge in flight, or a payment the bank processes."""
    takes = ("open",) if action == "voided" else ("open", "uncollectible")
    if invoice.status == "paid" and action == "voided":
        raise Conflict("the invoice is paid and cannot be voided; issue a credit note "
                       "(POST /invoices/{id}/credit-notes)", code="invalid_state")
    if invoice.status not in takes:
        raise Conflict(f"the invoice is {invoice.status}; only an open invoice can be {action}",
                       code="invalid_state")
    last = collecting.last_attempt(invoice)
    if collecting.in_flight(invoice, now) and last["status"] == "pending":
        # Leased to a worker that may be talking to Stripe. A `processing`
        # attempt's lease is only when to look again: Stripe is asked now.
        raise Conflict(IN_PROGRESS, code="invalid_state")
    invoice = collecting.conclude_from_stripe(invoice, now)
    last = collecting.last_attempt(invoice)
    if invoice.status != "paid" and last is not None and last["status"] == "processing":
        raise Conflict(PROCESSING, code="invalid_state")
    return invoice


def _abandon_unsent_attempt(invoice: store.InvoiceRecord) -> None:
    """An attempt Stripe has no PaymentIntent for (its worker died before
    charging) is closed with the void: nothing will charge it."""
    attempts = invoice.attempts()
    if attempts and attempts[-1]["status"] == "pending":
        attempts[-1].update(status="failed", failure_code="invoice_voided")
        invoice.set_attempts(attempts)


def _save_with_credit_back(invoice: store.InvoiceRecord) -> None:
    """Save a voided invoice; the credit it used goes back to the customer's balance with it."""
    applied = invoice.money("credit_applied")
    if not applied:
        store.save(invoice, expected_status="open")
        return
    from chalicelib.store import customers as customer_store

    before = collecting.customer_of(invoice.merchant_id, invoice.customer_id).credit_balance(invoice.currency)
    store.save(invoice, expected_status="open", also=lambda write: customer_store.credit_balance_update(
        write, invoice.merchant_id, invoice.customer_id, invoice.currency, before, before + applied))
