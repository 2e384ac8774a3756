"""Billing: one invoice per subscription boundary, charged exactly once.

The run (jobs.py) hands a worker one subscription; `bill_subscription`
issues every invoice it owes by now, in order, one per boundary (a
subscription several periods late catches up one invoice per missed
period), then charges them.

Order of the writes, so that a crash anywhere and a retry give one invoice
and one charge:
1. Everything an invoice holds is computed from the subscription as read
   (consistently, with the usage it already billed): the closed period's
   usage in arrears, late usage of earlier periods, the usage of periods
   closed while paused once resumed, the next period's fees in advance
   under the plan it will run on, and the invoices the subscription queued
   (`pending_invoice_items`: the first period's fees, an immediate change or
   cancellation, a resume).
2. One transaction gives the invoice its number and writes it open, moves
   the merchant's counter, moves the subscription to its next period (only
   from the version read), records the usage billed per period and the
   customer's credit balance. The invoice's id is derived from the
   subscription and the boundary: two workers, or a retried message, build
   the same invoice and only one transaction can commit. The invoice holds
   its first payment attempt, `pending`, with a lease (its `due_at`).
3. The charge: one PaymentIntent per attempt, with the idempotency key
   `invoice-{id}-attempt-{n}`. Attempt n is recorded before it is made, so
   whoever finds it still pending after its lease (the dunning run, a
   retried message) first looks for its PaymentIntent (recorded, or found
   at Stripe by the invoice in its metadata) and makes it only if none
   exists. localstripe ignores idempotency keys: the lease and this lookup
   are what keep one charge there too.
4. The outcome is written on the invoice (paid, or failed with the next
   retry from the merchant's `dunning_retry_days`), then the subscription
   follows (`active`, `past_due`, or `canceled` when the last retry failed).

Stripe is reached only through chalicelib.payments (or the gateway handed
to `use_gateway`, for the benchmark's counting fake).
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalicelib import notify
from chalicelib.clock import clock, isoformat
from chalicelib.domain import dunning, lifecycle, proration
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.invoices import InvoiceTotals, totals
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.domain.periods import Interval, Period, period_bounds, period_index_at
from chalicelib.domain.rating import InvoiceLine, MeterUsage, rate_fees, rate_late_usage, rate_usage
from chalicelib.observability import logger
from chalicelib.store import invoices as store

# An attempt in flight belongs to whoever started it for this long; after it
# the dunning run (or a retried message) resumes it. Longer than a worker
# can live (its timeout), shorter than the billing queue's visibility
# timeout (360 s), so a redelivered message finds the lease expired.
LEASE = timedelta(minutes=5)
# A PaymentIntent still `processing` (a bank that answers later) is looked
# at again after this, in case its webhook never comes.
PROCESSING_CHECK = timedelta(hours=1)
# How many boundaries one message catches up on; the rest is still due and
# comes back with the next run.
MAX_BOUNDARIES_PER_MESSAGE = 48
# A warm worker bills many subscriptions of one merchant in a row: its
# settings (tax rates, prefix, retry days) are read once a minute.
MERCHANT_CACHE_SECONDS = 60
LATEST_ON_CUSTOMER_PAGE = 5
# Retries of a rate-limited charge inside one invocation (Stripe refused it
# outright, so it is safe to send again with the same idempotency key): at
# most ~32 s of pauses (half that on average), inside the worker's 60 s
# timeout. A message whose retries run out waits out the queue's visibility
# timeout (360 s), and a few such at the end of a run stretch the run by
# that much: with 6 retries a 100,000-subscription run at 25 workers took
# 1.09x Stripe's floor, with 10 1.05x (docs/performance.md, "Billing").
RATE_LIMIT_RETRIES = 10
RATE_LIMIT_PAUSE_CAP = 4.0

REASON_BY_ITEM = {
    "opening": "subscription_create",
    "change": "subscription_update",
    "resume": "subscription_update",
    "cancel": "subscription_cancel",
}


# ---------------------------------------------------------------------------
# Collaborators


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


def _merchant(merchant_id: str):
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


def _customer(merchant_id: str, customer_id: str):
    from chalicelib.store import customers as customer_store

    return customer_store.get_customer(merchant_id, customer_id, consistent=True)


def _retry_days(merchant) -> list[int]:
    return [int(d) for d in (merchant.dunning_retry_days or [])]


# ---------------------------------------------------------------------------
# The billing run


def bill_subscription(merchant_id: str, subscription_id: str, *, boundary: str | None = None,
                      now: datetime | None = None) -> dict:
    """Issue every invoice the subscription owes by `now` (one per boundary,
    in order, with its queued invoices), then charge them. Safe to run any
    number of times, concurrently too: what was issued is not issued again.

    `boundary`: the boundary the message was enqueued for; if its invoice
    exists with a charge whose lease expired (a worker died), the charge is
    resumed here rather than waiting for the dunning run."""
    now = now or clock().now()
    issued: list[tuple[store.InvoiceRecord, object]] = []
    subscription = billed = None
    for _ in range(MAX_BOUNDARIES_PER_MESSAGE):
        if subscription is None:
            try:
                subscription, billed = store.subscription_for_billing(merchant_id, subscription_id)
            except NotFound:
                return {"subscription_id": subscription_id, "invoices": [], "status": "not_found"}
        try:
            outcome = _issue_next(subscription, billed, now)
        except Conflict:
            # Someone moved the subscription meanwhile (a change, another
            # worker): read it again and bill what is still due.
            subscription = billed = None
            continue
        if outcome is None:
            break
        if outcome.invoice is not None:
            issued.append((outcome.invoice, outcome.customer))
        subscription, billed = outcome.subscription, outcome.billed
    shown = []
    for invoice, customer in issued:
        if _has_pending_attempt(invoice):
            invoice = _collect(invoice, resume=False, now=now, customer=customer,
                               subscription_status=subscription.status)
        shown.append(invoice)
    if boundary and not issued:
        resumed = _resume_boundary_invoice(merchant_id, subscription_id, boundary, now)
        if resumed is not None:
            shown.append(resumed)
    return {
        "subscription_id": subscription_id,
        "invoices": [{"id": r.invoice_id, "number": r.number, "status": r.status, "total": r.total} for r in shown],
    }


def invoice_now(merchant_id: str, subscription_id: str) -> list[dict]:
    """Issue and charge now what the subscription owes now (an immediate
    change or cancellation queued its invoice): the same as the billing run
    would do at its next pass, without waiting for it. Returns the invoices
    issued, as the API shows them."""
    result = bill_subscription(merchant_id, subscription_id)
    return [get_invoice(merchant_id, item["id"]) for item in result["invoices"]]


def due_billing_messages(now: datetime) -> list[dict]:
    """One message per subscription whose next billing is due by `now`:
    `{"type": "bill_subscription", "merchant_id", "subscription_id", "boundary"}`."""
    messages = []
    for pk, sk, due_at in _due_items(now, "subscription"):
        merchant_id, subscription_id = pk.split("#", 1)
        messages.append({"type": "bill_subscription", "merchant_id": merchant_id,
                         "subscription_id": subscription_id, "boundary": due_at})
    return messages


def due_collection_messages(now: datetime) -> list[dict]:
    """One message per invoice whose next payment attempt (or whose
    in-flight attempt's lease) is due by `now`."""
    messages = []
    for pk, sk, _ in _due_items(now, "invoice"):
        merchant_id, invoice_id = pk.split("#", 1)
        messages.append({"type": "collect_invoice", "merchant_id": merchant_id, "invoice_id": invoice_id})
    return messages


def _due_items(now: datetime, kind: str) -> list[tuple[str, str, str]]:
    """(pk, sk, due_at) of the items of `kind` due by `now`, every shard of
    the `due` index read in parallel (keys only: the worker reads the item)."""
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.config import settings
    from chalicelib.store import dynamo

    until = store.due_key(now)

    def shard(n: int) -> list[tuple[str, str, str]]:
        items = dynamo.query_all(
            IndexName="due",
            KeyConditionExpression="due_shard = :shard AND due_at <= :until",
            FilterExpression="sk = :kind",
            ExpressionAttributeValues={
                ":shard": {"S": f"due#{n}"}, ":until": {"S": until}, ":kind": {"S": kind},
            },
        )
        return [(item["pk"]["S"], item["sk"]["S"], item["due_at"]["S"]) for item in items]

    shards = range(settings().billing_shards)
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = [item for part in pool.map(shard, shards) for item in part]
    return sorted(found, key=lambda item: item[2])


def collect_due_invoice(merchant_id: str, invoice_id: str, *, now: datetime | None = None) -> dict:
    """The dunning run's message: charge the invoice if its next attempt is
    due (or resume an attempt whose lease expired). Anything else (paid,
    void, not due yet, a fresh attempt in flight) is left as it is."""
    now = now or clock().now()
    invoice = store.find_invoice(merchant_id, invoice_id)
    if invoice is None or invoice.status != "open" or invoice.due_at is None or invoice.due_at > store.due_key(now):
        return _brief(invoice, invoice_id)
    last = _last_attempt(invoice)
    if last is not None and last["status"] in ("pending", "processing"):
        return _brief(_collect(invoice, resume=True, now=now))
    return _brief(_start_attempt_and_collect(invoice, now))


# ---------------------------------------------------------------------------
# Payments news


def retry_open_invoices(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer has a new default card: charge its open invoices now,
    oldest first (each one a new attempt; an attempt already in flight is
    left to finish). Returns what happened to each."""
    now = clock().now()
    results = []
    for invoice in store.open_invoices_of_customer(merchant_id, customer_id):
        if _in_flight(invoice, now):
            results.append(_brief(invoice, invoice.invoice_id))
            continue
        try:
            results.append(_brief(_start_attempt_and_collect(invoice, now)))
        except Conflict:
            results.append(_brief(store.find_invoice(merchant_id, invoice.invoice_id), invoice.invoice_id))
    return results


def reconcile_payment(payment_intent: dict) -> dict | None:
    """A `payment_intent.succeeded` or `payment_intent.payment_failed`
    webhook: record on its invoice what Stripe says of that attempt.

    Idempotent: an attempt already concluded the same way changes nothing,
    and a payment is counted once (a paid invoice is never paid again; a
    second PaymentIntent succeeding for a paid invoice is logged for a
    refund, never added). PaymentIntents that are not our invoices' are
    ignored."""
    payment = gateway().payment_of(payment_intent)
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
            return _brief(_apply_payment(invoice, payment, now))
        except Conflict:
            invoice = store.get_invoice(merchant_id, invoice_id)
    raise Conflict("the invoice kept changing while its payment was recorded; Stripe will deliver again")


# ---------------------------------------------------------------------------
# The API


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


def pay_invoice(merchant_id: str, invoice_id: str) -> dict:
    """`POST /invoices/{id}/pay`: charge now (a new attempt). 409 when the
    invoice is not open (or uncollectible), when a charge is in flight, or
    when the customer has no card; 402 `card_error` when the card is
    declined (the attempt is recorded on the invoice)."""
    invoice = store.get_invoice(merchant_id, invoice_id)
    now = clock().now()
    if invoice.status not in ("open", "uncollectible"):
        raise Conflict(f"the invoice is {invoice.status}; only an open invoice can be paid", code="invalid_state")
    if _in_flight(invoice, now):
        raise Conflict("a charge of this invoice is in progress; look again in a few minutes", code="invalid_state")
    customer = _customer(merchant_id, invoice.customer_id)
    if invoice.money("amount_due") > 0 and not (customer.card() or {}).get("payment_method_id"):
        raise Conflict("the customer has no card: send it a payment link (POST /customers/{id}/payment-link)",
                       code="no_payment_method")
    result = _start_attempt_and_collect(invoice, now, customer=customer)
    last = _last_attempt(result)
    if result.status not in ("paid",) and last is not None and last["status"] == "failed":
        from chalicelib import payments

        raise payments.Declined(last.get("failure_code") or "card_declined", "the card was declined",
                                payment_intent_id=last.get("payment_intent"))
    return serialize(result)


def void_invoice(merchant_id: str, invoice_id: str) -> dict:
    """`POST /invoices/{id}/void`: only an open invoice with no charge in
    flight. Its number stays used (an issued number is never given again);
    credit it used goes back to the customer's balance."""
    now = clock().now()
    for _ in range(3):
        invoice = store.get_invoice(merchant_id, invoice_id)
        if invoice.status != "open":
            raise Conflict(f"the invoice is {invoice.status}; only an open invoice can be voided", code="invalid_state")
        if _in_flight(invoice, now):
            raise Conflict("a charge of this invoice is in progress; look again in a few minutes",
                           code="invalid_state")
        invoice.status = "void"
        invoice.voided_at = isoformat(now)
        invoice.next_payment_attempt = None
        invoice.set_due(None)
        try:
            _save_with_credit_back(invoice)
        except Conflict:
            continue
        _publish("invoice.voided", invoice)
        _settle_subscription(invoice)
        return serialize(invoice)
    raise Conflict("the invoice kept changing; read it again", code="version_conflict")


def _save_with_credit_back(invoice: store.InvoiceRecord) -> None:
    applied = invoice.money("credit_applied")
    if not applied:
        store.save(invoice, expected_status="open")
        return
    from chalicelib.store import customers as customer_store
    from chalicelib.store.base import transaction
    from pynamodb.exceptions import TransactWriteError

    from chalicelib.store.errors import is_condition_failure

    customer = _customer(invoice.merchant_id, invoice.customer_id)
    before = customer.credit_balance(invoice.currency)
    expected = invoice.version
    invoice.version = expected + 1
    invoice.sync_keys()
    try:
        with transaction() as write:
            write.save(invoice, condition=(store.InvoiceRecord.version == expected)
                       & (store.InvoiceRecord.status == "open"))
            customer_store.credit_balance_update(write, invoice.merchant_id, invoice.customer_id,
                                                 invoice.currency, before, before + applied)
    except TransactWriteError as error:
        invoice.version = expected
        if is_condition_failure(error):
            raise Conflict("the invoice or the customer's balance changed meanwhile", code="version_conflict") from error
        raise


def _looks_like(value: str, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith(prefix) and 4 < len(value) <= 64 and value.isascii()


# ---------------------------------------------------------------------------
# Serialization


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
        "lines": record.line_items(),
        "subtotal": record.subtotal,
        "tax": record.tax_lines(),
        "credit_applied": record.credit_applied,
        "total": record.total,
        "amount_paid": record.amount_paid,
        "amount_due": record.amount_due,
        "reverse_charge": bool(record.reverse_charge),
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


def _brief(record: store.InvoiceRecord | None, invoice_id: str | None = None) -> dict:
    if record is None:
        return {"id": invoice_id, "status": "not_found"}
    return {"id": record.invoice_id, "number": record.number, "status": record.status,
            "amount_due": record.amount_due}


# ---------------------------------------------------------------------------
# Issuing: what a subscription owes now, as one invoice


@dataclass
class _Issued:
    subscription: object
    billed: dict
    invoice: store.InvoiceRecord | None
    customer: object


@dataclass
class _Draft:
    """One invoice being built, and what its transaction also writes."""

    lines: list[InvoiceLine] = field(default_factory=list)
    billed: list[store.BilledUsageRecord] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)
    ends: list[datetime] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _issue_next(subscription, billed: dict, now: datetime) -> _Issued | None:
    """Issue the next invoice the subscription owes by `now`, moving the
    subscription on in the same transaction: its queued invoices due before
    its boundary, on their own; else the boundary at the end of its current
    period (if passed) with what was queued for that very instant; else its
    queued invoices due by now. None: nothing is owed. Conflict: the
    subscription moved meanwhile."""
    from chalicelib.services import subscriptions as subscription_service
    from chalicelib.store import subscriptions as subscription_store

    merchant_id = subscription.merchant_id
    live = subscription.status != "canceled"
    period_end = _instant(subscription.current_period_end)
    boundary = period_end if live and subscription.due_at is not None and period_end <= now else None
    queued = sorted(subscription.pending_invoice_items or [], key=lambda item: item["due_at"])
    if boundary is not None and any(_instant(item["due_at"]) < boundary for item in queued):
        # Invoices queued before the boundary come first, on their own
        # invoice (a subscription billed late keeps its invoices in order).
        items = [item for item in queued if _instant(item["due_at"]) < boundary]
        boundary = None
    else:
        until = boundary if boundary is not None else now
        items = [item for item in queued if _instant(item["due_at"]) <= until]
    if boundary is None and not items:
        return None

    merchant = _merchant(merchant_id)
    customer = _customer(merchant_id, subscription.customer_id)
    before = subscription_service.public_fields(subscription)
    draft = _Draft()
    for item in items:
        draft.lines += [InvoiceLine.from_dict(line) for line in item["lines"]]
        draft.starts.append(_instant(item["period_start"]))
        draft.ends.append(_instant(item["period_end"]))
        draft.reasons.append(REASON_BY_ITEM.get(item["reason"], "subscription_update"))
    issued = {item["id"] for item in items}
    subscription.pending_invoice_items = [i for i in subscription.pending_invoice_items or [] if i["id"] not in issued]

    invoice_id, invoice_date = _invoice_identity(subscription, boundary, items)
    change_type = "invoiced"
    opening = None
    if boundary is not None:
        change_type, opening = _boundary(subscription, billed, draft, invoice_id)

    currency = subscription.currency
    credit_before = customer.credit_balance(currency)
    money = _totals(draft.lines, currency, merchant, customer, credit_before)
    if boundary is not None:
        card_needed = money.amount_due > 0 and not _card_of(customer)
        _advance(subscription, opening, boundary, card_needed)
    _reschedule(subscription)
    subscription.updated_at = isoformat(now)
    entry = subscription_service.history_entry(subscription, before, change_type, "system", boundary or now)

    invoice = None
    if draft.lines:
        invoice = _invoice_record(invoice_id, invoice_date, subscription, customer, merchant, draft, money,
                                  credit_before, now)
        _first_attempt(invoice, customer, merchant, now)
        credit_after = money.credit_balance

        def also(write) -> None:
            subscription_store.save_subscription(subscription, entry, write=write)
            for record in draft.billed:
                store.write_billed_usage(write, record)
            if credit_after != credit_before:
                from chalicelib.store import customers as customer_store

                customer_store.credit_balance_update(write, merchant_id, customer.customer_id, currency,
                                                     credit_before, credit_after)

        version_read = int(subscription.version)
        try:
            store.finalize(invoice, prefix=merchant.invoice_prefix, year=_year(now, merchant),
                           finalized_at=isoformat(now), new=True, also=also, then=invoice.status)
        except Conflict:
            subscription.version = version_read
            raise
    else:
        _save_without_invoice(subscription, entry, draft.billed)

    for record in draft.billed:
        billed[record.period_start] = record
    subscription_service.publish_change(subscription, entry)
    if invoice is not None:
        _after_issue(invoice, subscription)
    return _Issued(subscription, billed, invoice, customer)


def _boundary(subscription, billed: dict, draft: _Draft, invoice_id: str):
    """Add the boundary's lines to `draft`: late usage of periods already
    invoiced, usage of periods closed while paused (once resumed), the
    closed period's usage, the next period's fees. Returns (the history's
    change type, the opening period and its plan, or None at the end)."""
    from chalicelib.services import offers
    from chalicelib.store import usage as usage_store

    merchant_id = subscription.merchant_id
    interval = Interval(subscription.billing_interval, int(subscription.interval_count))
    tz = subscription.timezone
    anchor = _instant(subscription.anchor)
    closed = Period(_instant(subscription.current_period_start), _instant(subscription.current_period_end))
    closed_key = isoformat(closed.start)
    plan = lifecycle.Plan(subscription.offer_id, tuple(subscription.options or []),
                          subscription.price_overrides or None)
    usage_now = usage_store.usage_before(merchant_id, subscription.subscription_id, closed.end)
    draft.starts.append(closed.start)
    draft.ends.append(closed.end)
    draft.reasons.append("subscription_cycle")

    # Late usage: periods invoiced before, whose usage grew (or was corrected) since.
    for start_key in sorted(set(usage_now) | set(billed)):
        if start_key >= closed_key:
            continue
        record = billed.get(start_key)
        if record is None or record.free:
            continue
        usage = usage_now.get(start_key, {})
        before = record.meters()
        if _same_usage(before, usage):
            continue
        fields = record.plan_fields()
        period = Period(_instant(start_key), _instant(fields["period_end"]))
        _, terms = offers.terms_for_billing(merchant_id, fields["offer_id"], period.start)
        draft.lines += rate_late_usage(terms, fields.get("price_overrides"), before, usage, period)
        draft.billed.append(store.billed_usage_record(
            merchant_id, subscription.subscription_id, start_key, usage, invoice_id, plan=fields, previous=record,
        ))

    paused = bool(subscription.paused)
    deferred = list(subscription.deferred_usage_periods or [])
    if not paused and deferred:
        for start_key in deferred:
            start = _instant(start_key)
            period = period_bounds(anchor, interval, period_index_at(anchor, interval, start, tz), tz)
            _, terms = offers.terms_for_billing(merchant_id, plan.offer_id, period.start)
            usage = usage_now.get(isoformat(period.start), {})
            draft.lines += rate_usage(terms, plan.price_overrides, usage, period)
            draft.billed.append(_billed_record(subscription, billed, period, usage, plan, invoice_id))
        subscription.deferred_usage_periods = []

    trial = int(subscription.period_index) < 0
    usage = usage_now.get(closed_key, {})
    if trial:
        draft.billed.append(_billed_record(subscription, billed, closed, usage, plan, None, free=True))
    elif paused:
        subscription.deferred_usage_periods = [*deferred, closed_key] if closed_key not in deferred else deferred
    else:
        _, terms = offers.terms_for_billing(merchant_id, plan.offer_id, closed.start)
        priced = proration.PricedPlan(terms, plan.options, plan.price_overrides)
        draft.lines += proration.usage_lines(priced, usage, _billed_inside(subscription, closed), closed, closed.end)
        draft.billed.append(_billed_record(subscription, billed, closed, usage, plan, invoice_id))

    if subscription.cancel_at_period_end:
        return "canceled", None
    next_index = int(subscription.period_index) + 1
    opening = period_bounds(anchor, interval, next_index, tz)
    phases = [
        lifecycle.Phase(p["after_periods"], p["offer_id"],
                        None if p.get("options") is None else tuple(p["options"]), p.get("price_overrides"))
        for p in subscription.phases or []
    ]
    pending = subscription.pending_change
    pending_plan = None if pending is None else lifecycle.Plan(
        pending["offer_id"], tuple(pending.get("options") or []), pending.get("price_overrides") or None
    )
    next_plan, _ = lifecycle.next_plan(plan, pending_plan, phases, next_index)
    version, terms = offers.terms_for_billing(merchant_id, next_plan.offer_id, opening.start)
    if not paused:
        draft.lines += rate_fees(terms, next_plan.options, next_plan.price_overrides, opening)
    draft.ends.append(opening.end)
    change_type = "trial_ended" if trial else "renewed"
    return change_type, (opening, next_plan, version, next_index)


def _advance(subscription, opening, boundary: datetime, card_needed: bool) -> None:
    """The subscription after its boundary: the next period on the plan it
    runs on (a scheduled change and the phases applied, consumed), or
    canceled when the cancellation was for this boundary."""
    from chalicelib.services import subscriptions as subscription_service

    state = lifecycle.transition(
        subscription_service._state(subscription), "period_ended",
        lifecycle.Context(at=boundary, card_needed=card_needed),
    )
    subscription.usage_billed = None
    if opening is None or state.status == "canceled":
        subscription.pending_change = None
        subscription_service._set_state(subscription, state, boundary)
        return
    period, plan, version, index = opening
    subscription.current_period_start = isoformat(period.start)
    subscription.current_period_end = isoformat(period.end)
    subscription.period_index = index
    subscription.offer_id = plan.offer_id
    subscription.offer_version = version
    subscription.options = list(plan.options)
    subscription.price_overrides = plan.price_overrides or None
    subscription.phases = [p for p in subscription.phases or [] if p["after_periods"] > index]
    subscription.pending_change = None
    if not subscription.paused:
        subscription.fees_billed_until = isoformat(period.end)
    subscription_service._set_state(subscription, state, boundary)


def _reschedule(subscription) -> None:
    """next_billing_at: the earliest of the queued invoices and, while it
    lives, the end of its current period; none when nothing more is billed."""
    candidates = [_instant(item["due_at"]) for item in subscription.pending_invoice_items or []]
    if subscription.status != "canceled":
        candidates.append(_instant(subscription.current_period_end))
    subscription.due_at = isoformat(min(candidates)) if candidates else None


def _billed_record(subscription, billed: dict, period: Period, usage: dict, plan, invoice_id: str | None, *,
                   free: bool = False) -> store.BilledUsageRecord:
    key = isoformat(period.start)
    return store.billed_usage_record(
        subscription.merchant_id, subscription.subscription_id, key, usage, invoice_id,
        plan={"offer_id": plan.offer_id, "options": list(plan.options),
              "price_overrides": plan.price_overrides, "period_end": isoformat(period.end)},
        free=free, previous=billed.get(key),
    )


def _billed_inside(subscription, period: Period) -> proration.BilledUsage | None:
    """What invoices issued inside the period (an immediate change) already
    billed of its usage (the subscription's `usage_billed`)."""
    billed = subscription.usage_billed
    if not billed or billed.get("period_start") != isoformat(period.start):
        return None
    meters = {
        meter: MeterUsage(Decimal(value["total"]),
                          None if value.get("maximum") is None else Decimal(value["maximum"]),
                          None if value.get("last") is None else Decimal(value["last"]))
        for meter, value in billed["meters"].items()
    }
    return proration.BilledUsage(_instant(billed["until"]), meters)


def _same_usage(before: dict[str, MeterUsage], now: dict[str, MeterUsage]) -> bool:
    for meter in set(before) | set(now):
        a, b = before.get(meter), now.get(meter)
        if a is None or b is None:
            if (a or b).total or (a or b).maximum is not None:
                return False
            continue
        if a != b:
            return False
    return True


def _totals(lines, currency: str, merchant, customer, credit: Decimal) -> InvoiceTotals:
    rate = merchant.tax_rate_table().get(customer.country)
    return totals(lines, currency, None if rate is None else Decimal(rate), bool(customer.tax_exempt), credit)


def _invoice_identity(subscription, boundary: datetime | None, items: list[dict]) -> tuple[str, datetime]:
    """The invoice's id and date: from the boundary it bills, or from the
    queued invoices it issues without one. Whoever bills the same thing
    names the same invoice."""
    if boundary is not None:
        return store.invoice_id_for(subscription.merchant_id, subscription.subscription_id, boundary), boundary
    # The earliest queued invoice's due time: what the subscription's
    # next_billing_at was, so a message for it can name this invoice again.
    date = min(_instant(item["due_at"]) for item in items)
    return store.invoice_id_for(subscription.merchant_id, subscription.subscription_id, date, "queued"), date


def _invoice_record(invoice_id: str, invoice_date: datetime, subscription, customer, merchant, draft: _Draft,
                    money: InvoiceTotals, credit_before: Decimal, now: datetime) -> store.InvoiceRecord:
    merchant_id = subscription.merchant_id
    currency = subscription.currency
    reason = next((r for r in ("subscription_create", "subscription_cycle", "subscription_cancel",
                               "subscription_update") if r in draft.reasons), "subscription_update")
    return store.InvoiceRecord(
        *store.InvoiceRecord.key(merchant_id, invoice_id),
        merchant_id=merchant_id,
        invoice_id=invoice_id,
        status="draft",
        billing_reason=reason,
        customer_id=subscription.customer_id,
        subscription_id=subscription.subscription_id,
        currency=currency,
        invoice_date=isoformat(invoice_date),
        period_start=isoformat(min(draft.starts)) if draft.starts else None,
        period_end=isoformat(max(draft.ends)) if draft.ends else None,
        lines=_json([line.as_dict() for line in draft.lines]),
        tax=_json(money.as_dict()["tax"]),
        subtotal=format_amount(money.subtotal, currency),
        tax_amount=format_amount(money.tax_amount, currency),
        total=format_amount(money.total, currency),
        credit_applied=format_amount(money.credit_applied, currency),
        amount_due=format_amount(money.amount_due, currency),
        amount_paid=format_amount(ZERO, currency),
        starting_balance=format_amount(credit_before, currency),
        ending_balance=format_amount(money.credit_balance, currency),
        reverse_charge=money.reverse_charge,
        seller=_json({"name": merchant.name, "timezone": merchant.timezone or "UTC",
                      "locale": merchant.locale or "en"}),
        buyer=_json({"name": customer.name, "email": customer.email, "country": customer.country,
                     "tax_exempt": bool(customer.tax_exempt)}),
        locale=customer.locale or merchant.locale or "en",
        payment_attempts="[]",
        created_at=isoformat(now),
        version=1,
    )


def _first_attempt(invoice: store.InvoiceRecord, customer, merchant, now: datetime) -> None:
    """How the invoice leaves its finalizing transaction: paid at once when
    nothing is due; with a failed attempt and its retry scheduled when there
    is no card to charge; else with attempt 1 pending, leased to this worker."""
    if invoice.money("amount_due") <= 0:
        invoice.status = "paid"
        invoice.paid_at = isoformat(now)
        return
    invoice.status = "open"
    if not _card_of(customer):
        _record_failure(invoice, 1, None, "no_payment_method", now, merchant)
        return
    invoice.set_attempts([_attempt(1, now, "pending")])
    invoice.set_due(now + LEASE)


def _after_issue(invoice: store.InvoiceRecord, subscription) -> None:
    _publish("invoice.created", invoice)
    _publish("invoice.finalized", invoice)
    if invoice.status == "paid":
        _publish("invoice.paid", invoice)
        if subscription.status in ("incomplete", "past_due"):
            _settle_subscription(invoice)
        return
    last = _last_attempt(invoice)
    if last is not None and last["status"] == "failed":
        _attach_payment_link(invoice)
        _publish("invoice.payment_failed", invoice)
        _alert_payment_failed(invoice)
        if subscription.status == "active":
            _subscription_outcome(invoice, "payment_failed")


def _save_without_invoice(subscription, entry, billed: list) -> None:
    """A boundary that bills nothing (paused, nothing queued) still moves the subscription on."""
    from pynamodb.exceptions import TransactWriteError

    from chalicelib.store import subscriptions as subscription_store
    from chalicelib.store.base import transaction

    version_read = int(subscription.version)
    try:
        with transaction() as write:
            subscription_store.save_subscription(subscription, entry, write=write)
            for record in billed:
                store.write_billed_usage(write, record)
    except TransactWriteError as error:
        subscription.version = version_read
        subscription_store.raise_version_conflict(error)
        raise


# ---------------------------------------------------------------------------
# Collecting: one PaymentIntent per attempt


def _has_pending_attempt(invoice: store.InvoiceRecord) -> bool:
    last = _last_attempt(invoice)
    return invoice.status == "open" and last is not None and last["status"] == "pending"


def _last_attempt(invoice: store.InvoiceRecord | None) -> dict | None:
    if invoice is None:
        return None
    attempts = invoice.attempts()
    return attempts[-1] if attempts else None


def _in_flight(invoice: store.InvoiceRecord, now: datetime) -> bool:
    """An attempt started and not concluded, whose lease has not run out."""
    last = _last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return False
    return invoice.due_at is not None and invoice.due_at > store.due_key(now)


def _attempt(number: int, now: datetime, status: str) -> dict:
    return {"attempt": number, "at": isoformat(now), "status": status, "payment_intent": None, "failure_code": None}


def _start_attempt_and_collect(invoice: store.InvoiceRecord, now: datetime, *, customer=None) -> store.InvoiceRecord:
    """Record a new attempt (pending, leased) on an open or uncollectible
    invoice, then make it. Conflict when someone else changed the invoice
    meanwhile (they may have started one: never two at once)."""
    attempts = invoice.attempts()
    if attempts and attempts[-1]["status"] in ("pending", "processing") and _in_flight(invoice, now):
        return invoice
    if attempts and attempts[-1]["status"] == "pending":
        # An abandoned attempt: conclude it first (it may have charged).
        invoice = _collect(invoice, resume=True, now=now, customer=customer)
        if invoice.status != "open":
            return invoice
        attempts = invoice.attempts()
    expected = invoice.status
    attempts.append(_attempt(len(attempts) + 1, now, "pending"))
    invoice.set_attempts(attempts)
    invoice.set_due(now + LEASE)
    store.save(invoice, expected_status=expected)
    return _collect(invoice, resume=False, now=now, customer=customer)


def _collect(invoice: store.InvoiceRecord, *, resume: bool, now: datetime, customer=None,
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

    last = _last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return invoice
    number = int(last["attempt"])
    customer = customer or _customer(invoice.merchant_id, invoice.customer_id)
    card = _card_of(customer)
    pay = gateway()
    payment = None
    if resume:
        if last.get("payment_intent"):
            payment = pay.retrieve_payment(last["payment_intent"])
        elif customer.stripe_customer_id:
            found = [p for p in pay.find_invoice_payments(customer.stripe_customer_id, invoice.invoice_id)
                     if p.attempt == number]
            payment = found[-1] if found else None
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
    for pause in range(RATE_LIMIT_RETRIES + 1):
        try:
            return pay.charge_invoice(
                invoice_id=invoice.invoice_id, merchant_id=invoice.merchant_id, attempt=number,
                amount=invoice.money("amount_due"), currency=invoice.currency,
                stripe_customer_id=stripe_customer_id, payment_method_id=card["payment_method_id"], **extra,
            )
        except payments.RateLimited:
            if pause == RATE_LIMIT_RETRIES:
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
        merchant = _merchant(invoice.merchant_id)
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
    first = _instant(invoice.first_failure_at) if invoice.first_failure_at else now
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


def _after_outcome(invoice: store.InvoiceRecord, status: str, subscription_status: str | None = None) -> None:
    """Events, the payment link, and the subscription's state after an
    attempt's outcome. The subscription is read only when it may change:
    a paid invoice of an `active` subscription changes nothing."""
    if status == "succeeded":
        _publish("invoice.paid", invoice)
        if subscription_status in (None, "incomplete", "past_due"):
            _settle_subscription(invoice)
    elif status == "failed":
        if invoice.status == "open":
            _attach_payment_link(invoice)
        _publish("invoice.payment_failed", invoice)
        _alert_payment_failed(invoice)
        if invoice.status == "uncollectible":
            _publish("invoice.marked_uncollectible", invoice)
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
                logger.error("a second payment succeeded for a paid invoice; refund it",
                             extra={"invoice_id": invoice.invoice_id, "payment_intent": payment.id})
            return invoice
        if invoice.status == "void":
            logger.error("a payment succeeded for a void invoice; refund it",
                         extra={"invoice_id": invoice.invoice_id, "payment_intent": payment.id})
            return invoice
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
                        _merchant(invoice.merchant_id))
        store.save(invoice, expected_status=expected)
        _after_outcome(invoice, "failed")
    return invoice


def _resume_boundary_invoice(merchant_id: str, subscription_id: str, boundary: str,
                             now: datetime) -> store.InvoiceRecord | None:
    """A retried message for a boundary already issued: resume its charge
    if the worker that issued it died before concluding it."""
    try:
        at = _instant(boundary)
    except ValueError:
        return None
    for purpose in ("cycle", "queued"):
        invoice = store.find_invoice(merchant_id, store.invoice_id_for(merchant_id, subscription_id, at, purpose))
        if invoice is not None:
            break
    if invoice is None or invoice.status != "open" or _in_flight(invoice, now):
        return None
    last = _last_attempt(invoice)
    if last is None or last["status"] not in ("pending", "processing"):
        return None
    return _collect(invoice, resume=True, now=now)


def _attach_payment_link(invoice: store.InvoiceRecord) -> None:
    """A failed invoice whose customer must act (no card, a card refused,
    a bank asking for authentication) carries a payment link, which the
    alerts e-mail; recorded on the invoice (best effort: a link is news,
    the failure is already written)."""
    from chalicelib.services import payment_links

    try:
        link = payment_links.create_payment_link(invoice.merchant_id, invoice.customer_id)
    except Exception:  # the link is a convenience; the invoice's state is what matters
        logger.exception("payment link not created", extra={"invoice_id": invoice.invoice_id})
        return
    invoice.payment_link_url = link["url"]
    invoice.payment_link_expires_at = link["expires_at"]
    try:
        store.save(invoice, expected_status=invoice.status)
    except Conflict:
        logger.info("payment link not recorded: the invoice moved on", extra={"invoice_id": invoice.invoice_id})


def _settle_subscription(invoice: store.InvoiceRecord) -> None:
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
    from chalicelib.services import subscriptions as subscription_service

    if not invoice.subscription_id:
        return
    for _ in range(3):
        try:
            subscription_service.system_transition(invoice.merchant_id, invoice.subscription_id, action)
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


# ---------------------------------------------------------------------------
# Small things


def _publish(detail_type: str, invoice: store.InvoiceRecord) -> None:
    notify.publish_event(detail_type, {"invoice": serialize(invoice)}, invoice.merchant_id)


def _alert_payment_failed(invoice: store.InvoiceRecord) -> None:
    """Operations hear of each failed attempt (services/alerts.py: once per
    invoice and attempt, queued; never raises)."""
    from chalicelib.services import alerts

    alerts.payment_failed(serialize(invoice), invoice.merchant_id)


def _card_of(customer) -> dict | None:
    card = customer.card()
    return card if card and card.get("payment_method_id") else None


def _year(now: datetime, merchant) -> int:
    return now.astimezone(ZoneInfo(merchant.timezone or "UTC")).year


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
