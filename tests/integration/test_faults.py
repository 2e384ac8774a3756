"""Fault injection: Stripe and DynamoDB failing, workers dying between the
steps of billing, SQS and Stripe delivering again, late and out of order.

Every fault is injected at the wire (tests/integration/faults.py): moto's
request handler for AWS, a proxy with Stripe's idempotency in front of
localstripe for Stripe. After each one the same checks: one PaymentIntent
per invoice at localstripe (never two), invoice numbers 1..n with no gap
and no repeat, no usage lost or billed twice, and the subscription, its
invoices and its history agreeing with each other."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib import config, jobs, payments
from chalicelib.domain.money import to_minor
from chalicelib.services import collecting
from chalicelib.store import invoices as invoice_store
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.faults import AwsFaults, StripeProxy, WorkerDied, item_of, transaction_items
from tests.integration.test_billing import (  # noqa: F401  (atomic_dynamodb is a fixture)
    CARD_OK, atomic_dynamodb, DEC_1, JAN_1, NOV_1, charges_of, invoices_of, iso, new_customer, record_usage, save_card,
    simple_offer, sqs_event, subscribe,
)
from tests.integration.test_payments import (  # noqa: F401  (failing_stripe is a fixture)
    confirm_in_browser, deliver, event, failing_stripe, open_page, page_config, token_of,
)

LEASE_OVER = collecting.LEASE + timedelta(minutes=1)


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOV_1


@pytest.fixture
def aws_faults(monkeypatch) -> AwsFaults:
    return AwsFaults().install(monkeypatch)


@pytest.fixture
def stripe_proxy(localstripe):
    """Stripe reached through the proxy, with a client that gives up reading
    after 0.5 s (8 s in production: the same code path, sooner)."""
    proxy = StripeProxy(localstripe)
    saved_timeout = payments.TIMEOUT_SECONDS
    payments.TIMEOUT_SECONDS = (1.0, 0.5)
    os.environ["STRIPE_API_BASE"] = proxy.url
    config.settings.cache_clear()
    payments._client_for.cache_clear()
    yield proxy
    os.environ["STRIPE_API_BASE"] = localstripe
    payments.TIMEOUT_SECONDS = saved_timeout
    config.settings.cache_clear()
    payments._client_for.cache_clear()
    proxy.close()


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The back-off pauses billing takes between rate-limited charges,
    recorded instead of slept (the time module as billing sees it)."""
    import types

    taken: list[float] = []
    fake = types.SimpleNamespace(sleep=taken.append, monotonic=collecting.time.monotonic)
    monkeypatch.setattr(collecting, "time", fake)
    return taken


# ---------------------------------------------------------------------------
# Helpers: a billing message, and the state every test ends with


def billing_message(api, sub_id: str, boundary) -> str:
    return jobs.message_body({"type": "bill_subscription", "merchant_id": api.merchant["id"],
                              "subscription_id": sub_id, "boundary": iso(boundary)})


def run_worker(*bodies: str) -> list[str]:
    """The billing queue's Lambda on one batch; the indexes of the records it
    sent back (a batch that failed whole raises, and SQS delivers it all again)."""
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    event_ = sqs_event(list(bodies))
    ids = [r["messageId"] for r in event_["Records"]]
    try:
        failures = jobs.billing_worker(event_)["batchItemFailures"]
    except BatchProcessingError:
        return list(range(len(ids)))
    return [ids.index(f["itemIdentifier"]) for f in failures]


def redeliver_after_visibility_timeout(clock, api, sub_id, boundary) -> list[str]:
    """SQS hands the message out again once its visibility timeout (6 min)
    passed: the message alone finishes the boundary (the hourly dunning run
    would too, later: test_billing.py)."""
    clock.set(clock.now() + LEASE_OVER)
    return run_worker(billing_message(api, sub_id, boundary))


