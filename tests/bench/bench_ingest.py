"""Ingestion cost: device readings through the usage queue's handler.

10,000 readings of 500 lab machines (20 each, one a day from 20 November;
every machine crosses one of its monthly period boundaries), delivered in time
order as SQS batches of 1, 10 and 100 to the Lambda handler
(`app.handler_map["ingest_usage"]`, middleware included), against moto
in-process. Each machine has its own subscription, as Clic&O's do.

Measured per batch size:
- DynamoDB requests per reading, by operation;
- read and write capacity units per reading, computed with DynamoDB's item
  size rules from the items before and after each request (moto's own
  ConsumedCapacity is a constant): reads ceil(size / 4 KB), halved when
  eventually consistent; writes ceil(max(before, after) / 1 KB), doubled
  in a transaction, plus the write of each GSI the item is in;
- the handler's CPU per reading, without moto's: thread CPU time of the
  handler minus the time spent in moto's request processing and in this
  script's counting hooks. `app_us` is our code alone; `sdk_us` botocore's
  client-side work for our requests (building, signing, parsing), which a
  Lambda pays too.

Run: `python -m tests.bench.bench_ingest` (about two minutes; moto is the
slow part). Prints one JSON line, then the table. Not collected by pytest.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.update(
    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="eu-west-1",
    AWS_REGION="eu-west-1", STAGE="bench", POWERTOOLS_SERVICE_NAME="billing",
    POWERTOOLS_METRICS_NAMESPACE="Billing", POWERTOOLS_LOG_LEVEL="ERROR",
)

# Smaller runs for a quick look: BENCH_DEVICES=50 BENCH_READINGS=4.
DEVICES = int(os.environ.get("BENCH_DEVICES", "500"))
READINGS_PER_DEVICE = int(os.environ.get("BENCH_READINGS", "20"))
BATCH_SIZES = (1, 10, 100)
FIRST_DAY = datetime(2026, 11, 20, 6, tzinfo=timezone.utc)
TARGET_READINGS_PER_CPU_S = 2_000

UTC = timezone.utc


# ---------------------------------------------------------------------------
# DynamoDB's size rules


def value_size(value: dict) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in data)
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in data)
    raise ValueError(kind)


def item_size(item: dict | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return units if consistent else units / 2


class Meter:
    """Counts requests and capacity of the DynamoDB client through botocore's
    events, looking at items in moto's backend before and after each write;
    and times moto's processing and its own hooks, to subtract them."""

    GSI_KEYS = ("gsi1pk", "gsi2pk", "due_shard", "card_expiry")

    def __init__(self):
        self.requests: dict[str, int] = {}
        self.rcu = 0.0
        self.wcu = 0.0
        self.hook_cpu = 0.0
        self.moto_cpu = 0.0
        self.sdk_cpu = 0.0

    def reset(self):
        self.__init__()

    def table(self):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        from chalicelib.config import settings

        return dynamodb_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].get_table(settings().table_name)

    def stored(self, key: dict) -> dict | None:
        item = self.table().get_item(_dynamo_type(key["pk"]), _dynamo_type(key["sk"]))
        return item.to_json()["Attributes"] if item else None

    def _written_keys(self, name: str, params: dict) -> list[tuple[dict, bool]]:
        """(key, transactional) of every item a write request touches."""
        if name == "UpdateItem":
            return [(params["Key"], False)]
        if name == "PutItem":
            return [({"pk": params["Item"]["pk"], "sk": params["Item"]["sk"]}, False)]
        if name == "TransactWriteItems":
            keys = []
            for entry in params["TransactItems"]:
                (kind, body), = entry.items()
                if kind == "Put":
                    keys.append(({"pk": body["Item"]["pk"], "sk": body["Item"]["sk"]}, True))
                elif kind in ("Update", "Delete", "ConditionCheck"):
                    keys.append((body["Key"], True))
            return keys
        return []

    def before_call(self, model, params, context, **kwargs):
        # before-parameter-build: `params` are the operation's own arguments.
        started = time.thread_time()
        name = model.name
        self.requests[name] = self.requests.get(name, 0) + 1
        context["bench_params"] = params
        keys = self._written_keys(name, params)
        if keys:
            context["bench_before"] = [(k, t, self.stored(k)) for k, t in keys]
        self.hook_cpu += time.thread_time() - started

    def after_call(self, model, parsed, context, **kwargs):
        started = time.thread_time()
        name = model.name
        params = context.get("bench_params", {})
        if name in ("BatchGetItem", "GetItem", "Query"):
            if name == "BatchGetItem":
                request = next(iter(params["RequestItems"].values()))
                consistent = request.get("ConsistentRead", False)
                items = [i for items in parsed.get("Responses", {}).values() for i in items]
                self.rcu += sum(read_units(item_size(i), consistent) for i in items) or 0.5
            elif name == "GetItem":
                self.rcu += read_units(item_size(parsed.get("Item")), params.get("ConsistentRead", False))
            else:
                size = sum(item_size(i) for i in parsed.get("Items", []))
                self.rcu += read_units(size, params.get("ConsistentRead", False))
        for key, transactional, before in context.get("bench_before", []):
            if "Error" in parsed or parsed.get("ResponseMetadata", {}).get("HTTPStatusCode", 200) >= 300:
                continue
            after = self.stored(key)
            units = write_units(max(item_size(before), item_size(after)))
            units *= 2 if transactional else 1
            indexed = sum(1 for k in self.GSI_KEYS if (after and k in after) or (before and k in before))
            self.wcu += units + indexed * write_units(item_size(after or before))
        self.hook_cpu += time.thread_time() - started


