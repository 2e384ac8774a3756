"""The load run: a fleet of machines publishing over MQTT to the local stage
while a billing run and merchants' API traffic go on, then every total
checked exactly against what the machines sent.

    make load                                   (LOAD_SECONDS=600, LOAD_DEVICES=1000)
    python -m tests.load.run --devices 1000 --seconds 600 [--interval 60] [--output FILE]

It starts a stage of its own on free ports (or uses a running one:
`--api`, `--mqtt-port`, `--stripe`, `--aws`), and:
1. creates a merchant, customers with a card saved on the payment page, one
   subscription per `--per-subscription` machines (their first invoices
   charged), and attaches the machines;
2. for `--seconds`, each machine publishes a reading every `--interval`
   seconds on `billing/{merchant}/{device}/counters` (QoS 1), duplicates,
   readings out of order and counter resets mixed in (tests/load/fleet.py);
   merchants' API traffic runs beside it (reads of subscriptions, usage,
   devices, invoices and customers; `POST /usage` events of a `calls` meter,
   some sent twice); half-way the stage's clock is moved past the
   subscriptions' period end, which bills every one of them (charged at
   localstripe) while the readings go on;
3. measures the ingest lag of a sample of machines (`--tracers`): the time
   from a reading's publication to its being shown by `GET /devices/{id}`;
4. once every machine shows its last reading, checks for each subscription
   the usage of every period (`GET /subscriptions/{id}/usage?period_start=`)
   against what its machines and events add up to (fleet.expected_usage):
   any difference is usage lost or counted twice; the usage dead-letter
   queue must be empty; the billing as `population.check_billing` says.

Prints the figures as JSON (and writes them to `--output`); exits 1 when a
check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.load import population as pop
from tests.load.fleet import METERS, Machine, expected_usage

UTC = timezone.utc


def iso_now(stage_clock: "StageClock") -> str:
    from tests.load.fleet import iso

    return iso(stage_clock.now())


class StageClock:
    """The stage's time, followed from `GET /_local/clock` (it jumps when
    the clock is moved): readings are stamped with it, as a machine's clock
    agrees with the backend's."""

    def __init__(self, operator: pop.Api):
        self.operator = operator
        self.offset = timedelta(0)
        self.refresh()

    def refresh(self) -> None:
        before = datetime.now(UTC)
        stage = pop.stage_now(self.operator)
        self.offset = stage - before

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Publishers:
    """MQTT connections the machines publish through (QoS 1), each with its
    network thread; every publication is kept to be waited for."""

    def __init__(self, port: int, connections: int):
        import paho.mqtt.client as mqtt

        self.clients = []
        for n in range(connections):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{n}-{time.time_ns()}")
            client.max_queued_messages_set(0)
            client.max_inflight_messages_set(100)
            client.connect("127.0.0.1", port, keepalive=60)
            client.loop_start()
            self.clients.append(client)
        self.pending = []

    def publish(self, n: int, topic: str, message: dict) -> None:
        self.pending.append(self.clients[n % len(self.clients)].publish(topic, json.dumps(message), qos=1))

    def wait(self, seconds: float = 60) -> int:
        """Wait for every acknowledgement; returns how many never came."""
        deadline = time.monotonic() + seconds
        for info in self.pending:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        return sum(not info.is_published() for info in self.pending)

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