def assert_consistent(api, sub_id: str, customer_id: str, numbers: list[str], *, counter: bool = True) -> list[dict]:
    """The invoices are `numbers` in order, all paid, each by exactly one
    PaymentIntent of its total; the counter stands at the last number; the
    subscription is active with a gapless history; nothing is left to collect."""
    merchant_id = api.merchant["id"]
    invoices = invoices_of(api, sub_id)
    assert [i["number"] for i in invoices] == numbers
    assert [i["status"] for i in invoices] == ["paid"] * len(numbers), invoices
    if counter:  # the merchant's only subscription: its last number is the merchant's
        year = int(numbers[-1][2:6])
        assert invoice_store.last_number(merchant_id, year) == int(numbers[-1][-6:])
    charges = [c for c in charges_of(api, customer_id) if c["metadata"].get("invoice_id")]
    succeeded = [c for c in charges if c["status"] == "succeeded"]
    assert sorted(c["metadata"]["invoice_id"] for c in succeeded) == sorted(
        i["id"] for i in invoices if Decimal(i["total"]) > 0), "one successful charge per invoice"
    by_invoice = {c["metadata"]["invoice_id"]: c for c in succeeded}
    for invoice in invoices:
        if Decimal(invoice["total"]) == 0:
            continue
        charge = by_invoice[invoice["id"]]
        assert charge["amount"] == to_minor(Decimal(invoice["amount_paid"]), invoice["currency"])
        assert invoice["amount_due"] == "0.00"
        assert [a["payment_intent"] for a in invoice["payment_attempts"] if a["status"] == "succeeded"] == [
            charge["id"]]
        assert not [a for a in invoice["payment_attempts"] if a["status"] in ("pending", "processing")]
    subscription = api.get(f"/subscriptions/{sub_id}").json
    assert subscription["status"] == "active", subscription
    history = api.get(f"/subscriptions/{sub_id}/history?limit=100").json["data"]
    assert [h["version"] for h in history] == list(range(1, len(history) + 1))
    far = collecting.due_collection_messages(JAN_1 + timedelta(days=400))
    left = [api.get(f"/invoices/{m['invoice_id']}").json for m in far if m["merchant_id"] == merchant_id]
    assert not left, left
    return invoices


def november_with_usage(api, clock) -> tuple[str, str]:
    """A subscription whose November fees are invoiced and paid (OD2026-000001)
    and whose November usage (7 montages) is due on December's invoice."""
    customer_id = new_customer(api)
    sub = subscribe(api, customer_id, simple_offer(api), start_at=iso(NOV_1))
    assert run_worker(billing_message(api, sub["id"], NOV_1)) == []
    clock.set(NOV_1 + timedelta(days=12))
    record_usage(api, sub["id"], clock.now(), montages="7")
    clock.set(DEC_1 + timedelta(minutes=5))
    return customer_id, sub["id"]


def assert_december_bills_november_once(api, sub_id: str, customer_id: str) -> None:
    november, december = assert_consistent(api, sub_id, customer_id, ["OD2026-000001", "OD2026-000002"])
    usage = [(l["quantity"], l["amount"]) for l in december["lines"] if l["kind"] == "usage"]
    assert usage == [("7", "8.40")]  # 7 x 1.20, once
    assert december["total"] == "68.88"  # (8.40 + 49.00) x 1.20
    meters = api.get(f"/subscriptions/{sub_id}/usage?period_start={iso(NOV_1)}").json
    assert meters["invoiced"] is True and meters["meters"]["montages"]["billed_total"] == "7"
    sub = api.get(f"/subscriptions/{sub_id}").json
    assert (sub["current_period_start"], sub["next_billing_at"]) == (iso(DEC_1), iso(JAN_1))


# ---------------------------------------------------------------------------
# A crash between each pair of steps of billing one subscription, then retries

