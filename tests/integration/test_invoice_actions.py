"""Pay-now, a new card and void on an invoice whose last charge is not
concluded (moto, localstripe): Stripe is asked first, so a charge it
accepted or a bank still processes is never made twice, and a void
invoice never keeps money (what reaches it is refunded, once).

Stripe is localstripe through the official library. A bank that answers
later is Stripe's `processing` PaymentIntent, which localstripe's cards
never are: `SlowBank` charges at localstripe and reports the
PaymentIntent as `processing` until the bank answers."""
from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib import jobs, payments
from chalicelib.services import collecting
from tests.integration.test_billing import (
    CARD_OK, CrashAfterCharge, DEC_1, NOV_1, bill, charges_of, invoices_of, iso, new_customer, record_usage,
    save_card, simple_offer, subscribe,
)


@pytest.fixture
def clock_start():
    return NOV_1


class SlowBank:
    """Stripe with a bank that answers later: PaymentIntents read as
    `processing` until `answer()`; then as localstripe has them."""

    def __init__(self):
        self.answered = False

    def answer(self):
        self.answered = True

    def __getattr__(self, name):
        return getattr(payments, name)

    def _view(self, payment):
        if self.answered or payment.status != "succeeded":
            return payment
        return dataclasses.replace(payment, status="processing")

    def charge_invoice(self, **kwargs):
        return self._view(payments.charge_invoice(**kwargs))

    def retrieve_payment(self, payment_intent_id):
        return self._view(payments.retrieve_payment(payment_intent_id))

    def find_invoice_payments(self, stripe_customer_id, invoice_id):
        return [self._view(p) for p in payments.find_invoice_payments(stripe_customer_id, invoice_id)]


class CrashBeforeCharge:
    """The worker dies after recording the attempt, before reaching Stripe."""

    def __getattr__(self, name):
        return getattr(payments, name)

    def charge_invoice(self, **kwargs):
        raise SystemExit("the worker died")


@pytest.fixture
def gateway():
    def use(fake):
        collecting.use_gateway(fake)
        return fake
    yield use
    collecting.use_gateway(None)


def december_invoice(merchant, clock, gateway, fake) -> tuple[str, str, dict]:
    """A subscriber whose November was paid at the start; December's
    invoice charged through `fake`. Returns customer id, subscription id and
    December's invoice."""
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    clock.set(DEC_1)
    gateway(fake)
    try:
        bill(merchant, sub["id"])
    except SystemExit:
        pass
    december = invoices_of(merchant, sub["id"])[-1]
    assert december["billing_reason"] == "subscription_cycle"
    return customer_id, sub["id"], december


def refunds_of(payment_intent_id: str) -> list[dict]:
    listing = payments._client().v1.refunds.list(params={"payment_intent": payment_intent_id, "limit": 100})
    return [refund.to_dict() for refund in listing.data]


# ---------------------------------------------------------------------------
# A charge the bank is processing


def test_a_processing_charge_is_not_made_again_by_pay_or_a_new_card(merchant, clock, gateway):
    bank = SlowBank()
    customer_id, _, december = december_invoice(merchant, clock, gateway, bank)
    path = f"/invoices/{december['id']}"
    assert december["status"] == "open" and december["payment_attempts"][0]["status"] == "processing"
    assert len(charges_of(merchant, customer_id)) == 2  # November's and December's

    # Past the re-check delay, the bank still has not answered: paying again
    # is refused, and a new card charges nothing.
    clock.set(clock.now() + collecting.PROCESSING_CHECK + timedelta(minutes=1))
    refused = merchant.post(f"{path}/pay")
    assert refused.status == 409 and "processed by the bank" in refused.json["error"]["message"], refused
    save_card(merchant, customer_id, CARD_OK)
    assert len(charges_of(merchant, customer_id)) == 2
    assert merchant.get(path).json["payment_attempts"][-1]["status"] == "processing"

    # The bank answers: pay-now finds the payment and records it, no new charge.
    bank.answer()
    paid = merchant.post(f"{path}/pay")
    assert paid.status == 200, paid
    assert (paid.json["status"], paid.json["amount_paid"], paid.json["amount_due"]) == ("paid", "58.80", "0.00")
    assert [a["status"] for a in paid.json["payment_attempts"]] == ["succeeded"]
    assert len(charges_of(merchant, customer_id)) == 2


