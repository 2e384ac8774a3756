"""Collecting: one PaymentIntent per attempt, dunning, and payments news.

An issued invoice with an amount due leaves its finalizing transaction with
attempt 1 `pending` and leased (`first_attempt`); `collect` makes it.

Exactly one charge per invoice, whatever is retried:
- attempt n is recorded (pending, with a lease: the invoice's `due_at`)
  before its PaymentIntent is made, with the idempotency key
  `invoice-{id}-attempt-{n}`; whoever finds it still pending after the
  lease (the dunning run, a retried message) first looks for its
  PaymentIntent (recorded, or found at Stripe by the invoice in its
  metadata) and makes one only if none exists (Stripe forgets a key
  after 24 h: the lease and this lookup keep one charge beyond it);
- the outcome is written on the invoice (paid, or failed with the next
  retry from the merchant's `dunning_retry_days`), then the subscription
  follows (`active`, `past_due`, or `canceled` when the last retry failed).

Stripe is reached only through chalicelib.payments (or the gateway handed
to `use_gateway`, for the benchmark's counting fake).
"""
from __future__ import annotations

import contextlib
import contextvars
import random
import threading
import time
from datetime import datetime, timedelta

from chalicelib import outcomes
from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain import dunning, lifecycle
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.observability import logger
from chalicelib.services import invoices
from chalicelib.services import subscription_changes as changes
from chalicelib.store import invoices as store
from chalicelib.store.due import due_items, due_key


# An attempt in flight belongs to whoever started it for this long; after it
# the dunning run (or a retried message) resumes it. Longer than a worker
# can live (its timeout), shorter than the billing queue's visibility
# timeout (360 s), so a redelivered message finds the lease expired.
LEASE = timedelta(minutes=5)


# A PaymentIntent still `processing` (a bank that answers later) is looked
# at again after this, in case its webhook never comes.
PROCESSING_CHECK = timedelta(hours=1)


# A warm worker bills many subscriptions of one merchant in a row: its
# settings (tax rates, prefix, retry days) are read once a minute.
MERCHANT_CACHE_SECONDS = 60


# Retries of a rate-limited charge inside one invocation (Stripe refused it
# outright, so it is safe to send again with the same idempotency key): at
# most ~32 s of pauses (half that on average), inside the worker's 60 s
# timeout. A message whose retries run out waits out the queue's visibility
# timeout (360 s), and a few such at the end of a run stretch the run by
# that much: with 6 retries a 100,000-subscription run at 25 workers took
# 1.09x Stripe's floor, with 10 1.05x (docs/performance.md, "Billing").
RATE_LIMIT_RETRIES = 10


RATE_LIMIT_PAUSE_CAP = 4.0


# A charge made inside an API request (a subscription created or changed,
# pay-now, a card saved) answers within API Gateway's 29 s: it retries a
# rate-limited charge this many times (under 2 s of pauses), then leaves the
# attempt, pending and leased, to the dunning run, and the request says 429.
INTERACTIVE_RATE_LIMIT_RETRIES = 3
_interactive = contextvars.ContextVar("interactive_collection", default=False)


@contextlib.contextmanager
def interactive():
    """Charges made inside the block answer a waiting request: few retries."""
    token = _interactive.set(True)
    try:
        yield
    finally:
        _interactive.reset(token)


_gateway = None


def use_gateway(gateway) -> None:
    """Charge through `gateway` (an object with chalicelib.payments' charge
    functions) instead of Stripe; None goes back to Stripe."""
    global _gateway
    _gateway = gateway


def gateway():
    if _gateway is not None:
        return _gateway
    from chalicelib import payments

    return payments


_merchants: dict[str, tuple[float, object]] = {}


_merchants_lock = threading.Lock()


def merchant_settings(merchant_id: str):
    from chalicelib.store import merchants as merchant_store

    now = time.monotonic()
    with _merchants_lock:
        hit = _merchants.get(merchant_id)
    if hit is not None and now - hit[0] < MERCHANT_CACHE_SECONDS:
        return hit[1]
    record = merchant_store.get_merchant(merchant_id)
    with _merchants_lock:
        _merchants[merchant_id] = (now, record)
        if len(_merchants) > 1000:
            _merchants.pop(next(iter(_merchants)))
    return record


def forget_cached_merchant(merchant_id: str) -> None:
    """Read the merchant's settings again on next use (a change through the API)."""
    with _merchants_lock:
        _merchants.pop(merchant_id, None)