# The steps of a boundary, as the wire sees them: (1) the finalizing
# transaction (invoice with its number, counter, subscription moved on,
# usage marked billed), (2) the PaymentIntent created and confirmed at
# Stripe, (3) the invoice marked paid. The events are not a step of the
# worker: they are derived from its writes (the table's stream), so a crash
# anywhere loses none of them.
CRASH_POINTS = {
    "before the invoice is finalized": ("TransactWriteItems", "crash_before", 0),
    "after it is finalized, before Stripe is asked": ("TransactWriteItems", "crash_after", 0),
    "after Stripe charged, before it is recorded": ("PutItem", "crash_before", 0),
    "after it is marked paid": ("PutItem", "crash_after", 0),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_between_two_steps_of_billing_then_retries_bill_and_charge_once(
        merchant, clock, aws_faults, published, point):
    customer_id, sub_id = november_with_usage(merchant, clock)
    operation, fault, skip = CRASH_POINTS[point]
    aws_faults.add(operation, fault, skip=skip)
    with pytest.raises(WorkerDied):
        run_worker(billing_message(merchant, sub_id, DEC_1))
    aws_faults.clear()

    # An overlapping run enqueues the same boundary at once: the dead
    # worker's charge is still leased to it, nothing is charged twice.
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == []
    assert len([c for c in charges_of(merchant, customer_id) if c["status"] == "succeeded"]) <= 2
    # SQS delivers the message again after its visibility timeout.
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)
    # Nothing more is due, whatever runs again.
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 0
    assert len(charges_of(merchant, customer_id)) == 2
    # Every event of December's invoice is derived once from its writes.
    december = invoices_of(merchant, sub_id)[-1]
    events = [(e["detail-type"], e["detail"]["event_id"]) for e in published.all()
              if e["detail"].get("invoice", {}).get("id") == december["id"]]
    assert [kind for kind, _ in events] == ["invoice.created", "invoice.finalized", "invoice.paid"]
    assert len({event_id for _, event_id in events}) == 3


# ---------------------------------------------------------------------------
# Stripe failing during a charge


def test_stripe_down_during_a_charge_leaves_the_attempt_to_its_lease(merchant, clock, failing_stripe, localstripe):
    customer_id, sub_id = november_with_usage(merchant, clock)
    down = failing_stripe(500)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == [0]  # SQS will deliver again
    assert down.requests == 1 + payments.MAX_NETWORK_RETRIES
    december = invoices_of(merchant, sub_id)[-1]
    assert december["number"] == "OD2026-000002" and december["status"] == "open"
    assert [a["status"] for a in december["payment_attempts"]] == ["pending"]
    os.environ["STRIPE_API_BASE"] = localstripe
    config.settings.cache_clear()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_stripe_rate_limiting_a_charge_is_retried_with_back_off(merchant, clock, stripe_proxy, pauses):
    customer_id, sub_id = november_with_usage(merchant, clock)
    before = stripe_proxy.count("POST", "/v1/payment_intents")
    stripe_proxy.add("POST", "/v1/payment_intents", "status_before", status=429, times=2)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == []
    assert stripe_proxy.count("POST", "/v1/payment_intents") - before == 3
    assert len(pauses) == 2 and all(0 <= p <= collecting.RATE_LIMIT_PAUSE_CAP for p in pauses)
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_stripe_rate_limiting_without_end_sends_the_message_back(merchant, clock, stripe_proxy, pauses):
    customer_id, sub_id = november_with_usage(merchant, clock)
    before = stripe_proxy.count("POST", "/v1/payment_intents")
    stripe_proxy.add("POST", "/v1/payment_intents", "status_before", status=429, times=None)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == [0]
    assert stripe_proxy.count("POST", "/v1/payment_intents") - before == 1 + collecting.RATE_LIMIT_RETRIES
    assert sum(pauses) <= collecting.RATE_LIMIT_RETRIES * collecting.RATE_LIMIT_PAUSE_CAP
    stripe_proxy.heal()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_stripe_rate_limiting_a_charge_inside_a_request_gives_up_soon_and_the_dunning_run_charges_once(
        merchant, clock, stripe_proxy, pauses):
    """A subscription created while Stripe refuses every PaymentIntent with
    429: the request makes 1 + 3 tries (under 2 s of pauses, far inside API
    Gateway's 29 s) and answers 201 with the first invoice issued, its
    charge pending and leased; once Stripe is back, the dunning run charges
    it once after the lease."""
    customer_id = new_customer(merchant)
    before = stripe_proxy.count("POST", "/v1/payment_intents")
    stripe_proxy.add("POST", "/v1/payment_intents", "status_before", status=429, times=None)
    created = merchant.post("/subscriptions", {"customer_id": customer_id, "offer_id": simple_offer(merchant)})
    assert created.status == 201, created
    tries = stripe_proxy.count("POST", "/v1/payment_intents") - before
    assert tries == 1 + collecting.INTERACTIVE_RATE_LIMIT_RETRIES
    assert len(pauses) == collecting.INTERACTIVE_RATE_LIMIT_RETRIES and sum(pauses) < 2
    [first] = invoices_of(merchant, created.json["id"])
    assert first["status"] == "open" and [a["status"] for a in first["payment_attempts"]] == ["pending"]
    stripe_proxy.heal()
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 0  # still leased
    clock.set(clock.now() + collecting.LEASE + timedelta(minutes=1))
    jobs.dunning_scheduler(clock.now(), inline=True)
    assert_consistent(merchant, created.json["id"], customer_id, [first["number"]], counter=False)


