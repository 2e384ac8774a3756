"""API request cost: CPU and DynamoDB calls of the five most used routes.

The five routes a merchant's systems call most, by what they are for:
- `POST /usage`: call-centre systems and merchants' apps push usage all day
  (a request of 10 events here);
- `GET /customers/{id}`: the whole relationship on one page (support,
  back office);
- `GET /subscriptions/{id}`: a subscription's state;
- `GET /invoices?customer_id=`: a customer's invoices;
- `GET /subscriptions/{id}/usage`: the current period's usage per meter.

Each request is an API Gateway (REST, proxy) event handed to the Chalice app
as Lambda does (`app(event, context)`: routing, middleware, authentication,
JSON), warm (the container already served a request, as most requests
are), against moto in-process with data made through the services: a
merchant with 15 customers, each with a subscription to the Clic&O offer,
its first invoice paid and some usage. Measured per request: DynamoDB
requests by operation (counted at botocore), and CPU time of the request
minus moto's (tests/bench/harness.py): what the Lambda itself would burn.

Run: `python -m tests.bench.bench_api`. Prints one JSON line; `main()`
returns it as a dict. Not collected by pytest.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench.harness import (  # noqa: E402
    AwsMeter, dynamodb_requests, lighten_moto, median, percentile, use_bench_environment,
)

use_bench_environment()

CUSTOMERS = int(os.environ.get("BENCH_API_CUSTOMERS", "15"))
REQUESTS_PER_ROUTE = int(os.environ.get("BENCH_API_REQUESTS", "60"))
USAGE_EVENTS_PER_REQUEST = 10


def api_event(method: str, path: str, resource: str, path_parameters: dict | None, api_key: str, *,
              query: dict | None = None, body: dict | None = None) -> dict:
    """An API Gateway REST proxy event, as Lambda hands it to the function."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
               "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"}
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query, "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": path_parameters, "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": f"/api{path}", "stage": "api",
                           "requestId": str(uuid.uuid4()), "accountId": "123456789012", "apiId": "a1b2c3d4e5",
                           "identity": {"sourceIp": "203.0.113.10"}},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


def setup():
    """A merchant with CUSTOMERS customers, each subscribed, invoiced once, with usage."""
    from tests.bench.bench_billing import START, CountingGateway, seed_clico

    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.services import collecting, issuing, usage

    clock = FixedClock(START)
    use_clock(clock)
    collecting.use_gateway(CountingGateway())
    merchant, pairs = seed_clico(CUSTOMERS)
    merchant_id = merchant["id"]
    for _, sub_id in pairs:
        issuing.bill_subscription(merchant_id, sub_id)
    clock.set(START + timedelta(days=10))
    for n, (_, sub_id) in enumerate(pairs):
        at = START + timedelta(days=5)
        usage.record_events(merchant_id, [
            usage.EventInput(f"setup-calls-{n}", sub_id, "calls", Decimal(300 + n), at),
            usage.EventInput(f"setup-hours-{n}", sub_id, "agent_hours", Decimal("7.5"), at),
        ])
    collecting.use_gateway(None)
    return merchant["api_key"], pairs, clock