def customer_of(merchant_id: str, customer_id: str):
    from chalicelib.store import customers as customer_store

    return customer_store.get_customer(merchant_id, customer_id, consistent=True)


def _retry_days(merchant) -> list[int]:
    return [int(d) for d in (merchant.dunning_retry_days or [])]


def due_collection_messages(now: datetime) -> list[dict]:
    """One message per invoice whose next payment attempt (or whose
    in-flight attempt's lease) is due by `now`."""
    messages = []
    for pk, sk, _ in due_items(now, ("invoice",)):
        merchant_id, invoice_id = pk.split("#", 1)
        messages.append({"type": "collect_invoice", "merchant_id": merchant_id, "invoice_id": invoice_id})
    return messages


def collect_due_invoice(merchant_id: str, invoice_id: str, *, now: datetime | None = None) -> dict:
    """The dunning run's message: charge the invoice if its next attempt is
    due (or resume an attempt whose lease expired). Anything else (paid,
    void, not due yet, a fresh attempt in flight) is left as it is."""
    now = now or clock().now()
    invoice = store.find_invoice(merchant_id, invoice_id)
    if invoice is None or invoice.status != "open" or invoice.due_at is None or invoice.due_at > due_key(now):
        return invoices.brief(invoice, invoice_id)
    last = last_attempt(invoice)
    if last is not None and last["status"] in ("pending", "processing"):
        return invoices.brief(collect(invoice, resume=True, now=now))
    return invoices.brief(start_attempt_and_collect(invoice, now))


def reconcile_payment(payment_intent: dict) -> dict | None:
    """A `payment_intent.succeeded` or `payment_intent.payment_failed`
    webhook: record on its invoice what Stripe says of that attempt.

    Idempotent: an attempt already concluded the same way changes nothing,
    and a payment is counted once (a paid invoice is never paid again; a
    second PaymentIntent succeeding for a paid invoice is logged for a
    refund, never added). PaymentIntents that are not our invoices' are
    ignored."""
    return record_payment(gateway().payment_of(payment_intent))


def record_payment(payment) -> dict | None:
    """What Stripe says of one PaymentIntent (a webhook's, or one a page had
    the customer confirm and we read back), recorded on its invoice once."""
    merchant_id = payment.metadata.get("merchant_id")
    invoice_id = payment.invoice_id
    if not merchant_id or not invoice_id:
        return None
    invoice = store.find_invoice(merchant_id, invoice_id)
    if invoice is None:
        logger.warning("payment for an unknown invoice", extra={"payment_intent": payment.id, "invoice_id": invoice_id})
        return None
    now = clock().now()
    for _ in range(3):
        try:
            return invoices.brief(_apply_payment(invoice, payment, now))
        except Conflict:
            invoice = store.get_invoice(merchant_id, invoice_id)
    raise Conflict("the invoice kept changing while its payment was recorded; Stripe will deliver again")


def first_attempt(invoice: store.InvoiceRecord, customer, merchant, now: datetime) -> None:
    """How the invoice leaves its finalizing transaction: paid at once when
    nothing is due; with a failed attempt and its retry scheduled when there
    is no card to charge; else with attempt 1 pending, leased to this worker."""
    if invoice.money("amount_due") <= 0:
        invoice.status = "paid"
        invoice.paid_at = isoformat(now)
        return
    invoice.status = "open"
    if not card_of(customer):
        _record_failure(invoice, 1, None, "no_payment_method", now, merchant)
        return
    invoice.set_attempts([_attempt(1, now, "pending")])
    invoice.set_due(now + LEASE)


def invoice_issued(invoice: store.InvoiceRecord, subscription) -> None:
    if invoice.status == "paid":
        if subscription.status in ("incomplete", "past_due"):
            settle_subscription(invoice)
        return
    last = last_attempt(invoice)
    if last is not None and last["status"] == "failed":
        _alert_payment_failed(invoice)
        if subscription.status == "active":
            _subscription_outcome(invoice, "payment_failed")


def has_pending_attempt(invoice: store.InvoiceRecord) -> bool:
    last = last_attempt(invoice)
    return invoice.status == "open" and last is not None and last["status"] == "pending"


def last_attempt(invoice: store.InvoiceRecord | None) -> dict | None:
    if invoice is None:
        return None
    attempts = invoice.attempts()
    return attempts[-1] if attempts else None


def in_flight(invoice: store.InvoiceRecord, now: datetime) -> bool:
    """An attempt started and not concluded, whose lease has not run out."""
    last = last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return False
    return invoice.due_at is not None and invoice.due_at > due_key(now)


