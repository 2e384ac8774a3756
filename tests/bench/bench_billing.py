"""The billing run's cost and its length.

1. Measured: 300 Clic&O subscriptions by default (`--subscriptions`,
   BENCH_SUBSCRIPTIONS; `make bench-billing-large` bills 2,000 and writes
   docs/performance-billing-2000.json, which `make bench` reports: about
   20 minutes here, nearly all of it moto, whose index queries still read
   the whole table) with usage (calls, support hours,
   parts, a service level, montages with a negotiated price) billed at a
   month boundary by the worker's own code path (`jobs.handle_billing_message`)
   against moto in-process, with a counting fake of the payments gateway
   (every charge succeeds; Stripe is not what is measured here). Per
   invoice: DynamoDB requests (every call botocore makes, by operation),
   Stripe writes, EventBridge calls, and CPU time. The run's scheduler
   (finding what is due, shard by shard) is measured apart: it costs per
   run, not per invoice.

2. Simulated: a 100,000-subscription run where Stripe allows 25 writes/s.
   Workers (at most BILLING_WORKER_CONCURRENCY at once, SQS batch size 1)
   each take a message, do their DynamoDB work, make their one charge, and
   record it; a charge over Stripe's limit is refused (429) and retried by
   the worker after a back-off, as `services.collecting._charge` does. The run
   cannot be shorter than 100,000 / 25 = 4,000 s; the simulation says how
   close the cap gets to it, and what a smaller or larger cap would do.

Run: `python -m tests.bench.bench_billing [--subscriptions N]`.
Prints one JSON line per part. Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.update(
    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_SESSION_TOKEN="bench",
    AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="eu-west-1", STAGE="test", ADMIN_API_KEY="bench-admin",
    TOKEN_SIGNING_KEY="bench-token", STRIPE_SECRET_KEY="sk_test_bench", STRIPE_WEBHOOK_SECRET="whsec_bench",
    STRIPE_PUBLISHABLE_KEY="pk_test_bench", POWERTOOLS_SERVICE_NAME="billing", POWERTOOLS_LOG_LEVEL="ERROR",
    POWERTOOLS_METRICS_NAMESPACE="Billing",
)

UTC = timezone.utc
START = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 Nov 2026, 00:00 in Paris
BOUNDARY = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
# What an invoice of a warm worker takes (docs/performance.md, "Billing").
BASELINE_REQUESTS = 7
TARGET_DYNAMODB_REQUESTS = 8
FLOOR_SUBSCRIPTIONS = 100_000
STRIPE_WRITES_PER_SECOND = 25

CLICO = {
    "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {"code": "calls", "type": "metered", "meter": "calls", "tier_mode": "graduated", "included_units": "100",
         "tiers": [{"up_to": "1000", "unit_amount": "0.50"}, {"up_to": None, "unit_amount": "0.40"}]},
        {"code": "support", "type": "time_and_materials", "hours_meter": "agent_hours", "hourly_rate": "38.00",
         "materials_meter": "parts_cost", "markup_percent": "15"},
        {"code": "quality", "type": "bonus_malus", "kpi_meter": "service_level", "target": "0.90",
         "bonus_percent": "5", "malus_percent": "10", "applies_to": ["calls"]},
    ],
    "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}],
}


# ---------------------------------------------------------------------------
# Counting


class CountingGateway:
    """chalicelib.payments' charge functions, answering as Stripe does for a
    card that pays, and counting the writes (charges) and reads."""

    def __init__(self):
        self.writes = 0
        self.reads = 0

    def charge_invoice(self, *, invoice_id, merchant_id, attempt, amount, currency, stripe_customer_id,
                       payment_method_id):
        from chalicelib import payments
        from chalicelib.domain.money import to_minor

        self.writes += 1
        return payments.Payment(
            id=f"pi_{invoice_id[4:]}_{attempt}", status="succeeded", amount=to_minor(amount, currency),
            currency=currency, customer=stripe_customer_id, payment_method=payment_method_id, created=0,
            metadata={"invoice_id": invoice_id, "merchant_id": merchant_id, "attempt": str(attempt)},
        )

    def find_invoice_payments(self, stripe_customer_id, invoice_id):
        self.reads += 1
        return []

    def retrieve_payment(self, payment_intent_id):
        raise AssertionError("not used by a run where every charge succeeds")

    def payment_of(self, intent):
        from chalicelib import payments

        return payments.payment_of(intent)


# ---------------------------------------------------------------------------
# 1. Measured


def measure(subscriptions: int) -> dict:
    from moto import mock_aws

    from tests.bench.harness import lighten_moto

    lighten_moto()
    with mock_aws():
        from infra.local.provision import provision

        os.environ.update(provision())
        from chalicelib import config

        config.settings.cache_clear()
        return _measure(subscriptions)


def seed_clico(count: int) -> tuple[dict, list[tuple[str, str]]]:
    """A merchant (as created, with its API key) and `count` customers, each
    with a card at Stripe's stand-in and a Clic&O subscription (the express
    option, a negotiated montage price) starting at START: the
    benchmarks' shared population. Returns (merchant, [(customer_id,
    subscription_id)])."""
    from chalicelib.domain.catalog import parse_offer
    from chalicelib.services import customers, merchants, offers, subscriptions
    from chalicelib.store import customers as customer_store

    merchant = merchants.create_merchant({
        "name": "Optique Durand", "default_currency": "EUR", "invoice_prefix": "OD",
        "tax_rates": {"FR": "20.0"}, "timezone": "Europe/Paris", "locale": "fr",
    })
    merchant_id = merchant["id"]
    offer_id = offers.create_offer(merchant_id, parse_offer(CLICO))["id"]
    card = {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030, "payment_method_id": "pm_bench"}
    pairs = []
    for n in range(count):
        customer = customers.create_customer(merchant_id, {"name": f"Labo {n}", "email": f"labo{n}@example.fr",
                                                           "country": "FR"})
        customer_store.set_default_card(merchant_id, customer["id"], card)
        customer_store.set_stripe_customer_id(merchant_id, customer["id"], f"cus_bench{n}")
        sub = subscriptions.create_subscription(merchant_id, {
            "customer_id": customer["id"], "offer_id": offer_id, "options": ["express"],
            "price_overrides": {"montage": {"unit_amount": "1.05"}}, "start_at": START,
        }, "bench")
        pairs.append((customer["id"], sub["id"]))
    return merchant, pairs


def _measure(count: int) -> dict:
    from chalicelib import jobs
    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.services import collecting, issuing, usage

    clock = FixedClock(START)
    use_clock(clock)
    gateway = CountingGateway()
    collecting.use_gateway(gateway)
    setup_started = time.perf_counter()
    merchant, pairs = seed_clico(count)
    merchant_id = merchant["id"]
    ids = [sub_id for _, sub_id in pairs]
    for sub_id in ids:  # the first invoices (November's fees), not measured
        issuing.bill_subscription(merchant_id, sub_id)
    clock.set(START + timedelta(days=20))
    for n, sub_id in enumerate(ids):
        at = START + timedelta(days=10)
        usage.record_events(merchant_id, [
            usage.EventInput(f"calls-{n}", sub_id, "calls", Decimal(300 + n % 700), at),
            usage.EventInput(f"hours-{n}", sub_id, "agent_hours", Decimal("7.5"), at),
            usage.EventInput(f"parts-{n}", sub_id, "parts_cost", Decimal("120.00"), at),
            usage.EventInput(f"kpi-{n}", sub_id, "service_level", Decimal("0.93"), at),
            usage.EventInput(f"montages-{n}", sub_id, "montages", Decimal(400 + n % 50), at),
        ])
    setup_seconds = time.perf_counter() - setup_started

    from tests.bench.bench_ingest import Meter
    from tests.bench.harness import AwsMeter

    capacity = Meter()
    meter = AwsMeter(capacity).install()
    clock.set(BOUNDARY + timedelta(minutes=5))
    scheduler_started = time.perf_counter()
    messages = issuing.due_billing_messages(clock.now())
    scheduler_seconds = time.perf_counter() - scheduler_started
    scheduler_calls, _, _ = meter.take()
    assert len(messages) == count, len(messages)

    # moto's tables live in this process: frozen out of the cyclic collector's
    # sight, so a collection during an invoice costs what it would in Lambda.
    gc.collect()
    gc.freeze()
    per_invoice = []
    cpu = []
    cpu_with_moto = []
    sdk_cpu = []
    writes_before = gateway.writes
    by_operation: Counter = Counter()
    above: list[dict] = []  # the first invoices that took more than the usual requests
    try:
        for message in messages:
            started = time.thread_time()
            result = jobs.handle_billing_message(message)
            spent = time.thread_time() - started
            assert [i["status"] for i in result["invoices"]] == ["paid"], result
            counts, sdk, moto = meter.take()
            cpu.append(spent - moto)
            cpu_with_moto.append(spent)
            sdk_cpu.append(sdk - moto)
            dynamodb = {op: n for (service, op), n in counts.items() if service == "dynamodb"}
            by_operation.update(dynamodb)
            if sum(dynamodb.values()) > BASELINE_REQUESTS and len(above) < 10:
                above.append({"invoice": len(per_invoice), **dynamodb})
            per_invoice.append((sum(dynamodb.values()), sum(n for (s, _), n in counts.items() if s == "events")))
    finally:
        gc.unfreeze()
        meter.uninstall()
    stripe_writes = gateway.writes - writes_before
    use_clock(None)
    collecting.use_gateway(None)
    requests = [r for r, _ in per_invoice]
    reads = sum(n for op, n in by_operation.items() if op in ("GetItem", "BatchGetItem", "Query"))
    return {
        "benchmark": "billing_run",
        "subscriptions": count,
        "invoices": len(per_invoice),
        # `max_warm`: of every invoice but the worker's first (whose caches are cold).
        "dynamodb_requests_per_invoice": {"mean": round(statistics.mean(requests), 2), "max": max(requests),
                                          "max_warm": max(requests[1:], default=requests[0]),
                                          "min": min(requests), "target_max": TARGET_DYNAMODB_REQUESTS},
        "dynamodb_requests_by_operation_per_invoice": {op: round(n / len(per_invoice), 2)
                                                       for op, n in sorted(by_operation.items())},
        # How many invoices took how many requests, and what the first
        # invoices above the usual count did (by operation).
        "dynamodb_requests_histogram": {str(k): v for k, v in sorted(Counter(requests).items())},
        "dynamodb_requests_above_usual": above,
        "dynamodb_reads_per_invoice": round(reads / len(per_invoice), 2),
        "dynamodb_writes_per_invoice": round((sum(by_operation.values()) - reads) / len(per_invoice), 2),
        # Capacity by DynamoDB's size rules (bench_ingest.Meter): the scheduler's queries included.
        "rcu_per_invoice": round(capacity.rcu / len(per_invoice), 2),
        "wcu_per_invoice": round(capacity.wcu / len(per_invoice), 2),
        "stripe_writes_per_invoice": stripe_writes / len(per_invoice),
        "stripe_reads_total": gateway.reads,
        "eventbridge_calls_per_invoice": statistics.mean(e for _, e in per_invoice),
        # Our CPU (the worker's code and the SDK's client side), moto's excluded.
        "cpu_ms_per_invoice": {"median": round(statistics.median(cpu) * 1000, 2),
                               "p95": round(sorted(cpu)[int(len(cpu) * 0.95)] * 1000, 2),
                               "sdk_median": round(statistics.median(sdk_cpu) * 1000, 2),
                               "with_moto_median": round(statistics.median(cpu_with_moto) * 1000, 2)},
        "scheduler": {"seconds": round(scheduler_seconds, 3),
                      "dynamodb_queries": sum(n for (s, _), n in scheduler_calls.items() if s == "dynamodb")},
        "setup_seconds": round(setup_seconds, 1),
    }


# ---------------------------------------------------------------------------
# 2. Simulated


class TokenBucket:
    """Stripe's limiter as a token bucket: `rate` per second, bursts of `rate`."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.at = 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def simulate(subscriptions: int, concurrency: int, *, limit: float = STRIPE_WRITES_PER_SECOND,
             before_charge: float, after_charge: float, seed: int = 7) -> dict:
    """A run of `subscriptions` messages through `concurrency` workers.

    Each message: `before_charge` seconds of work (the invocation, reads,
    the finalizing transaction), the charge (Stripe's latency: lognormal,
    median 0.55 s, p99 about 2 s), then `after_charge` seconds (recording
    the outcome, events). A charge refused by the limiter costs a 429
    round-trip (40 ms) and the worker's back-off (collecting.rate_limit_pause),
    then is sent again; a message whose retries run out goes back to the
    queue for the visibility timeout (360 s)."""
    from chalicelib.services.collecting import RATE_LIMIT_RETRIES, rate_limit_pause

    rng = random.Random(seed)
    bucket = TokenBucket(limit)
    ready: list[float] = [0.0] * subscriptions  # when each pending message can be received
    heapq.heapify(ready)
    events: list[tuple[float, int, str, int]] = []
    sequence = 0
    free = concurrency
    finished = 0
    refused = 0
    returned = 0
    now = 0.0

    def stripe_latency() -> float:
        return rng.lognormvariate(math.log(0.55), 0.55)

    def schedule(at: float, kind: str, retry: int) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, kind, retry))

    while finished < subscriptions:
        while free and ready and ready[0] <= now:
            heapq.heappop(ready)
            free -= 1
            schedule(now + before_charge, "charge", 0)
        if not events:
            now = ready[0]
            continue
        now, _, kind, retry = heapq.heappop(events)
        if kind == "charge":
            if bucket.take(now):
                schedule(now + stripe_latency() + after_charge, "done", 0)
            else:
                refused += 1
                if retry >= RATE_LIMIT_RETRIES:
                    returned += 1
                    heapq.heappush(ready, now + 0.04 + 360)
                    free += 1
                else:
                    schedule(now + 0.04 + rate_limit_pause(retry, rng), "charge", retry + 1)
        else:
            finished += 1
            free += 1
    floor = subscriptions / limit
    return {"concurrency": concurrency, "seconds": round(now), "floor_seconds": round(floor),
            "ratio_to_floor": round(now / floor, 3), "rate_limited_charges": refused,
            "messages_returned_to_queue": returned}