def _dynamo_type(value: dict):
    from moto.dynamodb.models.dynamo_type import DynamoType

    return DynamoType(value)


# ---------------------------------------------------------------------------
# The workload


def setup_devices():
    from chalicelib.domain.periods import Interval
    from chalicelib.domain.usage import UsageCalendar
    from chalicelib.store import devices as device_store

    merchant_id = "mer_" + "0" * 25 + "1"
    for i in range(DEVICES):
        # Anchors on the 21st..28th: every machine's readings (20 Nov - 9 Dec)
        # cross exactly one of its period boundaries.
        start = datetime(2026, 9, 21 + i % 8, tzinfo=UTC)
        device_store.attach_device(
            merchant_id,
            f"neksia-{i:04d}",
            device_store.AttachedSubscription(
                f"sub_{i:026d}", f"cus_{i:026d}", UsageCalendar(start, start, Interval("month"), "Europe/Paris")
            ),
            start,
        )
    return merchant_id


def readings(merchant_id: str, seed: int = 7) -> list[str]:
    """Message bodies in time order: day by day, the machines in random order."""
    rng = random.Random(seed)
    totals = {i: [rng.randint(10_000, 20_000), rng.randint(100, 500)] for i in range(DEVICES)}
    bodies = []
    for day in range(READINGS_PER_DEVICE):
        order = list(range(DEVICES))
        rng.shuffle(order)
        for i in order:
            if day:
                totals[i][0] += rng.randint(0, 60)
                totals[i][1] += rng.randint(0, 8)
            ts = FIRST_DAY + timedelta(days=day, minutes=i % 600)
            bodies.append(json.dumps({
                "seq": 1000 + day, "ts": ts.isoformat().replace("+00:00", "Z"),
                "counters": {"montages": totals[i][0], "tracings": totals[i][1]},
                "merchant_id": merchant_id, "device_id": f"neksia-{i:04d}",
            }))
    return bodies


def sqs_event(bodies: list[str]) -> dict:
    return {"Records": [
        {"messageId": str(uuid.uuid4()), "receiptHandle": "h", "body": body,
         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:UsageQueue",
         "awsRegion": "eu-west-1"}
        for body in bodies
    ]}