def _attempt(number: int, now: datetime, status: str) -> dict:
    return {"attempt": number, "at": isoformat(now), "status": status, "payment_intent": None, "failure_code": None}


def start_attempt_and_collect(invoice: store.InvoiceRecord, now: datetime, *, customer=None) -> store.InvoiceRecord:
    """Record a new attempt (pending, leased) on an open or uncollectible
    invoice, then make it. Conflict when someone else changed the invoice
    meanwhile (they may have started one: never two at once)."""
    attempts = invoice.attempts()
    if attempts and attempts[-1]["status"] in ("pending", "processing") and in_flight(invoice, now):
        return invoice
    if attempts and attempts[-1]["status"] == "pending":
        # An abandoned attempt: conclude it first (it may have charged).
        invoice = collect(invoice, resume=True, now=now, customer=customer)
        if invoice.status != "open":
            return invoice
        attempts = invoice.attempts()
    expected = invoice.status
    attempts.append(_attempt(len(attempts) + 1, now, "pending"))
    invoice.set_attempts(attempts)
    invoice.set_due(now + LEASE)
    store.save(invoice, expected_status=expected)
    return collect(invoice, resume=False, now=now, customer=customer)


def collect(invoice: store.InvoiceRecord, *, resume: bool, now: datetime, customer=None,
             subscription_status: str | None = None) -> store.InvoiceRecord:
    """Make the invoice's last attempt (pending) and record its outcome.

    `resume`: the attempt was started earlier by someone who may have
    reached Stripe; its PaymentIntent is looked for (recorded on the
    invoice, or at Stripe by the invoice in its metadata) before one is
    made. A fresh attempt this caller just recorded needs no lookup: its
    conditional write proves nobody else started it. `subscription_status`,
    when the caller knows it, spares reading the subscription when the
    outcome cannot change it."""
    from chalicelib import payments

    last = last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return invoice
    number = int(last["attempt"])
    customer = customer or customer_of(invoice.merchant_id, invoice.customer_id)
    card = card_of(customer)
    pay = gateway()
    payment = None
    if resume:
        payment = _payment_of_attempt(pay, customer, invoice, last)
        if payment is None and last["status"] == "processing":
            return invoice
    retry = None
    if payment is None and resume and card and customer.stripe_customer_id:
        # Nothing was charged for this attempt: whoever takes the lease
        # again charges, under a key of its own (payments.charge_idempotency_key).
        # Two resumers at once (a redelivered message and the dunning run)
        # cannot both win the lease, so only one charges.
        invoice.set_due(now + LEASE)
        try:
            store.save(invoice, expected_status="open")
        except Conflict:
            return store.get_invoice(invoice.merchant_id, invoice.invoice_id)
        retry = int(invoice.version)
    if payment is None:
        if not card or not customer.stripe_customer_id:
            return _conclude(invoice, number, None, "failed", "no_payment_method", now, subscription_status)
        try:
            payment = _charge(pay, invoice, number, customer.stripe_customer_id, card, retry)
        except (payments.Declined, payments.AuthenticationRequired) as error:
            code = getattr(error, "decline_code", None) or error.code
            intent = error.payment_intent_id or _intent_of_attempt(pay, customer, invoice, number)
            return _conclude(invoice, number, intent, "failed", code, now, subscription_status)
    return _conclude_as_stripe_says(invoice, number, payment, now, subscription_status)


def conclude_from_stripe(invoice: store.InvoiceRecord, now: datetime) -> store.InvoiceRecord:
    """An attempt started and not concluded (its worker died after Stripe
    answered, or the bank is still processing it), recorded as Stripe has
    it: succeeded (the invoice is then paid), failed, or processing. Never
    charges: an attempt Stripe never received stays pending, for the
    caller to decide. Pay-now, a new card and void ask this first, so a
    charge Stripe may still complete is never doubled, nor an invoice
    voided while Stripe holds its money."""
    last = last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return invoice
    customer = customer_of(invoice.merchant_id, invoice.customer_id)
    payment = _payment_of_attempt(gateway(), customer, invoice, last)
    if payment is None:
        return invoice
    return _conclude_as_stripe_says(invoice, int(last["attempt"]), payment, now)