@pytest.mark.parametrize("times", [1, None], ids=["once", "every-try"])
def test_stripe_timing_out_after_it_charged(merchant, clock, stripe_proxy, times):
    """The PaymentIntent is made, the answer never arrives. Once: the
    library's retry with the same idempotency key gets it. Every try: the
    attempt waits for its lease, and the retry finds the charge at Stripe."""
    customer_id, sub_id = november_with_usage(merchant, clock)
    stripe_proxy.add("POST", "/v1/payment_intents", "hang_after", times=times)
    failed = run_worker(billing_message(merchant, sub_id, DEC_1))
    assert failed == ([] if times == 1 else [0])
    stripe_proxy.heal()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)
    assert stripe_proxy.replayed, "the retries carried the attempt's idempotency key"


@pytest.mark.parametrize("status", [500, 503])
def test_stripe_failing_after_it_charged(merchant, clock, stripe_proxy, status):
    customer_id, sub_id = november_with_usage(merchant, clock)
    stripe_proxy.add("POST", "/v1/payment_intents", "status_after", status=status)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == [0]
    assert len(charges_of(merchant, customer_id)) == 2  # it happened, we were not told
    stripe_proxy.heal()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_stripe_failing_before_it_charged_keeps_that_answer_for_the_key(merchant, clock, stripe_proxy):
    """Stripe keeps a key's first answer, a 500 included, for 24 hours. Once
    the lookup shows attempt 1 charged nothing, it is made under a key of its
    own, not left to fail the same way for a day."""
    customer_id, sub_id = november_with_usage(merchant, clock)
    stripe_proxy.add("POST", "/v1/payment_intents", "status_kept", status=500, times=None)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == [0]
    assert len(stripe_proxy.replayed) == payments.MAX_NETWORK_RETRIES  # the library's own retries
    assert len(charges_of(merchant, customer_id)) == 1
    stripe_proxy.heal()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_two_retries_of_an_abandoned_charge_at_once_charge_once(merchant, clock, aws_faults, atomic_dynamodb):
    """The worker died before reaching Stripe; after the lease, the
    redelivered message and the dunning run resume it at the same moment."""
    import threading

    customer_id, sub_id = november_with_usage(merchant, clock)
    aws_faults.add("TransactWriteItems", "crash_after", skip=0)  # finalized, Stripe not asked
    with pytest.raises(WorkerDied):
        run_worker(billing_message(merchant, sub_id, DEC_1))
    aws_faults.clear()
    clock.set(clock.now() + LEASE_OVER)
    together = threading.Barrier(2)
    real_find = invoice_store.find_invoice
    errors = []

    waited = set()

    def find_then_wait(*args, **kwargs):
        found = real_find(*args, **kwargs)
        name = threading.current_thread().name
        if name.startswith("resume") and name not in waited:
            waited.add(name)  # both have read the invoice before either acts
            together.wait(30)
        return found

    invoice_store.find_invoice = find_then_wait

    def resume(run):
        try:
            run()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    runs = [lambda: run_worker(billing_message(merchant, sub_id, DEC_1)),
            lambda: jobs.dunning_scheduler(clock.now(), inline=True)]
    threads = [threading.Thread(target=resume, args=(run,), name=f"resume-{n}") for n, run in enumerate(runs)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        invoice_store.find_invoice = real_find
    assert not errors, errors
    assert_december_bills_november_once(merchant, sub_id, customer_id)


# ---------------------------------------------------------------------------
# Stripe failing during the payment page


@pytest.mark.parametrize("fault, status", [("status_before", 429), ("status_before", 500), ("hang_after", 200)],
                         ids=["429", "500", "timeout"])
def test_the_payment_page_asks_to_come_back_when_stripe_fails(merchant, clock, stripe_proxy, fault, status):
    customer_id = new_customer(merchant, card=None)
    token = token_of(merchant.post(f"/customers/{customer_id}/payment-link").json)
    stripe_proxy.add("POST", "/v1/", fault, status=status, times=None)
    page = open_page(merchant, token)
    assert page.status == 503 and page.headers["content-type"].startswith("text/html")
    assert "temporarily unavailable" in page.html and "Traceback" not in page.html
    stripe_proxy.heal()
    assert open_page(merchant, token).status == 200


def card_entered_for_an_unpaid_invoice(merchant, clock):
    """A customer without a card whose November invoice waits for one, and
    a card entered on its payment page (confirmed at Stripe, not yet sent
    to /complete), two hours later: (customer_id, subscription, token,
    setup_intent)."""
    customer_id = new_customer(merchant, card=None)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    assert run_worker(billing_message(merchant, sub["id"], NOV_1)) == []
    token = token_of(merchant.post(f"/customers/{customer_id}/payment-link").json)
    setup_intent = confirm_in_browser(page_config(open_page(merchant, token).html)["clientSecret"])
    clock.set(NOV_1 + timedelta(hours=2))
    return customer_id, sub, token, setup_intent


@pytest.mark.parametrize("path, status", [("/v1/payment_methods", 500), ("/v1/customers", 429)])
def test_completing_the_page_while_stripe_fails_then_again_sets_the_card_and_charges_once(
        merchant, clock, stripe_proxy, path, status, pauses):
    customer_id, sub, token, setup_intent = card_entered_for_an_unpaid_invoice(merchant, clock)

    stripe_proxy.add("POST", path, "status_before", status=status, times=None)
    public = merchant.as_key(None)
    refused = public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert refused.status in (429, 503), refused
    assert refused.json["error"]["type"] in ("api_error", "rate_limit_error")
    assert merchant.get(f"/customers/{customer_id}").json["default_payment_method"] is None
    stripe_proxy.heal()
    done = public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert done.status == 200 and done.json["default_payment_method"]["last4"] == "4242"
    again = public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert again.status == 200
    assert_consistent(merchant, sub["id"], customer_id, ["OD2026-000001"])


def test_the_card_is_saved_when_the_charge_it_triggers_times_out(merchant, clock, stripe_proxy):
    customer_id, sub, token, setup_intent = card_entered_for_an_unpaid_invoice(merchant, clock)

    stripe_proxy.add("POST", "/v1/payment_intents", "hang_after", times=None)
    done = merchant.as_key(None).post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert done.status == 200 and done.json["default_payment_method"]["last4"] == "4242"
    stripe_proxy.heal()
    # Stripe's setup_intent.succeeded comes next: the charge in flight is left to its lease.
    intent = payments._client().v1.setup_intents.retrieve(setup_intent).to_dict()
    assert deliver(merchant, event("setup_intent.succeeded", intent)).status == 200
    assert len(charges_of(merchant, customer_id)) == 1
    clock.set(clock.now() + LEASE_OVER)
    jobs.dunning_scheduler(clock.now(), inline=True)
    assert_consistent(merchant, sub["id"], customer_id, ["OD2026-000001"])


# ---------------------------------------------------------------------------
# DynamoDB throttling and conditional-check failures


def is_finalization(body: dict) -> bool:
    return any(item.get("sk") == "invoice" for item in transaction_items(body))


def is_paid_invoice(body: dict) -> bool:
    item = item_of(body)
    return item.get("sk") == "invoice" and item.get("status") == "paid"


@pytest.mark.parametrize("times", [1, None], ids=["once", "throughout"])
def test_a_throttled_finalization(merchant, clock, aws_faults, times):
    """Once: botocore's retry absorbs it. Throughout: the message goes back
    with nothing written (no number taken, no subscription moved)."""
    customer_id, sub_id = november_with_usage(merchant, clock)
    rule = aws_faults.add("TransactWriteItems", "throttle", times=times, match=is_finalization)
    failed = run_worker(billing_message(merchant, sub_id, DEC_1))
    if times is None:
        assert failed == [0] and rule.hits == 4  # PynamoDB's 3 retries, then the message fails
        assert len(invoices_of(merchant, sub_id)) == 1
        assert invoice_store.last_number(merchant.merchant["id"], 2026) == 1
        assert merchant.get(f"/subscriptions/{sub_id}").json["current_period_start"] == iso(NOV_1)
        aws_faults.clear()
        assert run_worker(billing_message(merchant, sub_id, DEC_1)) == []
    else:
        assert failed == [] and rule.hits == 1
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def test_a_throttled_write_after_stripe_charged(merchant, clock, aws_faults):
    customer_id, sub_id = november_with_usage(merchant, clock)
    aws_faults.add("PutItem", "throttle", times=None, match=is_paid_invoice)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == [0]
    aws_faults.clear()
    assert redeliver_after_visibility_timeout(clock, merchant, sub_id, DEC_1) == []
    assert_december_bills_november_once(merchant, sub_id, customer_id)


@pytest.mark.parametrize("operation, match", [("TransactWriteItems", is_finalization), ("PutItem", is_paid_invoice)],
                         ids=["finalization", "payment-recorded"])
def test_a_conditional_check_failure_is_read_again_and_decided_again(merchant, clock, aws_faults, operation, match):
    """DynamoDB refuses a write as if another writer got there first: the
    worker reads again and goes on, in the same invocation."""
    customer_id, sub_id = november_with_usage(merchant, clock)
    rule = aws_faults.add(operation, "condition", match=match)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == []
    assert rule.hits == 1
    assert_december_bills_november_once(merchant, sub_id, customer_id)


def device_message(api, seq: int, at, device_id="neksia-0042", **counters) -> str:
    return json.dumps({"seq": seq, "ts": iso(at), "counters": counters, "merchant_id": api.merchant["id"],
                       "device_id": device_id})


def ingest(client, bodies: list[str]) -> list[int]:
    event_ = sqs_event(bodies)
    ids = [r["messageId"] for r in event_["Records"]]
    response = client.lambda_.invoke("ingest_usage", event_)
    return sorted(ids.index(f["itemIdentifier"]) for f in response.payload["batchItemFailures"])


@pytest.fixture
def two_devices(merchant, clock):
    customer_id = new_customer(merchant, card=None)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    for device in ("neksia-0042", "neksia-0043"):
        assert merchant.post("/devices", {"device_id": device, "subscription_id": sub["id"]}).status == 201
    clock.set(NOV_1 + timedelta(days=20))
    return sub["id"]


def montages(api, sub_id) -> str:
    meters = api.get(f"/subscriptions/{sub_id}/usage?period_start={iso(NOV_1)}").json["meters"]
    return meters.get("montages", {}).get("total", "0")


@pytest.mark.parametrize("fault", ["throttle", "condition"])
def test_refused_device_writes_come_back_and_count_once(merchant, client, two_devices, aws_faults, fault):
    day = NOV_1 + timedelta(days=2)
    batch = [device_message(merchant, 1, day, montages=100),
             device_message(merchant, 1, day, device_id="neksia-0043", montages=500)]
    assert ingest(client, batch) == []
    batch = [device_message(merchant, 2, day + timedelta(hours=1), montages=110),
             device_message(merchant, 2, day + timedelta(hours=1), device_id="neksia-0043", montages=503),
             device_message(merchant, 3, day + timedelta(hours=2), montages=112)]
    aws_faults.add("UpdateItem", fault, times=None, match=lambda body: "neksia-0042" in item_of(body).get("pk", ""))
    aws_faults.add("TransactWriteItems", fault, times=None,
                   match=lambda body: any("neksia-0042" in i.get("pk", "") for i in transaction_items(body)))
    assert ingest(client, batch) == [0, 2]  # the other device's reading went in
    assert montages(merchant, two_devices) == "3"
    aws_faults.clear()
    assert ingest(client, batch) == []  # SQS delivers the whole batch again
    assert montages(merchant, two_devices) == "15"


def test_a_throttled_usage_request_is_retried_by_the_client_and_counts_once(merchant, two_devices, aws_faults):
    events = [{"event_id": f"m-{n}", "subscription_id": two_devices, "meter": "montages", "quantity": "1",
               "timestamp": iso(NOV_1 + timedelta(days=3, minutes=n))} for n in range(150)]
    # The second of the request's transactions is throttled throughout.
    aws_faults.add("TransactWriteItems", "throttle", times=None, skip=1)
    failed = merchant.post("/usage", {"events": events})
    assert failed.status in (429, 503), failed
    assert failed.json["error"]["type"] in ("api_error", "rate_limit_error")
    aws_faults.clear()
    again = merchant.post("/usage", {"events": events})
    assert again.status == 200
    assert again.json["accepted"] + again.json["duplicates"] == 150
    assert montages(merchant, two_devices) == "150"


# ---------------------------------------------------------------------------
# SQS redelivering a whole batch


def test_a_billing_batch_redelivered_whole_after_its_worker_died(merchant, clock, aws_faults):
    offer_id = simple_offer(merchant)
    customers = [new_customer(merchant, name=f"Labo {n}") for n in range(4)]
    subs = [subscribe(merchant, c, offer_id, start_at=iso(NOV_1))["id"] for c in customers]  # first invoices paid
    clock.set(DEC_1)
    batch = [billing_message(merchant, s, DEC_1) for s in subs]
    # The worker dies after the second subscription's invoice was finalized.
    aws_faults.add("TransactWriteItems", "crash_after", skip=1, match=is_finalization)
    with pytest.raises(WorkerDied):
        run_worker(*batch)
    aws_faults.clear()
    assert run_worker(*batch) == []  # at once (another worker, an overlapping run)
    clock.set(clock.now() + LEASE_OVER)
    assert run_worker(*batch) == []  # after the visibility timeout
    assert run_worker(*reversed(batch)) == []
    numbers = []
    for sub_id, customer_id in zip(subs, customers):
        _, december = assert_consistent(merchant, sub_id, customer_id,
                                        [i["number"] for i in invoices_of(merchant, sub_id)], counter=False)
        numbers.append(december["number"])
    assert sorted(numbers) == [f"OD2026-{n:06d}" for n in range(5, 9)]
    assert invoice_store.last_number(merchant.merchant["id"], 2026) == 8


def test_a_usage_batch_redelivered_whole_after_its_worker_died(merchant, client, two_devices, aws_faults):
    day = NOV_1 + timedelta(days=2)
    assert ingest(client, [device_message(merchant, 1, day, montages=100),
                           device_message(merchant, 1, day, device_id="neksia-0043", montages=500)]) == []
    batch = [device_message(merchant, 2, day + timedelta(hours=1), montages=104),
             device_message(merchant, 2, day + timedelta(hours=1), device_id="neksia-0043", montages=530),
             device_message(merchant, 3, day + timedelta(hours=2), montages=109)]
    aws_faults.add("UpdateItem", "crash_after")
    aws_faults.add("TransactWriteItems", "crash_after")
    with pytest.raises(WorkerDied):
        ingest(client, batch)
    aws_faults.clear()
    assert ingest(client, batch) == []
    assert ingest(client, list(reversed(batch))) == []
    assert montages(merchant, two_devices) == "39"
    device = merchant.get("/devices/neksia-0042").json
    assert device["last_reading"]["seq"] == 3 and device["counters"]["montages"]["value"] == "109"


# ---------------------------------------------------------------------------
# Stripe's webhooks delivered twice, late, out of order


def test_payment_webhooks_twice_late_and_out_of_order(merchant, clock):
    """Attempt 1 is declined, attempt 2 (a new card) succeeds. Stripe then
    delivers: attempt 2's success twice, attempt 1's failure after it,
    attempt 2's success again days later as a new event id. The invoice
    stays paid by attempt 2; nothing is charged again."""
    from tests.integration.test_billing import CARD_DECLINED_ON_CHARGE

    customer_id = new_customer(merchant, card=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    assert run_worker(billing_message(merchant, sub["id"], NOV_1)) == []
    clock.set(NOV_1 + timedelta(hours=3))
    save_card(merchant, customer_id, CARD_OK)  # the hook charges attempt 2
    [invoice] = invoices_of(merchant, sub["id"])
    assert [a["status"] for a in invoice["payment_attempts"]] == ["failed", "succeeded"]
    paid = merchant.get(f"/invoices/{invoice['id']}").json
    charges = sorted(charges_of(merchant, customer_id), key=lambda c: c["metadata"]["attempt"])
    failed_charge, good_charge = charges
    succeeded = event("payment_intent.succeeded", good_charge)
    for payload in (succeeded, succeeded, event("payment_intent.payment_failed", failed_charge)):
        assert deliver(merchant, payload).status == 200
    clock.set(NOV_1 + timedelta(days=3))
    assert deliver(merchant, event("payment_intent.succeeded", good_charge)).status == 200
    assert merchant.get(f"/invoices/{invoice['id']}").json == paid
    assert_consistent(merchant, sub["id"], customer_id, ["OD2026-000001"])


def test_a_success_webhook_arriving_before_the_worker_records_the_charge(merchant, clock, aws_faults):
    """The worker charged and is slow to write (its write throttled); Stripe's
    webhook records the payment first; the worker's own write then finds
    the attempt concluded and changes nothing."""
    customer_id, sub_id = november_with_usage(merchant, clock)
    delivered = []

    def webhook_first(body: dict) -> bool:
        if is_paid_invoice(body) and not delivered:
            delivered.append("delivering")
            intent = [c for c in charges_of(merchant, customer_id) if c["metadata"]["attempt"] == "1"
                      and c["metadata"]["invoice_id"] != invoices_of(merchant, sub_id)[0]["id"]][0]
            delivered[0] = deliver(merchant, event("payment_intent.succeeded", intent)).status
            return True
        return False

    aws_faults.add("PutItem", "condition", match=webhook_first)
    assert run_worker(billing_message(merchant, sub_id, DEC_1)) == []
    assert delivered == [200]
    assert_december_bills_november_once(merchant, sub_id, customer_id)