def test_a_void_waits_for_the_bank(merchant, clock, gateway):
    bank = SlowBank()
    _, _, december = december_invoice(merchant, clock, gateway, bank)
    clock.set(clock.now() + collecting.PROCESSING_CHECK + timedelta(minutes=1))
    refused = merchant.post(f"/invoices/{december['id']}/void")
    assert refused.status == 409 and "processed by the bank" in refused.json["error"]["message"], refused
    assert merchant.get(f"/invoices/{december['id']}").json["status"] == "open"


# ---------------------------------------------------------------------------
# Void asks Stripe first


def test_void_after_the_worker_died_once_stripe_charged_is_refused_and_the_invoice_paid(merchant, clock, gateway):
    customer_id, _, december = december_invoice(merchant, clock, gateway, CrashAfterCharge())
    gateway(None)
    path = f"/invoices/{december['id']}"
    assert december["status"] == "open" and december["payment_attempts"][0]["status"] == "pending"
    # Within the lease the charge may still be concluding: refused.
    assert merchant.post(f"{path}/void").status == 409
    clock.set(clock.now() + collecting.LEASE + timedelta(minutes=1))
    refused = merchant.post(f"{path}/void")
    assert refused.status == 409 and "credit note" in refused.json["error"]["message"], refused
    paid = merchant.get(path).json
    [charge] = [c for c in charges_of(merchant, customer_id) if c["metadata"]["invoice_id"] == december["id"]]
    assert (paid["status"], paid["amount_paid"]) == ("paid", "58.80")
    assert paid["payment_attempts"][0]["payment_intent"] == charge["id"]
    assert refunds_of(charge["id"]) == []


def test_void_when_stripe_never_got_the_charge_then_a_late_payment_is_refunded_once(merchant, clock, gateway):
    customer_id, _, december = december_invoice(merchant, clock, gateway, CrashBeforeCharge())
    gateway(None)
    path = f"/invoices/{december['id']}"
    clock.set(clock.now() + collecting.LEASE + timedelta(minutes=1))
    voided = merchant.post(f"{path}/void")
    assert voided.status == 200, voided
    assert voided.json["status"] == "void"
    assert [(a["status"], a["failure_code"]) for a in voided.json["payment_attempts"]] == [
        ("failed", "invoice_voided")]
    assert [c["metadata"].get("invoice_id") for c in charges_of(merchant, customer_id)].count(december["id"]) == 0

    # A worker thought dead charges after all: Stripe's webhook for it, twice.
    record = collecting.customer_of(merchant.merchant["id"], customer_id)
    late = payments.charge_invoice(
        invoice_id=december["id"], merchant_id=merchant.merchant["id"], attempt=1,
        amount=Decimal("58.80"),
        currency="EUR", stripe_customer_id=record.stripe_customer_id,
        payment_method_id=record.card()["payment_method_id"])
    intent = payments._client().v1.payment_intents.retrieve(late.id).to_dict()
    collecting.reconcile_payment(intent)
    collecting.reconcile_payment(intent)
    [refund] = refunds_of(late.id)
    assert refund["amount"] == 5880 and refund["status"] == "succeeded"
    after = merchant.get(path).json
    assert (after["status"], after["amount_paid"]) == ("void", "0.00")


def test_a_second_payment_of_a_paid_invoice_is_refunded_once(merchant, clock):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    [first] = invoices_of(merchant, sub["id"])
    record = collecting.customer_of(merchant.merchant["id"], customer_id)
    # Another PaymentIntent for the same invoice (attempt 2, say a retry racing the first).
    second = payments.charge_invoice(
        invoice_id=first["id"], merchant_id=merchant.merchant["id"], attempt=2, amount=Decimal("58.80"),
        currency="EUR", stripe_customer_id=record.stripe_customer_id,
        payment_method_id=record.card()["payment_method_id"])
    intent = payments._client().v1.payment_intents.retrieve(second.id).to_dict()
    for _ in range(3):
        collecting.reconcile_payment(intent)
    [refund] = refunds_of(second.id)
    assert refund["amount"] == 5880
    original = first["payment_attempts"][0]["payment_intent"]
    assert refunds_of(original) == []
    assert merchant.get(f"/invoices/{first['id']}").json["amount_paid"] == "58.80"