def _payment_of_attempt(pay, customer, invoice: store.InvoiceRecord, attempt: dict):
    """The PaymentIntent of an attempt: recorded on it, or found at Stripe
    by the invoice and attempt in its metadata; None when Stripe has none."""
    if attempt.get("payment_intent"):
        return pay.retrieve_payment(attempt["payment_intent"])
    if not customer.stripe_customer_id:
        return None
    found = [p for p in pay.find_invoice_payments(customer.stripe_customer_id, invoice.invoice_id)
             if p.attempt == int(attempt["attempt"])]
    return found[-1] if found else None


def _conclude_as_stripe_says(invoice: store.InvoiceRecord, number: int, payment, now: datetime,
                             subscription_status: str | None = None) -> store.InvoiceRecord:
    if payment.status == "succeeded":
        return _conclude(invoice, number, payment.id, "succeeded", None, now, subscription_status)
    if payment.status == "processing":
        return _conclude(invoice, number, payment.id, "processing", None, now, subscription_status)
    if payment.status in ("requires_action", "requires_confirmation"):
        return _conclude(invoice, number, payment.id, "failed", "authentication_required", now,
                         subscription_status)
    return _conclude(invoice, number, payment.id, "failed", payment.failure_code or "card_declined", now,
                     subscription_status)


def _intent_of_attempt(pay, customer, invoice: store.InvoiceRecord, number: int) -> str | None:
    """The PaymentIntent of a refused attempt, when the refusal did not name
    it (localstripe's card errors do not): shown on the invoice's attempt."""
    try:
        found = [p for p in pay.find_invoice_payments(customer.stripe_customer_id, invoice.invoice_id)
                 if p.attempt == number]
    except Exception:  # only for display: the failure itself is what is recorded
        logger.warning("payment intent of a refused attempt not found", extra={"invoice_id": invoice.invoice_id})
        return None
    return found[-1].id if found else None


def _charge(pay, invoice: store.InvoiceRecord, number: int, stripe_customer_id: str, card: dict,
            retry: int | None = None):
    """The one Stripe write of an attempt. A 429 (Stripe refused it, nothing
    was done) is sent again after a pause with the same idempotency key; an
    unreachable Stripe is left to the lease (the next look finds out
    whether the charge happened)."""
    from chalicelib import payments

    # `retry`: the attempt resumed after nothing was charged under its own key.
    extra = {} if retry is None else {"retry": retry}
    retries = INTERACTIVE_RATE_LIMIT_RETRIES if _interactive.get() else RATE_LIMIT_RETRIES
    for pause in range(retries + 1):
        try:
            return pay.charge_invoice(
                invoice_id=invoice.invoice_id, merchant_id=invoice.merchant_id, attempt=number,
                amount=invoice.money("amount_due"), currency=invoice.currency,
                stripe_customer_id=stripe_customer_id, payment_method_id=card["payment_method_id"], **extra,
            )
        except payments.RateLimited:
            if pause == retries:
                raise
            time.sleep(rate_limit_pause(pause))
    raise AssertionError("unreachable")


def rate_limit_pause(retry: int, rng=random) -> float:
    """The pause before sending a rate-limited charge again: exponential
    back-off with full jitter, so that workers refused together do not come
    back together."""
    return rng.uniform(0, min(RATE_LIMIT_PAUSE_CAP, 0.25 * 2**retry))


def _conclude(invoice: store.InvoiceRecord, number: int, payment_intent: str | None, status: str,
              failure_code: str | None, now: datetime, subscription_status: str | None = None,
              ) -> store.InvoiceRecord:
    """Write the outcome of attempt `number`, then tell the subscription.
    A lost race re-reads the invoice: if the attempt was concluded by
    someone else (the webhook), that stands."""
    for _ in range(3):
        merchant = merchant_settings(invoice.merchant_id)
        attempts = invoice.attempts()
        if not attempts or int(attempts[-1]["attempt"]) != number or attempts[-1]["status"] not in (
            "pending", "processing"
        ):
            return invoice
        expected = invoice.status
        if status == "succeeded":
            _record_success(invoice, number, payment_intent, now)
        elif status == "processing":
            attempts[-1].update(status="processing", payment_intent=payment_intent)
            invoice.set_attempts(attempts)
            invoice.set_due(now + PROCESSING_CHECK)
        else:
            _record_failure(invoice, number, payment_intent, failure_code, now, merchant)
        try:
            store.save(invoice, expected_status=expected)
        except Conflict:
            invoice = store.get_invoice(invoice.merchant_id, invoice.invoice_id)
            continue
        _after_outcome(invoice, status, subscription_status)
        return invoice
    return invoice


