"""Every file of events/ is a sample of what triggers a function, and each one
is driven through its handler here, so the samples cannot rot:

- an API Gateway proxy request (`requestContext.resourcePath`): a route of
  the API; its credentials are replaced by real ones (the operator's for
  /admin, a new merchant's otherwise);
- an SQS batch: the function consuming the queue its `eventSourceARN` names;
- a DynamoDB stream batch: every function reading the stream of the table
  its `eventSourceARN` names (`table/<LogicalId>/stream/...`), each handed
  the same records as Lambda does;
- an EventBridge scheduled event: the function whose rule its `resources`
  name (`<stack>-<Function><Function>Event-<id>`, as SAM names it);
- a Stripe event: POST /webhooks/stripe, signed here with the webhook secret;
- a device message (`seq`, `ts`, `counters`): published on
  `billing/<merchant>/<device>/counters`, through the IoT rule's SELECT to
  the usage queue's consumer.

A sample that matches no handler fails, and so does a function (or a Stripe
event type handled, or the IoT rule) without a sample. Every AWS call a
sample's handler makes must be allowed by that function's policy file.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path

import pytest

from infra.aws.functions import app_functions, event_source
from infra.aws.template import table_named
from infra.local.lambda_events import LocalContext
from infra.local.provision import load_template, resources_of_type
from tests.integration.aws_permissions import FunctionPolicy, record_aws_calls

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SAMPLES = sorted(EVENTS.rglob("*.json"))
SAMPLE_DEVICE_TOPIC = "billing/mer_01jdf7k3m4n5p6q7r8s9t0v1w2/neksia-0042/counters"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def target(sample: dict) -> tuple[str, str, str]:
    """(kind, function, detail) of a sample: what it triggers. AssertionError
    for a sample that matches no handler of the app."""
    from app import app

    functions = app_functions(app)
    if "requestContext" in sample and "resourcePath" in sample["requestContext"]:
        path, method = sample["requestContext"]["resourcePath"], sample["requestContext"]["httpMethod"]
        assert method in app.routes.get(path, {}), f"no route {method} {path}"
        return "api", "api_handler", f"{method} {path}"
    if sample.get("Records") and all(r.get("eventSource") == "aws:sqs" for r in sample["Records"]):
        queues = {r["eventSourceARN"].rsplit(":", 1)[1] for r in sample["Records"]}
        assert len(queues) == 1, f"one batch comes from one queue, not {sorted(queues)}"
        [queue] = queues
        consumers = [name for name, kind in functions.items()
                     if kind == "sqs" and event_source(app, name).queue == queue]
        assert consumers, f"no function consumes {queue}"
        return "sqs", consumers[0], queue
    if sample.get("Records") and all(r.get("eventSource") == "aws:dynamodb" for r in sample["Records"]):
        tables = {r["eventSourceARN"].split(":table/", 1)[1].split("/")[0] for r in sample["Records"]}
        assert len(tables) == 1, f"one batch comes from one table's stream, not {sorted(tables)}"
        [table] = tables
        consumers = stream_readers(table)
        assert consumers, f"no function reads {table}'s stream"
        return "stream", consumers[0], table
    if sample.get("source") == "aws.events" and sample.get("detail-type") == "Scheduled Event":
        rules = " ".join(sample.get("resources", []))
        named = [name for name, kind in functions.items()
                 if kind == "schedule" and f"-{camel(name)}{camel(name)}Event-" in rules]
        assert named, f"no scheduled function has the rule {rules}"
        return "schedule", named[0], rules
    if sample.get("object") == "event" and "type" in sample:
        from chalicelib.services.stripe_webhooks import HANDLERS

        assert sample["type"] in HANDLERS, f"the Stripe webhook does not handle {sample['type']}"
        assert "POST" in app.routes.get("/webhooks/stripe", {}), "no Stripe webhook route"
        return "stripe", "api_handler", sample["type"]
    if {"seq", "ts", "counters"} <= set(sample):
        consumers = [name for name, kind in functions.items()
                     if kind == "sqs" and event_source(app, name).queue == "UsageQueue"]
        assert consumers, "no function consumes UsageQueue, where the IoT rule sends device messages"
        return "device", consumers[0], SAMPLE_DEVICE_TOPIC
    raise AssertionError("not a trigger of any handler")


def stream_readers(table: str) -> list[str]:
    """Every function reading `table`'s stream: each is handed the same
    records (an event source mapping each)."""
    from app import app

    return [name for name, kind in app_functions(app).items()
            if kind == "dynamodb" and table_named(event_source(app, name).stream_arn) == table]


def driven(sample: dict) -> list[str]:
    """The functions a sample triggers."""
    kind, function, detail = target(sample)
    return stream_readers(detail) if kind == "stream" else [function]


def test_every_function_has_a_sample():
    from app import app

    covered = {function for path in SAMPLES for function in driven(load(path))}
    assert set(app_functions(app)) - covered == set(), "functions without a sample in events/"


def test_every_stripe_event_handled_has_a_sample():
    from chalicelib.services.stripe_webhooks import HANDLERS

    sampled = {kind_detail[2] for kind_detail in (target(load(p)) for p in SAMPLES) if kind_detail[0] == "stripe"}
    assert set(HANDLERS) - sampled == set(), "Stripe event types handled without a sample in events/"


def test_the_iot_rule_has_a_sample():
    rules = resources_of_type(load_template(), "AWS::IoT::TopicRule")
    assert rules, "infra/aws/resources.yaml has no IoT topic rule"
    assert any(target(load(p))[0] == "device" for p in SAMPLES), "no device message in events/"


@pytest.fixture
def credentials(new_merchant):
    """Real keys for a sample's `Authorization`, by route."""
    merchant = new_merchant()
    return lambda path: os.environ["ADMIN_API_KEY"] if path.startswith("/admin/") else merchant.key


