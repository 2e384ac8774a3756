"""The billing run on moto and localstripe: a month of Clic&O invoiced and
paid (checked by hand), late usage, exactly one invoice and one charge
whatever is re-run or crashes, and dunning.

Stripe is localstripe through the official library; the charges each test
makes are counted there, per Stripe customer.

The constants, helpers and fixtures here (offers, customers and their cards,
subscriptions, usage, a subscription's invoices and charges, the clock's
start, atomic_dynamodb) are shared: test_billing_periods.py (calendars,
changes, catch-up), test_billing_invoices.py (money rules, numbers, the
invoices API) and other modules import them from here."""
from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib import jobs, payments
from chalicelib.services import cards, collecting, issuing
from chalicelib.store import customers as customer_store
from chalicelib.store import invoices as invoice_store
from tests.integration.domain_events import published  # noqa: F401  (fixture)

UTC = timezone.utc
CARD_OK = "4242424242424242"
CARD_DECLINED_ON_CHARGE = "4000000000000341"

# Optique Durand bills in Paris time: 1 Nov 2026 00:00 in Paris is 31 Oct 23:00 UTC.
NOV_1 = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
DEC_1 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
JAN_1 = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)

CLICO = {
    "code": "clico-neksia",
    "name": "Clic&O Neksia",
    "currency": "EUR",
    "billing_interval": "month",
    "interval_count": 1,
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {"code": "calls", "type": "metered", "meter": "calls", "tier_mode": "graduated", "included_units": "100",
         "tiers": [{"up_to": "1000", "unit_amount": "0.50"}, {"up_to": None, "unit_amount": "0.40",
                                                               "flat_amount": "0"}]},
        {"code": "support", "type": "time_and_materials", "hours_meter": "agent_hours", "hourly_rate": "38.00",
         "materials_meter": "parts_cost", "markup_percent": "15"},
        {"code": "quality", "type": "bonus_malus", "kpi_meter": "service_level", "target": "0.90",
         "bonus_percent": "5", "malus_percent": "10", "applies_to": ["calls"]},
    ],
    "options": [{"code": "express", "name": "4h on-site", "amount": "30.00", "entitlements": ["4h_response"]}],
}


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOV_1