def routes(api_key: str, pairs, clock) -> dict:
    """Route label -> a function of the request number giving its event."""
    at = (clock.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    def post_usage(i):
        _, sub_id = pairs[i % len(pairs)]
        events = [{"event_id": f"call-{i}-{k}", "subscription_id": sub_id, "meter": "calls", "quantity": "1",
                   "timestamp": at} for k in range(USAGE_EVENTS_PER_REQUEST)]
        return api_event("POST", "/usage", "/usage", None, api_key, body={"events": events})

    def get_customer(i):
        customer_id, _ = pairs[i % len(pairs)]
        return api_event("GET", f"/customers/{customer_id}", "/customers/{customer_id}",
                         {"customer_id": customer_id}, api_key)

    def get_subscription(i):
        _, sub_id = pairs[i % len(pairs)]
        return api_event("GET", f"/subscriptions/{sub_id}", "/subscriptions/{subscription_id}",
                         {"subscription_id": sub_id}, api_key)

    def list_invoices(i):
        customer_id, _ = pairs[i % len(pairs)]
        return api_event("GET", "/invoices", "/invoices", None, api_key, query={"customer_id": customer_id})

    def subscription_usage(i):
        _, sub_id = pairs[i % len(pairs)]
        return api_event("GET", f"/subscriptions/{sub_id}/usage", "/subscriptions/{subscription_id}/usage",
                         {"subscription_id": sub_id}, api_key)

    return {
        f"POST /usage ({USAGE_EVENTS_PER_REQUEST} events)": post_usage,
        "GET /customers/{id}": get_customer,
        "GET /subscriptions/{id}": get_subscription,
        "GET /invoices?customer_id=": list_invoices,
        "GET /subscriptions/{id}/usage": subscription_usage,
    }


def measure_route(app, make_event, meter: AwsMeter, requests: int) -> dict:
    from infra.local.lambda_events import LocalContext

    context = LocalContext()
    sink = io.StringIO()
    cpu, app_cpu, calls, statuses = [], [], [], set()
    by_operation: dict[str, int] = {}
    with contextlib.redirect_stdout(sink):
        answer = app(make_event(10_000), context)  # warm: first use of the route's code
        assert answer["statusCode"] < 300, answer
        for i in range(requests):
            event = make_event(i)
            meter.take()
            started = time.thread_time()
            answer = app(event, context)
            spent = time.thread_time() - started
            counts, sdk, moto = meter.take()
            statuses.add(answer["statusCode"])
            ours = spent - moto
            cpu.append(ours)
            app_cpu.append(ours - (sdk - moto))
            dynamodb = dynamodb_requests(counts)
            calls.append(sum(dynamodb.values()))
            for operation, n in dynamodb.items():
                by_operation[operation] = by_operation.get(operation, 0) + n
            sink.seek(0)
            sink.truncate()
    assert all(status < 300 for status in statuses), statuses
    return {
        "requests": requests,
        "cpu_ms": {"median": round(median(cpu) * 1000, 3), "p90": round(percentile(cpu, 0.9) * 1000, 3),
                   "p95": round(percentile(cpu, 0.95) * 1000, 3)},
        "app_cpu_ms_median": round(median(app_cpu) * 1000, 3),
        "dynamodb_requests": {"median": median(calls), "max": max(calls)},
        "dynamodb_by_operation": {op: round(n / requests, 2) for op, n in sorted(by_operation.items())},
    }


def measure_routes(setup, routes, requests: int) -> tuple:
    """In moto in-process with every resource provisioned: the data
    `setup()` makes, then each event of `routes(*made)` (label -> event of
    the request number) measured `requests` times. Returns (made, figures
    by label)."""
    from moto import mock_aws

    from chalicelib import aws, config
    from chalicelib.clock import use_clock
    from infra.local.provision import provision

    # The bench's own settings, whatever ran before in this process (the
    # ingestion bench has a stage of its own).
    use_bench_environment()
    # Without it, moto copies the whole table on every transaction: seeding
    # the console's 2,000 customers took a second and 40 MB each.
    lighten_moto()
    with mock_aws():
        os.environ.update(provision())
        config.settings.cache_clear()
        aws.reset()
        try:
            made = setup()
            from app import app

            meter = AwsMeter().install()
            # moto's tables live in this process (objects a Lambda does not
            # have): frozen out of the cyclic collector's sight, so a
            # collection during a request costs what it would in Lambda.
            gc.collect()
            gc.freeze()
            try:
                results = {label: measure_route(app, make, meter, requests)
                           for label, make in routes(*made).items()}
            finally:
                gc.unfreeze()
                meter.uninstall()
        finally:
            use_clock(None)
    return made, results


def main() -> dict:
    _, results = measure_routes(setup, routes, REQUESTS_PER_ROUTE)
    summary = {"benchmark": "api", "customers": CUSTOMERS, "routes": results, "python": sys.version.split()[0]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