def run(batch_size: int) -> dict:
    from botocore.client import BaseClient
    from moto import mock_aws
    from moto.core.botocore_stubber import BotocoreStubber

    from chalicelib import aws, config
    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.store import dynamo
    from infra.local.lambda_events import LocalContext
    from infra.local.provision import provision
    from tests.bench.harness import lighten_moto

    lighten_moto()
    meter = Meter()
    original_stub = BotocoreStubber.__call__
    original_call = BaseClient._make_api_call

    def timed_stub(self, *args, **kwargs):
        started = time.thread_time()
        try:
            return original_stub(self, *args, **kwargs)
        finally:
            meter.moto_cpu += time.thread_time() - started

    def timed_call(self, *args, **kwargs):
        started = time.thread_time()
        try:
            return original_call(self, *args, **kwargs)
        finally:
            meter.sdk_cpu += time.thread_time() - started

    with mock_aws():
        os.environ.update(provision())
        config.settings.cache_clear()
        aws.reset()
        use_clock(FixedClock(FIRST_DAY + timedelta(days=READINGS_PER_DEVICE + 1)))
        merchant_id = setup_devices()
        bodies = readings(merchant_id)
        from app import app

        handler = app.handler_map["ingest_usage"]
        events = dynamo.client().meta.events
        events.register("before-parameter-build.dynamodb", meter.before_call)
        events.register("after-call.dynamodb", meter.after_call)
        BotocoreStubber.__call__ = timed_stub
        BaseClient._make_api_call = timed_call
        meter.reset()
        failed = 0
        sink = io.StringIO()
        # moto's tables live in this process (thousands of objects a Lambda
        # does not have): frozen out of the cyclic collector's sight, so a
        # collection during our code costs what it would cost in Lambda.
        gc.collect()
        gc.freeze()
        per_call = []  # (readings, our CPU, SDK CPU) of each invocation
        total_cpu = 0.0
        try:
            with contextlib.redirect_stdout(sink):
                for start in range(0, len(bodies), batch_size):
                    event = sqs_event(bodies[start : start + batch_size])
                    moto, hooks, sdk = meter.moto_cpu, meter.hook_cpu, meter.sdk_cpu
                    started = time.thread_time()
                    result = handler(event, LocalContext())
                    spent = time.thread_time() - started
                    total_cpu += spent
                    excluded = (meter.moto_cpu - moto) + (meter.hook_cpu - hooks)
                    per_call.append((len(event["Records"]), spent - excluded, (meter.sdk_cpu - sdk) - excluded))
                    failed += len(result["batchItemFailures"])
                    sink.seek(0)
                    sink.truncate()
        finally:
            gc.unfreeze()
            BotocoreStubber.__call__ = original_stub
            BaseClient._make_api_call = original_call
            events.unregister("before-parameter-build.dynamodb", meter.before_call)
            events.unregister("after-call.dynamodb", meter.after_call)
            use_clock(None)
        check = _check_totals(merchant_id, bodies)
    n = len(bodies)
    # The hooks run inside the SDK call, and moto inside the hooks' call.
    sdk = meter.sdk_cpu - meter.moto_cpu - meter.hook_cpu
    ours = total_cpu - meter.moto_cpu - meter.hook_cpu
    writes = sum(v for k, v in meter.requests.items() if k in ("UpdateItem", "PutItem", "TransactWriteItems"))
    reads = sum(v for k, v in meter.requests.items() if k in ("BatchGetItem", "GetItem", "Query"))
    return {
        "batch_size": batch_size,
        "readings": n,
        "failed": failed,
        "requests": dict(sorted(meter.requests.items())),
        "reads_per_reading": round(reads / n, 4),
        "writes_per_reading": round(writes / n, 4),
        "rcu_per_reading": round(meter.rcu / n, 4),
        "wcu_per_reading": round(meter.wcu / n, 4),
        "cpu_us_per_reading": round(ours / n * 1e6, 1),
        "sdk_us_per_reading": round(sdk / n * 1e6, 1),
        "app_us_per_reading": round((ours - sdk) / n * 1e6, 1),
        "readings_per_cpu_s": round(n / ours),
        "readings_per_app_cpu_s": round(n / (ours - sdk)),
        # Medians over the invocations (each a batch): CPU per reading.
        "median_cpu_us_per_reading": round(statistics.median(c / k for k, c, _ in per_call) * 1e6, 1),
        "median_app_us_per_reading": round(statistics.median((c - d) / k for k, c, d in per_call) * 1e6, 1),
        "invocations": len(per_call),
        "usage_exact": check,
    }


def _check_totals(merchant_id: str, bodies: list[str]) -> bool:
    """The bench's own proof that nothing was lost or counted twice: per
    machine, the usage of all periods equals last value - first value."""
    from chalicelib.store import usage as usage_store

    first, last = {}, {}
    for body in bodies:
        data = json.loads(body)
        first.setdefault(data["device_id"], data["counters"]["montages"])
        last[data["device_id"]] = data["counters"]["montages"]
    for i in range(0, DEVICES, 50):  # a sample: reading usage back is not what is measured
        device = f"neksia-{i:04d}"
        periods = usage_store.usage_before(merchant_id, f"sub_{i:026d}", datetime(2027, 2, 1, tzinfo=UTC))
        total = sum((u["montages"].total for u in periods.values()), Decimal(0))
        if total != last[device] - first[device]:
            return False
    return True


def table(results: list[dict]) -> str:
    rows = [
        "| batch size | requests / reading (read, write) | RCU / reading | WCU / reading | CPU µs / reading (app + SDK) | readings / CPU-s (app + SDK) | readings / CPU-s (app only) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rows.append(
            f"| {r['batch_size']} | {r['reads_per_reading']}, {r['writes_per_reading']} | {r['rcu_per_reading']} | "
            f"{r['wcu_per_reading']} | {r['cpu_us_per_reading']} ({r['app_us_per_reading']} + {r['sdk_us_per_reading']}) | "
            f"{r['readings_per_cpu_s']} | {r['readings_per_app_cpu_s']} |"
        )
    return "\n".join(rows)


def main() -> dict:
    results = [run(size) for size in BATCH_SIZES]
    summary = {
        "benchmark": "ingest",
        "devices": DEVICES,
        "readings": DEVICES * READINGS_PER_DEVICE,
        "results": results,
        "target_readings_per_cpu_s": TARGET_READINGS_PER_CPU_S,
        "python": sys.version.split()[0],
    }
    print(json.dumps(summary))
    print(table(results))
    return summary


if __name__ == "__main__":
    main()