def with_credentials(event: dict, key: str) -> dict:
    for headers in (event.get("headers") or {}, event.get("multiValueHeaders") or {}):
        for name in list(headers):
            if name.lower() == "authorization":
                headers[name] = [f"Bearer {key}"] if isinstance(headers[name], list) else f"Bearer {key}"
    return event


def stripe_delivery(payload: bytes) -> dict:
    """POST /webhooks/stripe as API Gateway hands it over, signed as Stripe does."""
    stamp = int(time.time())
    secret = os.environ["STRIPE_WEBHOOK_SECRET"].encode()
    signature = hmac.new(secret, f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    event = load(EVENTS / "api_get_health.json")
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={stamp},v1={signature}",
               "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    event.update(resource="/webhooks/stripe", path="/webhooks/stripe", httpMethod="POST", headers=headers,
                 multiValueHeaders={k: [v] for k, v in headers.items()}, body=payload.decode())
    event["requestContext"].update(resourcePath="/webhooks/stripe", httpMethod="POST", path="/api/webhooks/stripe")
    return event


def device_batch(message: dict, topic: str) -> dict:
    """What the IoT rule sends to the usage queue, as Lambda delivers it:
    `SELECT seq, ts, counters, topic(2) AS merchant_id, topic(3) AS device_id`."""
    _, merchant_id, device_id, _ = topic.split("/")
    body = json.dumps({**message, "merchant_id": merchant_id, "device_id": device_id})
    return {"Records": [{
        "messageId": "1b6f4e0a-2c8d-4f3e-9a71-5d0c8b2e6f14", "receiptHandle": "AQEBdevice", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795341600000"},
        "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(), "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{os.environ['AWS_REGION']}:123456789012:UsageQueue",
        "awsRegion": os.environ["AWS_REGION"],
    }]}


def handler(function: str):
    """What Lambda calls for `function`: `app.<function>` (the module's)."""
    import app as module

    return getattr(module, function)


def assert_api_answer(response: dict, what: str) -> dict:
    assert response["statusCode"] < 500, f"{what}: {response}"
    body = json.loads(response["body"]) if response.get("body") else None
    if response["statusCode"] >= 400:
        assert set(body["error"]) >= {"type", "code", "message", "param"}, f"{what}: {body}"
    return body


@pytest.mark.parametrize("path", SAMPLES, ids=[str(p.relative_to(EVENTS)) for p in SAMPLES])
def test_the_sample_drives_its_handler(path, aws, client, credentials, localstripe):
    from app import app

    sample = load(path)
    kind, _, detail = target(sample)
    for function in driven(sample):
        drive(function, kind, detail, path, aws, app, credentials)


def drive(function: str, kind: str, detail: str, path: Path, aws, app, credentials) -> None:
    sample = load(path)
    policy = FunctionPolicy(function, aws)
    with record_aws_calls() as calls:
        if kind == "api":
            response = app(with_credentials(sample, credentials(sample["requestContext"]["resourcePath"])),
                           LocalContext())
            assert_api_answer(response, detail)
        elif kind == "stripe":
            response = app(stripe_delivery(path.read_bytes()), LocalContext())
            assert response["statusCode"] == 200, response
            assert assert_api_answer(response, detail)["received"] is True
        elif kind in ("sqs", "device"):
            batch = device_batch(sample, detail) if kind == "device" else sample
            result = handler(function)(batch, LocalContext())
            ids = {record["messageId"] for record in batch["Records"]}
            assert {failure["itemIdentifier"] for failure in result["batchItemFailures"]} <= ids
        elif kind == "stream":
            result = handler(function)(sample, LocalContext())
            sequence = {record["dynamodb"]["SequenceNumber"] for record in sample["Records"]}
            assert {failure["itemIdentifier"] for failure in (result or {}).get("batchItemFailures", [])} <= sequence
        else:
            handler(function)(sample, LocalContext())
    refused = [str(call) for call in calls if not policy.allows(call)]
    assert refused == [], f"{function}'s policy does not allow what its handler does"


def test_a_policy_that_misses_a_call_is_caught(aws, client):
    """The check above can fail: the API's own calls, against a policy
    without its idempotency table."""
    from app import app

    policy = FunctionPolicy("api_handler", aws)
    policy.statements = [s for s in policy.statements if not re.search("idempotency", json.dumps(s))]
    event = with_credentials(load(EVENTS / "api_post_admin_merchants.json"), os.environ["ADMIN_API_KEY"])
    with record_aws_calls() as calls:
        assert app(event, LocalContext())["statusCode"] == 201
    assert any("billing-idempotency" in str(call) and not policy.allows(call) for call in calls)