def _record_success(invoice: store.InvoiceRecord, number: int, payment_intent: str | None, now: datetime) -> None:
    attempts = invoice.attempts()
    for attempt in attempts:
        if int(attempt["attempt"]) == number:
            attempt.update(status="succeeded", payment_intent=payment_intent, failure_code=None)
    invoice.set_attempts(attempts)
    currency = invoice.currency
    invoice.amount_paid = format_amount(invoice.money("amount_paid") + invoice.money("amount_due"), currency)
    invoice.amount_due = format_amount(ZERO, currency)
    invoice.status = "paid"
    invoice.paid_at = isoformat(now)
    invoice.next_payment_attempt = None
    invoice.set_due(None)


def _record_failure(invoice: store.InvoiceRecord, number: int, payment_intent: str | None,
                    failure_code: str | None, now: datetime, merchant) -> None:
    """Attempt `number` failed: the next retry by the merchant's schedule
    (counted from the first failure), or, when none is left, uncollectible."""
    attempts = invoice.attempts()
    if not any(int(a["attempt"]) == number for a in attempts):
        attempts.append(_attempt(number, now, "failed"))
    for attempt in attempts:
        if int(attempt["attempt"]) == number:
            attempt.update(status="failed", payment_intent=payment_intent, failure_code=failure_code)
    invoice.set_attempts(attempts)
    first = parse_instant(invoice.first_failure_at) if invoice.first_failure_at else now
    invoice.first_failure_at = isoformat(first)
    retry = dunning.next_attempt_at(first, _retry_days(merchant), now)
    if retry is None:
        invoice.status = "uncollectible"
        invoice.marked_uncollectible_at = isoformat(now)
        invoice.next_payment_attempt = None
        invoice.set_due(None)
    else:
        invoice.next_payment_attempt = isoformat(retry)
        invoice.set_due(retry)
        _with_payment_link(invoice)


def _after_outcome(invoice: store.InvoiceRecord, status: str, subscription_status: str | None = None) -> None:
    """Events, the payment link, and the subscription's state after an
    attempt's outcome. The subscription is read only when it may change:
    a paid invoice of an `active` subscription changes nothing."""
    if status == "succeeded":
        if subscription_status in (None, "incomplete", "past_due"):
            settle_subscription(invoice)
    elif status == "failed":
        _alert_payment_failed(invoice)
        if invoice.status == "uncollectible":
            _subscription_outcome(invoice, "payment_exhausted")
        elif subscription_status in (None, "active"):
            _subscription_outcome(invoice, "payment_failed")


def _apply_payment(invoice: store.InvoiceRecord, payment, now: datetime) -> store.InvoiceRecord:
    """What a webhook says of one PaymentIntent, recorded once."""
    number = payment.attempt
    attempts = invoice.attempts()
    mine = next((a for a in attempts if number is not None and int(a["attempt"]) == number), None)
    if payment.status == "succeeded":
        if invoice.status == "paid":
            if mine is None or mine.get("payment_intent") not in (None, payment.id):
                return refund_stray_payment(invoice, payment, "duplicate", now)
            return invoice
        if invoice.status == "void":
            return refund_stray_payment(invoice, payment, "invoice_void", now)
        if mine is None:
            attempts.append({**_attempt(number or len(attempts) + 1, now, "pending"), "payment_intent": payment.id})
            invoice.set_attempts(attempts)
            number = int(attempts[-1]["attempt"])
        expected = invoice.status
        _record_success(invoice, number, payment.id, now)
        store.save(invoice, expected_status=expected)
        _after_outcome(invoice, "succeeded")
        return invoice
    if payment.status in ("requires_payment_method", "canceled") and mine is not None:
        if mine["status"] not in ("pending", "processing") or invoice.status != "open":
            return invoice
        expected = invoice.status
        _record_failure(invoice, number, payment.id, payment.failure_code or "card_declined", now,
                        merchant_settings(invoice.merchant_id))
        store.save(invoice, expected_status=expected)
        _after_outcome(invoice, "failed")
    return invoice