class RefundsDownOnce:
    """Stripe unreachable for the first refund asked, as it answers after."""

    def __init__(self):
        self.asked = 0

    def __getattr__(self, name):
        return getattr(payments, name)

    def refund(self, *args, **kwargs):
        self.asked += 1
        if self.asked == 1:
            raise payments.Unavailable("create refund: Stripe did not answer")
        return payments.refund(*args, **kwargs)


def test_a_stray_refund_that_stripe_did_not_answer_is_made_once_on_the_next_delivery(merchant, clock, gateway):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    [first] = invoices_of(merchant, sub["id"])
    record = collecting.customer_of(merchant.merchant["id"], customer_id)
    second = payments.charge_invoice(
        invoice_id=first["id"], merchant_id=merchant.merchant["id"], attempt=2, amount=Decimal("58.80"),
        currency="EUR", stripe_customer_id=record.stripe_customer_id,
        payment_method_id=record.card()["payment_method_id"])
    intent = payments._client().v1.payment_intents.retrieve(second.id).to_dict()
    stripe = gateway(RefundsDownOnce())
    with pytest.raises(payments.Unavailable):  # the webhook answers 5xx: Stripe delivers it again
        collecting.reconcile_payment(intent)
    assert refunds_of(second.id) == []
    collecting.reconcile_payment(intent)
    collecting.reconcile_payment(intent)
    [refund] = refunds_of(second.id)
    assert refund["amount"] == 5880 and stripe.asked == 2


# ---------------------------------------------------------------------------
# Late usage after a cancellation


def test_usage_arriving_after_a_cancellation_reaches_a_last_invoice(merchant, clock):
    """Canceled at once on 20 Nov: the cancellation's invoice bills the 2
    montages known then (2.40) and credits the unused 10 of 30 days of the
    base (-16.33). Montages of 10 Nov arrive on 25 Nov: the run issues a last
    invoice for them (3 x 1.20 = 3.60, VAT 0.72, 4.32), charged; a
    correction of them later, another one for its difference only. Usage
    timed after the cancellation is refused."""
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    clock.set(NOV_1 + timedelta(days=5))
    record_usage(merchant, sub["id"], clock.now(), montages="2")
    clock.set(NOV_1 + timedelta(days=20))
    assert merchant.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": False}).status == 200
    cancel = invoices_of(merchant, sub["id"])[-1]
    assert [(l["kind"], l["amount"]) for l in cancel["lines"]] == [("usage", "2.40"), ("proration", "-16.33")]

    clock.set(NOV_1 + timedelta(days=25))
    late = merchant.post("/usage", {"events": [{"event_id": "late-1", "subscription_id": sub["id"],
                                                "meter": "montages", "quantity": "3",
                                                "timestamp": iso(NOV_1 + timedelta(days=9))}]})
    assert late.status == 200 and late.json["accepted"] == 1, late
    assert merchant.get(f"/subscriptions/{sub['id']}").json["next_billing_at"] == iso(clock.now())
    after = merchant.post("/usage", {"events": [{"event_id": "after-1", "subscription_id": sub["id"],
                                                 "meter": "montages", "quantity": "1",
                                                 "timestamp": iso(NOV_1 + timedelta(days=21))}]})
    assert after.status == 400 and after.json["error"]["param"] == "events[0].timestamp", after

    clock.set(clock.now() + timedelta(minutes=15))
    jobs.billing_scheduler(clock.now(), inline=True)
    last = invoices_of(merchant, sub["id"])[-1]
    assert last["billing_reason"] == "late_usage" and last["status"] == "paid"
    assert [(l["kind"], l["quantity"], l["amount"]) for l in last["lines"]] == [("usage", "3", "3.60")]
    assert (last["subtotal"], last["total"]) == ("3.60", "4.32")
    assert merchant.get(f"/subscriptions/{sub['id']}").json["next_billing_at"] is None

    # A correction of the late montages (3 -> 5): billed once more, the difference only.
    corrected = merchant.post("/usage", {"events": [{"event_id": "late-1-fix", "corrects": "late-1",
                                                     "subscription_id": sub["id"], "meter": "montages",
                                                     "quantity": "2", "timestamp": iso(clock.now())}]})
    assert corrected.status == 200, corrected
    clock.set(clock.now() + timedelta(minutes=15))
    jobs.billing_scheduler(clock.now(), inline=True)
    invoices = invoices_of(merchant, sub["id"])
    assert [(l["quantity"], l["amount"]) for l in invoices[-1]["lines"]] == [("2", "2.40")]
    assert len(invoices) == 4  # the first, the cancellation's, two for late usage
    # Nothing more: another run issues nothing.
    jobs.billing_scheduler(clock.now() + timedelta(hours=1), inline=True)
    assert len(invoices_of(merchant, sub["id"])) == 4


