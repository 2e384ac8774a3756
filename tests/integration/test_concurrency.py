"""Concurrency on moto in-process (threads; one lock makes each moto request
atomic, as each DynamoDB request is): two billing runs over the same
subscriptions at once, and one device's readings delivered to eight
workers at once.

Eight changes at once on one subscription (one wins per version, or each
lands once when retried) are in test_subscriptions.py; eight threads
ingesting disjoint readings of one device in test_usage.py."""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from chalicelib import jobs, payments
from chalicelib.services import customers as customer_service
from chalicelib.services import subscriptions as subscription_service
from chalicelib.store import customers as customer_store
from chalicelib.store import invoices as invoice_store
from tests.integration.test_billing import (  # noqa: F401  (atomic_dynamodb is a fixture)
    DEC_1, NOV_1, atomic_dynamodb, iso, new_customer, simple_offer, sqs_event, subscribe,
)

# moto in-process copies the table on every transaction, so the time grows
# faster than the count: the race is the same for each subscription, and 8
# keep the suite within its budget. RACE_SUBSCRIPTIONS=200 runs the full
# race, with moto's transactions copying only the items they name.
SUBSCRIPTIONS = int(os.environ.get("RACE_SUBSCRIPTIONS", "8"))
if SUBSCRIPTIONS > 8:
    from tests.bench.harness import lighten_moto

    lighten_moto()


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOV_1


def run_threads(target, args_list) -> list:
    errors = []
    start = threading.Barrier(len(args_list))

    def run(*args):
        try:
            start.wait(30)
            target(*args)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return errors


def test_two_billing_runs_at_once_over_many_subscriptions(merchant, clock, atomic_dynamodb):
    """Two scheduled runs overlap (the second starts before the first ends)
    over the same subscriptions due at the same instant: one invoice each,
    numbered 1..n, each charged by exactly one PaymentIntent at localstripe."""
    merchant_id = merchant.merchant["id"]
    offer_id = simple_offer(merchant)
    # One Stripe customer and card behind all the customers: localstripe is
    # asked for the charges only, and they are all listed in one place.
    first = new_customer(merchant)
    shared = customer_store.get_customer(merchant_id, first, consistent=True)
    card = shared.card()
    subs = []
    for n in range(SUBSCRIPTIONS):
        customer_id = first if n == 0 else customer_service.create_customer(
            merchant_id, {"name": f"Labo {n}", "email": f"labo{n}@example.fr", "country": "FR"})["id"]
        if n:
            customer_store.set_stripe_customer_id(merchant_id, customer_id, shared.stripe_customer_id)
            customer_store.set_default_card(merchant_id, customer_id, card)
        subs.append(subscription_service.create_subscription(
            merchant_id, {"customer_id": customer_id, "offer_id": offer_id, "start_at": NOV_1}, "test")["id"])
    # Each first invoice was issued (and paid) with its subscription: the
    # runs race over the December boundary.
    clock.set(DEC_1 + timedelta(minutes=5))

    started = time.perf_counter()
    results = []
    errors = run_threads(lambda: results.append(jobs.billing_scheduler(clock.now(), inline=True)), [(), ()])
    seconds = time.perf_counter() - started
    assert not errors, errors
    assert sum(r["due"] for r in results) >= SUBSCRIPTIONS  # both runs saw (most of) them due

    numbers = Counter()
    for sub_id in subs:
        december, first = invoice_store.customer_invoices(
            merchant_id, subscription_service.get_subscription(merchant_id, sub_id)["customer_id"],
            limit=100, subscription_id=sub_id)[0]
        assert first.billing_reason == "subscription_create" and december.billing_reason == "subscription_cycle"
        assert december.status == "paid", (sub_id, december.status)
        numbers[december.number] += 1
    assert sorted(numbers) == [f"OD2026-{n:06d}" for n in range(SUBSCRIPTIONS + 1, 2 * SUBSCRIPTIONS + 1)]
    assert set(numbers.values()) == {1}
    assert invoice_store.last_number(merchant_id, 2026) == 2 * SUBSCRIPTIONS
    charged = [p for p in payments._customer_payments(shared.stripe_customer_id) if p.status == "succeeded"]
    per_invoice = Counter(p.invoice_id for p in charged)
    assert len(per_invoice) == 2 * SUBSCRIPTIONS and set(per_invoice.values()) == {1}
    # Nothing is left due: a third run bills and charges nothing.
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 0
    print(f"two runs over {SUBSCRIPTIONS} subscriptions: {seconds:.1f} s")


def test_eight_workers_delivering_the_same_readings_count_them_once(merchant, clock, client, atomic_dynamodb):
    """SQS delivers at least once: here every reading of one device reaches
    eight workers at once, each in its own order. The device's usage is
    the counter's rise, once."""
    merchant_id = merchant.merchant["id"]
    customer_id = new_customer(merchant, card=None)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub["id"]}).status == 201
    clock.set(NOV_1 + timedelta(days=20))
    day = NOV_1 + timedelta(days=2)

    def reading(seq):
        return json.dumps({"seq": seq, "ts": iso(day + timedelta(minutes=seq)), "counters": {"montages": 1000 + 5 * seq},
                           "merchant_id": merchant_id, "device_id": "neksia-0042"})

    assert jobs.ingest_usage(sqs_event([reading(0)]))["batchItemFailures"] == []  # the baseline
    readings = [reading(seq) for seq in range(1, 41)]

    def deliver_all(order):
        pending = [readings[i] for i in order]
        for _ in range(100):
            if not pending:
                return
            batch = sqs_event(pending[:5])
            result = jobs.ingest_usage(batch)
            ids = {r["messageId"]: r["body"] for r in batch["Records"]}
            pending = [ids[f["itemIdentifier"]] for f in result["batchItemFailures"]] + pending[5:]
        raise AssertionError("never ingested")

    orders = [list(range(40)) if i % 2 == 0 else list(reversed(range(40))) for i in range(8)]
    orders = [order[5 * i:] + order[:5 * i] for i, order in enumerate(orders)]
    errors = run_threads(deliver_all, [(order,) for order in orders])
    from chalicelib.observability import metrics

    metrics.clear_metrics()
    assert not errors, errors
    device = merchant.get("/devices/neksia-0042").json
    assert device["last_reading"]["seq"] == 40 and device["counters"]["montages"]["value"] == "1200"
    # Whatever the order, the readings accepted rise from 1000 to 1200; one
    # that arrives after a newer one is late (recorded, not counted): the
    # usage is the rise, never a reading counted twice.
    meters = merchant.get(f"/subscriptions/{sub['id']}/usage?period_start={iso(NOV_1)}").json["meters"]
    assert meters["montages"]["total"] == "200"