def simulate_run(measured: dict, subscriptions: int = FLOOR_SUBSCRIPTIONS, seeds=(7, 11, 13)) -> dict:
    """The 100,000-subscription run under Stripe's limit, from the measured
    per-invoice work, for several worker caps; each figure the median of
    the runs with `seeds` (Stripe's latency is random)."""
    from chalicelib.config import settings

    cap = settings().billing_worker_concurrency
    # DynamoDB in the same region answers a request in about 5 ms, a
    # transaction in about 15; the Lambda invocation from SQS costs ~20 ms;
    # EventBridge PutEvents ~15 ms each. CPU is what was measured.
    cpu = measured["cpu_ms_per_invoice"]["median"] / 1000
    requests = measured["dynamodb_requests_per_invoice"]["mean"]
    before = 0.020 + (requests - 1) * 0.005 + 0.015 + cpu
    after = 0.005 + measured["eventbridge_calls_per_invoice"] * 0.015
    runs = []
    for concurrency in sorted({10, 20, cap, 50, 100}):
        trials = sorted((simulate(subscriptions, concurrency, before_charge=before, after_charge=after, seed=seed)
                         for seed in seeds), key=lambda r: r["seconds"])
        runs.append({**trials[len(trials) // 2], "seeds": list(seeds),
                     "ratio_range": [trials[0]["ratio_to_floor"], trials[-1]["ratio_to_floor"]]})
    configured = next(r for r in runs if r["concurrency"] == cap)
    return {"benchmark": "billing_run_simulated", "subscriptions": subscriptions,
            "stripe_writes_per_second": STRIPE_WRITES_PER_SECOND, "configured_concurrency": cap,
            "worker_seconds_before_charge": round(before, 3), "worker_seconds_after_charge": round(after, 3),
            "configured": configured, "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=int(os.environ.get("BENCH_SUBSCRIPTIONS", "300")))
    parser.add_argument("--simulated", type=int, default=FLOOR_SUBSCRIPTIONS)
    parser.add_argument("--output", help="also write the results to this JSON file, with the date and wall time")
    args = parser.parse_args(argv if argv is not None else [])
    started = time.perf_counter()
    measured = measure(args.subscriptions)
    print(json.dumps(measured), flush=True)
    simulated = simulate_run(measured, args.simulated)
    print(json.dumps(simulated), flush=True)
    configured = simulated["configured"]
    met = (configured["ratio_to_floor"] <= 1.1
           and measured["dynamodb_requests_per_invoice"]["max_warm"] <= TARGET_DYNAMODB_REQUESTS
           and measured["stripe_writes_per_invoice"] == 1)
    result = {"benchmark": "billing", "measured": measured, "simulated": simulated, "targets_met": met}
    if args.output:
        from datetime import date

        with open(args.output, "w") as f:
            json.dump({**result, "date": date.today().isoformat(),
                       "wall_seconds": round(time.perf_counter() - started)}, f, indent=1)
            f.write("\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:])["targets_met"] else 1)