def test_a_subscription_canceled_while_paused_bills_the_usage_its_pause_deferred(merchant, clock):
    """Paused on 20 Nov with 3 montages that day; December opens paused (no
    fees, November's usage waits for a resume). Canceled on 10 Dec: no
    resume will come, so its last invoice bills November's 3 montages (3.60)
    and nothing for December's unbilled fees."""
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    clock.set(NOV_1 + timedelta(days=19))
    assert merchant.post(f"/subscriptions/{sub['id']}/pause").status == 200
    record_usage(merchant, sub["id"], clock.now(), montages="3")
    clock.set(DEC_1 + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    assert len(invoices_of(merchant, sub["id"])) == 1  # nothing billed while paused
    clock.set(DEC_1 + timedelta(days=9))
    canceled = merchant.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": False})
    assert canceled.status == 200, canceled
    assert canceled.json["next_billing_at"] is None
    last = invoices_of(merchant, sub["id"])[-1]
    assert [(l["kind"], l["quantity"], l["amount"], l["period_start"]) for l in last["lines"]] == [
        ("usage", "3", "3.60", iso(NOV_1))]
    assert last["status"] == "paid" and last["total"] == "4.32"


def test_a_devices_readings_after_a_cancellation_bill_what_came_before_it_only(merchant, clock, client):
    """Neksia counts 1000 on 2 Nov and 1005 on 10 Nov, then goes offline.
    Canceled at once on 20 Nov: the cancellation bills the 5 montages known
    (6.00). On 25 Nov the machine sends what it buffered: 1008 read on 15
    Nov (3 montages before the cancellation) and 1010 on 22 Nov (2 after
    it). The last invoice bills the 3 (3.60); the 2 are not usage of the
    subscription, though the counter moves on."""
    from tests.integration.test_billing import device_reading

    merchant_id = merchant.merchant["id"]
    sub = subscribe(merchant, new_customer(merchant), simple_offer(merchant), start_at=iso(NOV_1))
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub["id"]}).status == 201
    for seq, day, count in ((1, 2, 1000), (2, 10, 1005)):
        clock.set(NOV_1 + timedelta(days=day))
        device_reading(client, merchant_id, seq, clock.now(), montages=count)
    clock.set(NOV_1 + timedelta(days=20))
    assert merchant.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": False}).status == 200
    cancel = invoices_of(merchant, sub["id"])[-1]
    assert [(l["kind"], l["quantity"], l["amount"]) for l in cancel["lines"] if l["kind"] == "usage"] == [
        ("usage", "5", "6.00")]

    clock.set(NOV_1 + timedelta(days=25))
    device_reading(client, merchant_id, 3, NOV_1 + timedelta(days=15), montages=1008)
    device_reading(client, merchant_id, 4, NOV_1 + timedelta(days=22), montages=1010)
    assert merchant.get(f"/subscriptions/{sub['id']}").json["next_billing_at"] == iso(clock.now())
    clock.set(clock.now() + timedelta(minutes=15))
    jobs.billing_scheduler(clock.now(), inline=True)
    last = invoices_of(merchant, sub["id"])[-1]
    assert last["billing_reason"] == "late_usage"
    assert [(l["kind"], l["quantity"], l["amount"]) for l in last["lines"]] == [("usage", "3", "3.60")]
    device = merchant.get("/devices/neksia-0042").json
    assert device["counters"]["montages"]["value"] == "1010"