def refund_stray_payment(invoice: store.InvoiceRecord, payment, reason: str, now: datetime) -> store.InvoiceRecord:
    """Money that reached an invoice which takes none (void, or paid by
    another PaymentIntent) goes back to the card, once: the refund is
    recorded on the invoice (pending) before Stripe is asked, so of two
    webhooks or workers at once only one asks; Stripe's idempotency key
    (the PaymentIntent's) covers a retry after a crash."""
    for _ in range(3):
        strays = invoice.refunded_strays()
        mine = next((r for r in strays if r["payment_intent"] == payment.id), None)
        if mine is not None and mine["status"] == "succeeded":
            return invoice
        if mine is not None:
            break  # recorded by a worker that died before Stripe answered: ask again, same key
        invoice.set_refunded_strays(strays + [{
            "payment_intent": payment.id, "amount": payment.amount, "reason": reason,
            "at": isoformat(now), "status": "pending", "refund": None}])
        try:
            store.save(invoice)
        except Conflict:
            invoice = store.get_invoice(invoice.merchant_id, invoice.invoice_id)
            continue
        logger.warning("money for an invoice that takes none; refunding it",
                       extra={"invoice_id": invoice.invoice_id, "payment_intent": payment.id, "reason": reason})
        break
    else:
        raise Conflict("the invoice kept changing while a stray payment was refunded; Stripe will deliver again")
    refund = gateway().refund(payment.id, idempotency_key=f"stray-{invoice.invoice_id}-{payment.id}")
    for _ in range(3):
        strays = invoice.refunded_strays()
        for entry in strays:
            if entry["payment_intent"] == payment.id:
                entry.update(status="succeeded", refund=refund.id)
        invoice.set_refunded_strays(strays)
        try:
            store.save(invoice)
        except Conflict:
            invoice = store.get_invoice(invoice.merchant_id, invoice.invoice_id)
            continue
        return invoice
    raise Conflict("the refund is made but not yet recorded on the invoice; Stripe will deliver again")


def resume_boundary_invoice(merchant_id: str, subscription_id: str, boundary: str,
                             now: datetime) -> store.InvoiceRecord | None:
    """A retried message for a boundary already issued: resume its charge
    if the worker that issued it died before concluding it."""
    try:
        at = parse_instant(boundary)
    except ValueError:
        return None
    for purpose in ("cycle", "queued"):
        invoice = store.find_invoice(merchant_id, store.invoice_id_for(merchant_id, subscription_id, at, purpose))
        if invoice is not None:
            break
    if invoice is None or invoice.status != "open" or in_flight(invoice, now):
        return None
    last = last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return None
    return collect(invoice, resume=True, now=now)


def _with_payment_link(invoice: store.InvoiceRecord) -> None:
    """A failed invoice whose customer must act (no card, a card refused,
    a bank asking for authentication) carries a payment link, which the
    alerts e-mail: set before the write that records the failure, so the
    invoice and its `invoice.payment_failed` event hold it (best effort: a
    link is a convenience; the failure is what must be written)."""
    from chalicelib.services import payment_links

    try:
        link = payment_links.create_payment_link(invoice.merchant_id, invoice.customer_id)
    except Exception:  # the link is a convenience; the invoice's state is what matters
        logger.exception("payment link not created", extra={"invoice_id": invoice.invoice_id})
        return
    invoice.payment_link_url = link["url"]
    invoice.payment_link_expires_at = link["expires_at"]


def settle_subscription(invoice: store.InvoiceRecord) -> None:
    """The invoice no longer stands unpaid: its subscription is `active`
    again when no other invoice of it is still waiting on a failed charge."""
    if not invoice.subscription_id:
        return
    others = [
        other for other in store.open_invoices_of_customer(invoice.merchant_id, invoice.customer_id)
        if other.subscription_id == invoice.subscription_id and other.invoice_id != invoice.invoice_id
        and any(a["status"] == "failed" for a in other.attempts())
    ]
    if not others:
        _subscription_outcome(invoice, "payment_succeeded")


def _subscription_outcome(invoice: store.InvoiceRecord, action: str) -> None:
    if not invoice.subscription_id:
        return
    for _ in range(3):
        try:
            changes.system_transition(invoice.merchant_id, invoice.subscription_id, action)
            return
        except lifecycle.Refused as refused:
            logger.info("subscription unchanged by a payment", extra={"action": action, "reason": refused.reason})
            return
        except Conflict:
            continue
        except NotFound:
            return
    logger.warning("subscription outcome not recorded after retries",
                   extra={"subscription_id": invoice.subscription_id, "action": action})


def _alert_payment_failed(invoice: store.InvoiceRecord) -> None:
    """Operations hear of each failed attempt (services/alerts.py: once per
    invoice and attempt, queued; never raises)."""
    outcomes.report("payment_failed", invoices.serialize(invoice), invoice.merchant_id)


def card_of(customer) -> dict | None:
    card = customer.card()
    return card if card and card.get("payment_method_id") else None
