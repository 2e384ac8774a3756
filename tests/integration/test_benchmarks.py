"""The benchmarks of tests/bench still run (`make bench` is not part of the
suite): each on a tiny size, in a child interpreter, because they set
their own environment and patch botocore and moto for their process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SMOKE = r'''
import importlib.util, json, os
os.environ.update(BENCH_DEVICES="3", BENCH_READINGS="2", BENCH_API_CUSTOMERS="1", BENCH_API_REQUESTS="1",
                  BENCH_CONSOLE_CUSTOMERS="30", BENCH_CONSOLE_MONTHS="2", BENCH_CONSOLE_BILLED="2",
                  BENCH_CONSOLE_REQUESTS="1")
from tests.bench import bench_api, bench_billing, bench_console, bench_ingest, bench_package, bench_rating, harness
from chalicelib.domain.catalog import parse_offer

out = {}
offer = parse_offer(bench_rating.OFFER)
items = bench_rating.workload(50)
out["rating"] = bench_rating.run_once(offer, items)
out["simulated"] = bench_billing.simulate(300, 10, before_charge=0.05, after_charge=0.05)
out["ingest"] = bench_ingest.run(10)
out["billing"] = bench_billing.measure(1)
out["api"] = bench_api.main()
out["console"] = bench_console.main()
out["first_call_modules_missing"] = [m for ms in bench_package.FIRST_CALL_IMPORTS.values() for m in ms
                                     if importlib.util.find_spec(m) is None]
out["functions_unknown"] = [f for f in bench_package.functions() if f not in bench_package.FIRST_CALL_IMPORTS]

# The benchmarks' cheaper moto transactions still roll a cancelled one back.
import boto3
from moto import mock_aws
harness.lighten_moto()
with mock_aws():
    db = boto3.client("dynamodb", region_name="eu-west-1")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    db.put_item(TableName="t", Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    try:
        db.transact_write_items(TransactItems=[
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET v = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}}}},
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "c"}},
                                "ConditionExpression": "attribute_exists(pk)"}},
        ])
        out["cancelled"] = False
    except db.exceptions.TransactionCanceledException:
        out["cancelled"] = True
    out["after_cancel"] = [db.get_item(TableName="t", Key={"pk": {"S": k}}).get("Item") for k in "ab"]
    db.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}}}}])
    out["after_commit"] = db.get_item(TableName="t", Key={"pk": {"S": "b"}}).get("Item")

    # Queries on an index see every change of the item set, and updates.
    db.create_table(TableName="g", BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "g")],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                    GlobalSecondaryIndexes=[{"IndexName": "by_g", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                             "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}]}])

    def in_g(value):
        items = db.query(TableName="g", IndexName="by_g", KeyConditionExpression="g = :g",
                         ExpressionAttributeValues={":g": {"S": value}})["Items"]
        return sorted((i["pk"]["S"], i["sk"]["S"]) for i in items)  # no order without an index sort key

    for pk, sk in (("b", "2"), ("a", "9"), ("b", "1"), ("a", "10")):
        db.put_item(TableName="g", Item={"pk": {"S": pk}, "sk": {"S": sk}, "g": {"S": "x"}})
    out["index_sorted"] = in_g("x")
    db.delete_item(TableName="g", Key={"pk": {"S": "b"}, "sk": {"S": "2"}})
    out["index_after_delete"] = in_g("x")
    db.update_item(TableName="g", Key={"pk": {"S": "a"}, "sk": {"S": "9"}}, UpdateExpression="SET g = :y",
                   ExpressionAttributeValues={":y": {"S": "y"}})
    db.update_item(TableName="g", Key={"pk": {"S": "c"}, "sk": {"S": "0"}}, UpdateExpression="SET g = :x",
                   ExpressionAttributeValues={":x": {"S": "x"}})
    try:
        db.transact_write_items(TransactItems=[
            {"Put": {"TableName": "g", "Item": {"pk": {"S": "d"}, "sk": {"S": "0"}, "g": {"S": "x"}}}},
            {"ConditionCheck": {"TableName": "g", "Key": {"pk": {"S": "z"}, "sk": {"S": "z"}},
                                "ConditionExpression": "attribute_exists(pk)"}},
        ])
    except db.exceptions.TransactionCanceledException:
        pass
    out["index_after_changes"] = [in_g("x"), in_g("y")]

# Comparisons of attribute values answer as moto's own (by cast_value).
from moto.dynamodb.models.dynamo_type import DynamoType
values = [DynamoType(v) for v in ({"S": "a"}, {"S": "b"}, {"S": "a"}, {"B": "YQ=="}, {"N": "2"}, {"N": "10"})]
out["comparisons"] = [
    [a == b, a != b, (a < b) if a.type == b.type else None]
    == [a.type == b.type and a.cast_value == b.cast_value, a.type != b.type or a.cast_value != b.cast_value,
        (a.cast_value < b.cast_value) if a.type == b.type else None]
    for a in values for b in values]
print("@@" + json.dumps(out, default=str))
'''


def test_every_benchmark_runs_on_a_tiny_size():
    process = subprocess.run([sys.executable, "-c", SMOKE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(ROOT)})
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(next(line for line in process.stdout.splitlines() if line.startswith("@@"))[2:])

    assert out["rating"] > 0
    assert out["simulated"]["floor_seconds"] == 12 and out["simulated"]["ratio_to_floor"] >= 1

    ingest = out["ingest"]
    assert ingest["readings"] == 6 and ingest["failed"] == 0 and ingest["usage_exact"] is True
    assert ingest["reads_per_reading"] < 1 and ingest["writes_per_reading"] <= 1
    assert ingest["wcu_per_reading"] > 0 and ingest["app_us_per_reading"] > 0

    billing = out["billing"]
    assert billing["invoices"] == 1 and billing["stripe_writes_per_invoice"] == 1
    assert billing["dynamodb_requests_per_invoice"]["max"] <= 8

    routes = out["api"]["routes"]
    assert len(routes) == 5
    assert all(r["dynamodb_requests"]["median"] >= 1 and r["cpu_ms"]["median"] > 0 for r in routes.values())

    # The console's pages, a page of 25 customers among 30: the requests a page
    # makes are those of its rows, whatever the number of customers.
    pages = out["console"]["pages"]
    assert len(pages) == 4 and all(p["cpu_ms"]["median"] > 0 for p in pages.values())
    requests = {name: p["dynamodb_requests"]["max"] for name, p in pages.items()}
    assert requests["GET /console (dashboard)"] <= 4
    assert requests["GET /console/customers"] <= 25 + 2
    assert requests["GET /console/customers/{id} (24 months billed)"] <= 13

    # A function added since is measured with `import app` alone, and listed.
    assert out["first_call_modules_missing"] == []

    assert out["cancelled"] is True
    assert out["after_cancel"] == [{"pk": {"S": "a"}, "v": {"N": "1"}}, None]
    assert out["after_commit"] == {"pk": {"S": "b"}}
    assert out["index_sorted"] == [["a", "10"], ["a", "9"], ["b", "1"], ["b", "2"]]
    assert out["index_after_delete"] == [["a", "10"], ["a", "9"], ["b", "1"]]
    assert out["index_after_changes"] == [[["a", "10"], ["b", "1"], ["c", "0"]], [["a", "9"]]]
    assert all(out["comparisons"]) and len(out["comparisons"]) == 36