class LagProbe:
    """Reads the tracer machines over and over (`GET /devices/{id}`): a
    reading's lag is from its publication to the first read that shows it
    (or a later one) as the machine's last reading."""

    def __init__(self, merchant: pop.Api, tracers: list[Machine]):
        self.merchant, self.tracers = merchant, tracers
        self.published: dict[str, dict[int, float]] = {m.device_id: {} for m in tracers}
        self.lags: list[float] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reads = 0

    def record(self, device_id: str, seq: int, at: float) -> None:
        if device_id in self.published:
            with self.lock:
                self.published[device_id].setdefault(seq, at)

    def run(self) -> None:
        while not self.stopping.is_set():
            for machine in self.tracers:
                try:
                    device = self.merchant.get(f"/devices/{machine.device_id}", kind="GET /devices/{id}")
                except pop.ApiError:
                    continue
                seen_at = time.monotonic()
                self.reads += 1
                seq = (device.get("last_reading") or {}).get("seq")
                if seq is None:
                    continue
                with self.lock:
                    waiting = self.published[machine.device_id]
                    for published_seq in [s for s in waiting if s <= seq]:
                        self.lags.append(seen_at - waiting.pop(published_seq))
            # A sweep of the tracers every quarter of a second at most: the
            # probe is API traffic too, and should not be most of it.
            self.stopping.wait(0.25)

    def figures(self) -> dict:
        lags = self.lags
        return {"samples": len(lags), "tracers": len(self.tracers), "device_reads": self.reads,
                "p50_s": round(pop.percentile(lags, 0.5), 2), "p90_s": round(pop.percentile(lags, 0.9), 2),
                "p99_s": round(pop.percentile(lags, 0.99), 2), "max_s": round(max(lags, default=0.0), 2)}