@pytest.fixture
def atomic_dynamodb(monkeypatch):
    """DynamoDB applies each write (a transaction included) atomically;
    moto's in-process backend does not under threads. One lock around its
    operations gives it that one property, so races are decided by our
    conditions, as they are on DynamoDB."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan", "batch_get_item",
                 "transact_write_items", "transact_get_items"):
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, __original=original, **kwargs):
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def new_offer(api, body=None, **fields) -> str:
    response = api.post("/offers", {**(body or CLICO), **fields})
    assert response.status == 201, response
    return response.json["id"]


def simple_offer(api, code="simple", base="49.00", **fields) -> str:
    return new_offer(api, {"code": code, "name": code, "currency": "EUR", "billing_interval": "month",
                           "components": [{"code": "base", "type": "flat", "amount": base},
                                          {"code": "montage", "type": "metered", "meter": "montages",
                                           "unit_amount": "1.20"}],
                           "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}]}, **fields)


def save_card(api, customer_id: str, number: str = CARD_OK) -> str:
    """The payment page's server path: a SetupIntent for the customer,
    confirmed with the card as Stripe.js would, then completed by the
    backend (which attaches the card and makes it the default)."""
    merchant_id = api.merchant["id"]
    record = customer_store.get_customer(merchant_id, customer_id)
    stripe_customer_id = cards.stripe_customer_for(record)
    intent = payments.create_setup_intent(stripe_customer_id, merchant_id=merchant_id, customer_id=customer_id)
    method = payments._client().v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    payments._client().v1.setup_intents.confirm(intent.id, params={"payment_method": method["id"]})
    cards.complete_card_setup(merchant_id, customer_id, payments.retrieve_setup_intent(intent.id),
                              completed_by="page")
    return stripe_customer_id


def new_customer(api, *, card: str | None = CARD_OK, **fields) -> str:
    body = {"name": "Labo Martin", "email": "compta@labo-martin.fr", "country": "FR", **fields}
    response = api.post("/customers", body)
    assert response.status == 201, response
    if card:
        save_card(api, response.json["id"], card)
    return response.json["id"]


def subscribe(api, customer_id: str, offer_id: str, **fields) -> dict:
    response = api.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id, **fields})
    assert response.status == 201, response
    return response.json


def charges_of(api, customer_id: str) -> list[dict]:
    """Every PaymentIntent localstripe holds for the customer."""
    stripe_customer_id = customer_store.get_customer(api.merchant["id"], customer_id).stripe_customer_id
    listing = payments._client().v1.payment_intents.list(params={"customer": stripe_customer_id, "limit": 100})
    return [intent.to_dict() for intent in listing.data]


def invoices_of(api, subscription_id: str) -> list[dict]:
    response = api.get(f"/invoices?subscription_id={subscription_id}&limit=100")
    assert response.status == 200, response
    return list(reversed(response.json["data"]))


def bill(api, subscription_id: str, **kw) -> dict:
    return issuing.bill_subscription(api.merchant["id"], subscription_id, **kw)


def record_usage(api, subscription_id: str, at: datetime, **quantities) -> None:
    events = [{"event_id": f"evt-{uuid.uuid4()}", "subscription_id": subscription_id, "meter": meter,
               "quantity": quantity, "timestamp": iso(at)} for meter, quantity in quantities.items()]
    response = api.post("/usage", {"events": events})
    assert response.status == 200, response


def sqs_event(bodies: list[str]) -> dict:
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": "handle", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"}, "messageAttributes": {},
        "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:q",
        "awsRegion": "eu-west-1"} for body in bodies]}


def device_reading(client, merchant_id: str, seq: int, at: datetime, **counters) -> None:
    body = json.dumps({"seq": seq, "ts": iso(at), "counters": counters, "merchant_id": merchant_id,
                       "device_id": "neksia-0042"})
    response = client.lambda_.invoke("ingest_usage", sqs_event([body]))
    assert response.payload["batchItemFailures"] == [], response.payload


def pdf_text(document: bytes) -> str:
    """The text drawn on the pages, as a PDF reader extracts it (whitespace collapsed)."""
    import io

    from pypdf import PdfReader

    pages = PdfReader(io.BytesIO(document)).pages
    return " ".join(" ".join(page.extract_text() or "" for page in pages).split())


def money(text: str) -> Decimal:
    return Decimal(text)


# ---------------------------------------------------------------------------
# A month of Clic&O, by hand


def test_a_month_of_clico_is_invoiced_and_paid(merchant, clock, client, published):
    """Labo Martin subscribes to Clic&O Neksia with the express option and a
    negotiated montage price (1.05 instead of 1.20). In November its
    Neksia reports 412 montages and 210 frame tracings (tracings are not
    priced: recorded, never billed), the call centre 650 calls, support
    7.5 hours and 120.00 of parts, and the service level ends at 0.93.

    December's invoice, by hand:
      montage   412 x 1.05                                = 432.60
      calls     650 - 100 included = 550 in tier 1 x 0.50 = 275.00
      support   7.5 h x 38.00                             = 285.00
                parts 120.00 x 1.15                       = 138.00
      quality   0.93 >= 0.90: bonus 5% of calls 275.00    =  13.75
      base      December, in advance                      =  49.00
      express   December, in advance                      =  30.00
      subtotal                                              1223.35
      VAT 20% (FR)                                           244.67
      total                                                 1468.02
    """
    merchant_id = merchant.merchant["id"]
    offer_id = new_offer(merchant)
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, offer_id, options=["express"],
                    price_overrides={"montage": {"unit_amount": "1.05"}}, start_at=iso(NOV_1))
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub["id"]}).status == 201

    # The first invoice, issued and paid with the subscription: November's
    # fees in advance (49.00 + 30.00, VAT 15.80). The run has nothing to add.
    first = invoices_of(merchant, sub["id"])
    assert [(i["number"], i["status"], i["total"]) for i in first] == [("OD2026-000001", "paid", "94.80")]
    assert bill(merchant, sub["id"])["invoices"] == []

    clock.set(datetime(2026, 11, 2, 8, tzinfo=UTC))
    device_reading(client, merchant_id, 1, clock.now(), montages=12000, tracings=200)  # the baseline
    clock.set(datetime(2026, 11, 29, 17, tzinfo=UTC))
    device_reading(client, merchant_id, 2, clock.now(), montages=12412, tracings=410)
    record_usage(merchant, sub["id"], datetime(2026, 11, 10, 9, tzinfo=UTC), calls="400", agent_hours="4.5")
    record_usage(merchant, sub["id"], datetime(2026, 11, 20, 9, tzinfo=UTC), calls="250", agent_hours="3",
                 parts_cost="120.00", service_level="0.93")

    clock.set(DEC_1 + timedelta(minutes=5))
    result = jobs.billing_scheduler(clock.now(), inline=True)
    assert result["due"] == 1
    invoices = invoices_of(merchant, sub["id"])
    assert [i["number"] for i in invoices] == ["OD2026-000001", "OD2026-000002"]
    december = merchant.get(f"/invoices/{invoices[1]['id']}").json
    lines = [(l["kind"], l["component"], l["quantity"], l["unit_amount"], l["amount"]) for l in december["lines"]]
    assert lines == [
        ("usage", "montage", "412", "1.05", "432.60"),
        ("usage", "calls", "550", "0.50", "275.00"),
        ("usage", "support", "7.5", "38.00", "285.00"),
        ("usage", "support", "120.00", "1.15", "138.00"),
        ("adjustment", "quality", "1", None, "13.75"),
        ("fee", "base", "1", "49.00", "49.00"),
        ("option", "express", "1", "30.00", "30.00"),
    ]
    assert not any("tracing" in l["description"] for l in december["lines"])
    usage_lines = [l for l in december["lines"] if l["kind"] in ("usage", "adjustment")]
    assert {(l["period_start"], l["period_end"]) for l in usage_lines} == {(iso(NOV_1), iso(DEC_1))}
    assert {(l["period_start"], l["period_end"]) for l in december["lines"] if l["kind"] in ("fee", "option")} \
        == {(iso(DEC_1), iso(JAN_1))}
    assert december["subtotal"] == "1223.35"
    assert december["tax"] == [{"rate": "20.0", "amount": "244.67"}]
    assert (december["total"], december["amount_paid"], december["amount_due"]) == ("1468.02", "1468.02", "0.00")
    assert december["status"] == "paid" and december["credit_applied"] == "0.00"
    assert december["period_start"] == iso(NOV_1) and december["period_end"] == iso(JAN_1)
    assert december["billing_reason"] == "subscription_cycle" and december["next_payment_attempt"] is None
    [attempt] = december["payment_attempts"]
    assert attempt["status"] == "succeeded" and attempt["failure_code"] is None

    # Stripe charged exactly the total, in cents, once per invoice.
    charges = charges_of(merchant, customer_id)
    assert sorted(c["amount"] for c in charges) == [9480, 146802]
    december_charge = next(c for c in charges if c["id"] == attempt["payment_intent"])
    assert december_charge["metadata"]["invoice_id"] == december["id"]
    assert december_charge["status"] == "succeeded" and december_charge["currency"] == "eur"

    # The subscription moved to December, and billed November's usage once.
    moved = merchant.get(f"/subscriptions/{sub['id']}").json
    assert (moved["current_period_start"], moved["current_period_end"]) == (iso(DEC_1), iso(JAN_1))
    assert moved["next_billing_at"] == iso(JAN_1) and moved["status"] == "active"
    types = [e["detail-type"] for e in published.all()]
    for event in ("invoice.created", "invoice.finalized", "invoice.paid"):
        assert types.count(event) == 2, (event, types)

    # Running the run again bills nothing more.
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 0
    assert len(invoices_of(merchant, sub["id"])) == 2 and len(charges_of(merchant, customer_id)) == 2


def test_late_usage_goes_on_the_next_invoice_on_its_own_line(merchant, clock):
    offer_id = simple_offer(merchant)
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, offer_id, start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    clock.set(datetime(2026, 11, 20, tzinfo=UTC))
    record_usage(merchant, sub["id"], clock.now(), montages="10")
    clock.set(DEC_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    # November's invoice is final; 5 more montages of November arrive on 3 December.
    clock.set(datetime(2026, 12, 3, tzinfo=UTC))
    record_usage(merchant, sub["id"], datetime(2026, 11, 28, tzinfo=UTC), montages="5")
    clock.set(JAN_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    invoices = invoices_of(merchant, sub["id"])
    assert [l["amount"] for l in invoices[1]["lines"] if l["kind"] == "usage"] == ["12.00"]
    january = invoices[2]
    late = [l for l in january["lines"] if "late usage" in l["description"]]
    assert [(l["quantity"], l["amount"], l["period_start"], l["period_end"]) for l in late] == [
        ("5", "6.00", iso(NOV_1), iso(DEC_1))
    ]
    assert "2026-10-31 to 2026-11-30" in late[0]["description"]
    # December's own usage (none) is rated too, and the late line is not billed twice.
    clock.set(datetime(2027, 1, 31, 23, 1, tzinfo=UTC))
    bill(merchant, sub["id"])
    assert not [l for l in invoices_of(merchant, sub["id"])[3]["lines"] if "late usage" in l["description"]]


# ---------------------------------------------------------------------------
# Exactly once


def test_the_same_run_twice_and_two_workers_at_once_give_one_invoice_and_one_charge(
        merchant, clock, atomic_dynamodb):
    merchant_id = merchant.merchant["id"]
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))

    # The same message handled twice, one after the other.
    message = {"type": "bill_subscription", "merchant_id": merchant_id, "subscription_id": sub["id"],
               "boundary": iso(NOV_1)}
    first = jobs.billing_worker(sqs_event([jobs.message_body(message)]))
    again = jobs.billing_worker(sqs_event([jobs.message_body(message)]))
    assert first == again == {"batchItemFailures": []}
    assert len(invoices_of(merchant, sub["id"])) == 1 and len(charges_of(merchant, customer_id)) == 1

    # Two workers on the same boundary at the same moment, both having read
    # the subscription before either writes.
    clock.set(DEC_1 + timedelta(minutes=3))
    read_together = threading.Barrier(2)
    real_read = invoice_store.subscription_for_billing
    calls = []

    def read_then_wait(*args, **kwargs):
        found = real_read(*args, **kwargs)
        if len(calls) < 2:
            calls.append(1)
            read_together.wait(30)
        return found

    invoice_store.subscription_for_billing = read_then_wait
    errors, results = [], []

    def worker():
        try:
            results.append(bill(merchant, sub["id"], boundary=iso(DEC_1)))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        invoice_store.subscription_for_billing = real_read
    assert not errors, errors
    assert sorted(len(r["invoices"]) for r in results) == [0, 1]
    invoices = invoices_of(merchant, sub["id"])
    assert [i["number"] for i in invoices] == ["OD2026-000001", "OD2026-000002"]
    assert [i["status"] for i in invoices] == ["paid", "paid"]
    assert len(charges_of(merchant, customer_id)) == 2


class CrashAfterCharge:
    """The payments gateway, with the worker dying right after Stripe
    charged (before the invoice could be marked paid)."""

    def __getattr__(self, name):
        return getattr(payments, name)

    def charge_invoice(self, **kwargs):
        payments.charge_invoice(**kwargs)
        raise SystemExit("the worker died")


def test_a_crash_after_stripe_charged_then_a_retry_charges_once(merchant, clock):
    merchant_id = merchant.merchant["id"]
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))  # November paid
    clock.set(DEC_1)
    collecting.use_gateway(CrashAfterCharge())
    try:
        with pytest.raises(SystemExit):
            bill(merchant, sub["id"], boundary=iso(DEC_1))
    finally:
        collecting.use_gateway(None)
    [_, invoice] = invoices_of(merchant, sub["id"])
    assert invoice["status"] == "open" and invoice["payment_attempts"][0]["status"] == "pending"
    assert [c["status"] for c in charges_of(merchant, customer_id)] == ["succeeded", "succeeded"]

    # The same message again right away: the charge is still leased to the dead worker.
    bill(merchant, sub["id"], boundary=iso(DEC_1))
    assert len(charges_of(merchant, customer_id)) == 2
    assert merchant.get(f"/invoices/{invoice['id']}").json["status"] == "open"

    # SQS delivers the message again after its visibility timeout, to a
    # worker: the lease has run out, the charge made before the crash is
    # found, not made again.
    clock.set(clock.now() + timedelta(minutes=6))
    message = {"type": "bill_subscription", "merchant_id": merchant_id, "subscription_id": sub["id"],
               "boundary": iso(DEC_1)}
    assert jobs.billing_worker(sqs_event([jobs.message_body(message)])) == {"batchItemFailures": []}
    paid = merchant.get(f"/invoices/{invoice['id']}").json
    assert paid["status"] == "paid" and paid["amount_paid"] == "58.80"
    [charge] = [c for c in charges_of(merchant, customer_id) if c["metadata"]["invoice_id"] == invoice["id"]]
    assert paid["payment_attempts"] == [
        {"at": iso(DEC_1), "status": "succeeded", "payment_intent": charge["id"], "failure_code": None}
    ]
    # Stripe's webhook for that charge, delivered late and twice, changes nothing.
    assert collecting.reconcile_payment(charge)["status"] == "paid"
    assert collecting.reconcile_payment(charge)["status"] == "paid"
    assert merchant.get(f"/invoices/{invoice['id']}").json == paid
    assert merchant_id


def test_the_dunning_run_resumes_a_charge_whose_worker_died(merchant, clock):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))  # November paid
    clock.set(DEC_1)
    collecting.use_gateway(CrashAfterCharge())
    try:
        with pytest.raises(SystemExit):
            bill(merchant, sub["id"])
    finally:
        collecting.use_gateway(None)
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 0
    clock.set(clock.now() + timedelta(minutes=6))
    result = jobs.dunning_scheduler(clock.now(), inline=True)
    assert result["due"] == 1 and result["processed"][0]["status"] == "paid"
    assert len(charges_of(merchant, customer_id)) == 2


# ---------------------------------------------------------------------------
# Dunning


def test_a_declined_card_is_retried_three_times_then_the_subscription_is_canceled(new_merchant, clock, published):
    merchant = new_merchant(dunning_retry_days=[1, 3, 5])
    customer_id = new_customer(merchant, card=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    assert invoice["status"] == "open"
    assert [a["status"] for a in invoice["payment_attempts"]] == ["failed"]
    assert invoice["payment_attempts"][0]["failure_code"] == "card_declined"
    assert invoice["next_payment_attempt"] == iso(NOV_1 + timedelta(days=1))
    assert invoice["payment_link"]["url"].startswith("http")
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "past_due"

    # Retries are counted from the first failure: +1, +3, +5 days.
    for day, expected_next in ((1, 3), (3, 5)):
        clock.set(NOV_1 + timedelta(days=day, minutes=1))
        assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 1
        current = merchant.get(f"/invoices/{invoice['id']}").json
        assert current["status"] == "open"
        assert current["next_payment_attempt"] == iso(NOV_1 + timedelta(days=expected_next))
        assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "past_due"
    clock.set(NOV_1 + timedelta(days=4))
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 0  # not before its day

    clock.set(NOV_1 + timedelta(days=5, minutes=1))
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 1
    final = merchant.get(f"/invoices/{invoice['id']}").json
    assert final["status"] == "uncollectible" and final["next_payment_attempt"] is None
    assert [a["status"] for a in final["payment_attempts"]] == ["failed"] * 4
    assert len({a["payment_intent"] for a in final["payment_attempts"]}) == 4
    assert len(charges_of(merchant, customer_id)) == 4
    canceled = merchant.get(f"/subscriptions/{sub['id']}").json
    assert canceled["status"] == "canceled" and canceled["cancellation_reason"] == "payment_failed"
    assert canceled["next_billing_at"] is None
    assert len(published.of_type("invoice.payment_failed")) == 4
    assert len(published.of_type("invoice.marked_uncollectible")) == 1
    assert published.of_type("subscription.canceled")[-1]["subscription"]["cancellation_reason"] == "payment_failed"
    # Nothing more is ever tried.
    clock.set(NOV_1 + timedelta(days=40))
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 0
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 0


def test_a_new_card_retries_at_once_and_reactivates(merchant, clock):
    customer_id = new_customer(merchant, card=None)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    assert sub["status"] == "incomplete"
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    assert invoice["status"] == "open"
    assert invoice["payment_attempts"][0]["failure_code"] == "no_payment_method"
    assert invoice["payment_link"]["url"].startswith("http")
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "incomplete"
    assert merchant.post(f"/invoices/{invoice['id']}/pay").json["error"]["code"] == "no_payment_method"

    clock.set(NOV_1 + timedelta(hours=5))
    save_card(merchant, customer_id)  # the payment page: the hook retries the open invoices
    paid = merchant.get(f"/invoices/{invoice['id']}").json
    assert paid["status"] == "paid" and [a["status"] for a in paid["payment_attempts"]] == ["failed", "succeeded"]
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    assert len(charges_of(merchant, customer_id)) == 1


def test_a_card_gone_by_the_boundary_makes_it_past_due_with_a_payment_link(merchant, clock, published):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    # Someone deletes the Stripe customer in the dashboard: no card any more.
    record = customer_store.get_customer(merchant.merchant["id"], customer_id)
    cards.stripe_customer_deleted({"id": record.stripe_customer_id, "object": "customer",
                                   "metadata": {"merchant_id": merchant.merchant["id"], "customer_id": customer_id}})
    clock.set(DEC_1 + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    december = invoices_of(merchant, sub["id"])[-1]
    assert (december["status"], december["amount_due"]) == ("open", december["total"])
    assert [(a["status"], a["failure_code"], a["payment_intent"]) for a in december["payment_attempts"]] == [
        ("failed", "no_payment_method", None)]
    # The link the customer is sent (by the alerts) is on the invoice and in the event.
    link = december["payment_link"]
    assert link["url"].startswith("http") and "/pay/" in link["url"] and link["expires_at"] > iso(clock.now())
    [failed] = published.of_type("invoice.payment_failed")
    assert failed["invoice"]["payment_link"] == link
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "past_due"
    listing = payments._client().v1.payment_intents.list(params={"customer": record.stripe_customer_id, "limit": 100})
    assert len(listing.data) == 1  # November's only


def test_one_failing_subscription_does_not_stop_the_local_run(merchant, clock):
    """The local clock runs the jobs in its own process: a subscription whose
    billing fails is reported and left on the billing queue (the driver
    retries it, as SQS would redeliver it); the others are billed."""
    import boto3

    offer_id = simple_offer(merchant)
    doomed_customer = new_customer(merchant, name="Gone")
    doomed = subscribe(merchant, doomed_customer, offer_id, start_at=iso(NOV_1))
    fine = subscribe(merchant, new_customer(merchant), offer_id, start_at=iso(NOV_1))
    # A record lost under the run's feet (a bad restore): billing it fails.
    merchant_id = merchant.merchant["id"]
    boto3.client("dynamodb").delete_item(
        TableName=os.environ["TABLE_NAME"],
        Key={"pk": {"S": f"{merchant_id}#{doomed_customer}"}, "sk": {"S": "customer"}})
    clock.set(DEC_1 + timedelta(minutes=1))
    result = jobs.billing_scheduler(clock.now(), inline=True)
    assert result["due"] == 2 and result["failed"] == 1 and result["requeued"] == 1
    failed = [p for p in result["processed"] if "error" in p]
    assert [(p["subscription_id"], p["error"]) for p in failed] == [(doomed["id"], "NotFound")]
    assert [i["status"] for i in invoices_of(merchant, fine["id"])] == ["paid", "paid"]
    assert [i["billing_reason"] for i in invoices_of(merchant, doomed["id"])] == ["subscription_create"]
    queued = boto3.client("sqs").receive_message(QueueUrl=os.environ["BILLING_QUEUE_URL"], MaxNumberOfMessages=10)
    assert [json.loads(m["Body"])["subscription_id"] for m in queued["Messages"]] == [doomed["id"]]


def test_payment_webhooks_are_recorded_once(merchant, clock):
    customer_id = new_customer(merchant, card=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    [charge] = charges_of(merchant, customer_id)
    before = merchant.get(f"/invoices/{invoice['id']}").json
    # payment_intent.payment_failed for the attempt already recorded: nothing moves.
    assert collecting.reconcile_payment(charge)["status"] == "open"
    assert merchant.get(f"/invoices/{invoice['id']}").json == before
    # A PaymentIntent that is none of our invoices' is ignored.
    assert collecting.reconcile_payment({**charge, "metadata": {}}) is None