class ApiTraffic:
    """Merchants' systems calling the API while the fleet publishes: reads of
    what the run created and `POST /usage` events (`calls`), a tenth of
    them sent again (the same event ids: counted once). Remembers what each
    subscription's events add up to."""

    def __init__(self, merchant: pop.Api, stage_clock: StageClock, subscriptions: list[dict],
                 machines: list[Machine], rate: float, seed: int):
        self.merchant, self.clock, self.subscriptions, self.machines = merchant, stage_clock, subscriptions, machines
        self.rate, self.rng = rate, random.Random(seed)
        self.calls: Counter = Counter()
        self.accepted = self.duplicates = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.sent: list[dict] = []
        self.lock = threading.Lock()

    def one(self, n: int) -> None:
        rng = self.rng
        subscription = rng.choice(self.subscriptions)
        roll = rng.random()
        m = self.merchant
        if roll < 0.25:
            if self.sent and rng.random() < 0.1:
                with self.lock:
                    event = rng.choice(self.sent)
            else:
                event = {"event_id": f"call-{n}", "subscription_id": subscription["id"], "meter": "calls",
                         "quantity": "1", "timestamp": self.clock.now().isoformat().replace("+00:00", "Z")}
            answer = m.post("/usage", {"events": [event]}, idempotency_key=f"usage-{n}", kind="POST /usage")
            with self.lock:
                if answer["accepted"]:
                    self.calls[event["subscription_id"]] += 1
                    self.sent.append(event)
                self.accepted += answer["accepted"]
                self.duplicates += answer["duplicates"]
        elif roll < 0.45:
            m.get(f"/subscriptions/{subscription['id']}/usage", kind="GET /subscriptions/{id}/usage")
        elif roll < 0.6:
            m.get(f"/subscriptions/{subscription['id']}", kind="GET /subscriptions/{id}")
        elif roll < 0.75:
            m.get(f"/devices/{rng.choice(self.machines).device_id}", kind="GET /devices/{id}")
        elif roll < 0.9:
            m.get("/invoices", params={"subscription_id": subscription["id"]}, kind="GET /invoices")
        else:
            m.get(f"/customers/{subscription['customer_id']}", kind="GET /customers/{id}")

    def run(self, worker: int, workers: int) -> None:
        n = worker
        started = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.one(n)
            except pop.ApiError as error:
                self.errors.append(str(error)[:300])
            n += workers
            # Open loop: the k-th request of the run is due at k / rate.
            delay = started + (n // workers) * workers / self.rate - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)


def setup(operator: pop.Api, stripe_base: str, devices: int, per_subscription: int, seed: int,
          reset_rate: float = 0.01):
    merchant, record = pop.create_merchant(operator, "Flotte Load", f"LD{seed % 1000}")
    subscriptions_count = -(-devices // per_subscription)
    _, subscriptions = pop.populate(merchant, stripe_base, subscriptions_count, per_customer=10)
    rng = random.Random(seed)
    machines = [Machine(f"neksia-{n + 1:05d}", subscriptions[n // per_subscription]["id"],
                        random.Random(rng.random()), reset_rate=reset_rate) for n in range(devices)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda m: merchant.post("/devices", {"device_id": m.device_id,
                                                           "subscription_id": m.subscription_id},
                                              idempotency_key=f"device-{m.device_id}"), machines))
    return merchant, record, subscriptions, machines


def publish_for(seconds: float, machines: list[Machine], merchant_id: str, publishers: Publishers,
                stage_clock: StageClock, interval: float, probe: LagProbe, at_half=None) -> dict:
    """Each machine publishes every `interval` seconds, the fleet spread
    evenly over the interval, for `seconds`. `at_half` runs (in its own
    thread) half-way."""
    started = time.monotonic()
    count = len(machines)
    published = 0
    half = threading.Thread(target=at_half, name="at-half") if at_half else None
    half_started = False
    k = 0
    while True:
        due = started + k * interval / count
        if due - started >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if half is not None and not half_started and due - started >= seconds / 2:
            half_started = True
            half.start()
        machine = machines[k % count]
        now = stage_clock.now()
        for message in machine.tick(now):
            publishers.publish(k, f"billing/{merchant_id}/{machine.device_id}/counters", message)
            probe.record(machine.device_id, message["seq"], time.monotonic())
            published += 1
        k += 1
    for n, machine in enumerate(machines):
        for message in machine.flush():
            publishers.publish(n, f"billing/{merchant_id}/{machine.device_id}/counters", message)
            published += 1
    return {"published": published, "seconds": time.monotonic() - started, "half": half if half_started else None}


def wait_until_ingested(merchant: pop.Api, machines: list[Machine], seconds: float) -> tuple[float, list[str]]:
    """Wait until every machine shows its newest reading as its last one;
    returns when that was (monotonic) and the machines still behind."""
    behind = {m.device_id: m for m in machines}
    deadline = time.monotonic() + seconds
    last_caught = time.monotonic()
    while behind and time.monotonic() < deadline:
        for device_id, machine in list(behind.items()):
            device = merchant.get(f"/devices/{device_id}")
            if (device.get("last_reading") or {}).get("seq") == machine.last_accepted_seq():
                del behind[device_id]
                last_caught = time.monotonic()
        if behind:
            time.sleep(1)
    return last_caught, sorted(behind)


def usage_totals(merchant: pop.Api, subscription: dict, until: datetime) -> dict[str, str]:
    """Per meter, the usage of every period of the subscription from its
    start to `until`, added up."""
    from decimal import Decimal

    totals: dict[str, Decimal] = defaultdict(Decimal)
    period_start = subscription["current_period_start"]
    while pop.instant(period_start) <= until:
        usage = merchant.get(f"/subscriptions/{subscription['id']}/usage", params={"period_start": period_start})
        for meter, figures in usage["meters"].items():
            totals[meter] += Decimal(figures["total"])
        period_start = usage["period_end"]
    return {meter: str(value) for meter, value in totals.items()}


def check_usage(merchant: pop.Api, subscriptions: list[dict], machines: list[Machine], calls: Counter,
                until: datetime) -> dict:
    """Each subscription's usage, over all its periods, against what its
    machines sent and its events add up to."""
    expected: dict[str, Counter] = defaultdict(Counter)
    for machine in machines:
        expected[machine.subscription_id].update(expected_usage(machine.published))
    for subscription_id, n in calls.items():
        expected[subscription_id]["calls"] += n
    from decimal import Decimal

    lost, double, mismatches = Counter(), Counter(), []
    for subscription in subscriptions:
        got = usage_totals(merchant, subscription, until)
        want = expected[subscription["id"]]
        for meter in sorted(set(METERS) | {"calls"} | set(got)):
            difference = Decimal(got.get(meter, "0")) - want.get(meter, 0)
            if difference < 0:
                lost[meter] -= difference
            elif difference > 0:
                double[meter] += difference
            if difference:
                mismatches.append({"subscription_id": subscription["id"], "meter": meter,
                                   "expected": want.get(meter, 0), "got": got.get(meter, "0")})
    return {"expected": {meter: sum(c.get(meter, 0) for c in expected.values()) for meter in (*METERS, "calls")},
            "lost": {m: int(v) for m, v in lost.items()}, "double_counted": {m: int(v) for m, v in double.items()}, "mismatches": mismatches[:20],
            "subscriptions_checked": len(subscriptions)}


def run(api: str, mqtt_port: int, stripe_base: str, aws_endpoint: str | None, devices: int, seconds: float,
        interval: float, per_subscription: int, connections: int, tracers: int, api_rate: float,
        seed: int, state: dict | None = None, reset_rate: float = 0.01) -> dict:
    """The run (see the module's docstring); its figures. `state`, when
    given, receives what the run made (merchant, subscriptions, machines,
    the events' counts, the stage clock), for a caller to check again."""
    operator = pop.Api(api, pop.ADMIN_KEY, patience=300)
    latencies = pop.Latencies()
    setup_started = time.monotonic()
    merchant, record, subscriptions, machines = setup(operator, stripe_base, devices, per_subscription, seed,
                                                      reset_rate)
    merchant.latencies = latencies
    setup_seconds = time.monotonic() - setup_started
    stage_clock = StageClock(operator)
    publishers = Publishers(mqtt_port, min(connections, devices))
    probe = LagProbe(merchant, machines[:tracers])
    traffic = ApiTraffic(merchant, stage_clock, subscriptions, machines, api_rate, seed)
    period_end = max(pop.instant(s["current_period_end"]) for s in subscriptions)
    billing: dict = {}

    def billing_run() -> None:
        started = time.monotonic()
        moved = pop.move_clock(operator, period_end + timedelta(minutes=1))
        stage_clock.refresh()
        ours = {s["id"] for s in subscriptions}
        jobs = {job["name"]: job["result"] for job in moved["jobs"]}
        processed = [p for p in jobs.get("billing_scheduler", {}).get("processed", [])
                     if p.get("subscription_id") in ours]
        billing.update(seconds=round(time.monotonic() - started, 1), subscriptions_billed=len(processed),
                       failed=sum(1 for p in processed if "error" in p))

    follower_stop = threading.Event()

    def follow_clock() -> None:
        while not follower_stop.wait(2):
            try:
                stage_clock.refresh()
            except pop.ApiError:
                pass

    threads = [threading.Thread(target=probe.run, name="lag-probe", daemon=True),
               threading.Thread(target=follow_clock, name="clock", daemon=True)]
    workers = 2
    threads += [threading.Thread(target=traffic.run, args=(w, workers), name=f"api-{w}", daemon=True)
                for w in range(workers)]
    for thread in threads:
        thread.start()
    first_publish = time.monotonic()
    published = publish_for(seconds, machines, record["id"], publishers, stage_clock, interval, probe, billing_run)
    unacknowledged = publishers.wait()
    traffic.stopping.set()
    if published["half"] is not None:
        published["half"].join()
    stopped_publishing = time.monotonic()
    caught_up, behind = wait_until_ingested(merchant, machines, max(120.0, seconds))
    probe.stopping.set()
    follower_stop.set()
    for thread in threads:
        thread.join(timeout=30)
    publishers.close()

    if state is not None:
        state.update(merchant=merchant, merchant_id=record["id"], subscriptions=subscriptions, machines=machines,
                     calls=traffic.calls, clock=stage_clock)
    usage = check_usage(merchant, subscriptions, machines, traffic.calls, stage_clock.now())
    dead_letters = None
    if aws_endpoint:
        import boto3

        sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name="eu-west-1",
                           aws_access_key_id="local", aws_secret_access_key="local")
        dead_letters = sum(pop.queue_depth(sqs, "UsageDeadLetterQueue"))
    invoices = pop.check_billing(merchant, record["id"], stripe_base, [s["id"] for s in subscriptions], 2)
    kinds = Counter()
    for machine in machines:
        kinds.update(machine.counts)
    ingest_seconds = caught_up - first_publish
    figures = {
        "devices": devices, "subscriptions": len(subscriptions), "seconds": seconds, "interval_s": interval,
        "mqtt_connections": len(publishers.clients), "setup_seconds": round(setup_seconds, 1),
        "messages_published": published["published"], "unacknowledged": unacknowledged,
        "duplicates": kinds["duplicates"], "out_of_order_pairs": kinds["swapped"], "resets": kinds["resets"],
        "offered_per_second": round(published["published"] / published["seconds"], 1),
        "held_per_second": round(published["published"] / ingest_seconds, 1),
        "drain_seconds_after_publishing": round(caught_up - stopped_publishing, 1),
        "devices_behind": behind[:20], "lag": probe.figures(),
        "api": {**latencies.figures(), "usage_events_accepted": traffic.accepted,
                "usage_events_duplicates": traffic.duplicates, "errors": traffic.errors[:10],
                "retried": dict(merchant.retried)},
        "billing_run": billing, "usage": usage, "usage_dead_letters": dead_letters, "invoices": invoices,
    }
    problems = list(invoices["problems"])
    if usage["lost"] or usage["double_counted"]:
        problems.append(f"usage lost {usage['lost']}, counted twice {usage['double_counted']}")
    if behind:
        problems.append(f"{len(behind)} devices never showed their last reading")
    if unacknowledged:
        problems.append(f"{unacknowledged} publications never acknowledged by the broker")
    if dead_letters:
        problems.append(f"{dead_letters} readings in the usage dead-letter queue")
    if traffic.errors:
        problems.append(f"{len(traffic.errors)} API requests failed")
    if billing.get("subscriptions_billed") != len(subscriptions):
        problems.append(f"the billing run billed {billing.get('subscriptions_billed')} of {len(subscriptions)}")
    figures["problems"] = problems
    return figures


def print_figures(figures: dict, output: str | None) -> int:
    """Print the figures as JSON (and write them to `output`); the exit
    status: 1 when a check found a problem."""
    text = json.dumps(figures, indent=1, sort_keys=True)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
    return 1 if figures["problems"] else 0


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=int(os.environ.get("LOAD_DEVICES", 1000)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("LOAD_SECONDS", 600)))
    parser.add_argument("--interval", type=float, default=float(os.environ.get("LOAD_INTERVAL", 120)),
                        help="seconds between two readings of a machine")
    parser.add_argument("--per-subscription", type=int, default=10, help="machines per subscription")
    parser.add_argument("--connections", type=int, default=50, help="MQTT connections the machines share")
    parser.add_argument("--tracers", type=int, default=20, help="machines whose ingest lag is measured")
    parser.add_argument("--api-rate", type=float, default=5.0, help="API requests per second beside the fleet")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--api", help="a running stage's API (default: start a stage of its own)")
    parser.add_argument("--mqtt-port", type=int)
    parser.add_argument("--stripe")
    parser.add_argument("--aws")
    parser.add_argument("--output", help="write the figures here too (JSON)")
    args = parser.parse_args(argv)
    options = dict(devices=args.devices, seconds=args.seconds, interval=args.interval,
                   per_subscription=args.per_subscription, connections=args.connections, tracers=args.tracers,
                   api_rate=args.api_rate, seed=args.seed)
    started = time.monotonic()
    if args.api:
        figures = run(args.api, args.mqtt_port, args.stripe, args.aws, **options)
    else:
        root = Path(__file__).resolve().parents[2]
        with pop.OwnStage(root / "test-artifacts" / "load-stage") as own:
            figures = run(own.api_base, own.mqtt_port, own.stripe_base, own.aws_endpoint, **options)
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return print_figures(figures, args.output)


if __name__ == "__main__":
    sys.exit(main())
