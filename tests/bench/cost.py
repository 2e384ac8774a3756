"""The cost model: AWS list prices applied to the benchmarks' measured counts.

Prices are on-demand list prices in USD, as AWS publishes them on each
service's pricing page, for eu-west-1 (Ireland, where the stack runs) and
us-east-1 (N. Virginia) beside it. They are data, dated: check them again
before quoting a figure to anyone (PRICES_AS_OF).

What is modelled, and what is not:
- usage-dependent charges only: free tiers, storage (DynamoDB GB-month),
  CloudWatch logs and metrics, data transfer and Stripe's card fees are
  left out (Stripe's processing fee is the same with or without Stripe
  Billing, so it cancels out in the comparison);
- a Lambda's billed duration is its CPU time scaled to its memory size
  (Lambda gives a function one full vCPU at 1,769 MB, proportionally less
  below) plus the wait for each DynamoDB request (DYNAMODB_LATENCY_S); the
  CPU is the one measured here, on this machine, excluding moto's.
"""
from __future__ import annotations

PRICES_AS_OF = "2025-06 (AWS pricing pages; DynamoDB on-demand as cut on 2024-11-01)"

PRICES = {
    "eu-west-1": {
        "dynamodb_write_request_unit_per_million": 0.7068,
        "dynamodb_read_request_unit_per_million": 0.1414,
        "lambda_gb_second": 0.0000166667,
        "lambda_requests_per_million": 0.20,
        "sqs_requests_per_million": 0.40,
        "api_gateway_rest_per_million": 3.50,
        "eventbridge_events_per_million": 1.00,
        "ses_per_thousand_mails": 0.10,
        "iot_messages_per_million": 1.00,
        "iot_rules_triggered_per_million": 0.15,
        "iot_actions_executed_per_million": 0.15,
    },
    "us-east-1": {
        "dynamodb_write_request_unit_per_million": 0.625,
        "dynamodb_read_request_unit_per_million": 0.125,
        "lambda_gb_second": 0.0000166667,
        "lambda_requests_per_million": 0.20,
        "sqs_requests_per_million": 0.40,
        "api_gateway_rest_per_million": 3.50,
        "eventbridge_events_per_million": 1.00,
        "ses_per_thousand_mails": 0.10,
        "iot_messages_per_million": 1.00,
        "iot_rules_triggered_per_million": 0.15,
        "iot_actions_executed_per_million": 0.15,
    },
}
SOURCES = {
    "DynamoDB on-demand": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    "Lambda (x86)": "https://aws.amazon.com/lambda/pricing/",
    "SQS (standard)": "https://aws.amazon.com/sqs/pricing/",
    "API Gateway (REST)": "https://aws.amazon.com/api-gateway/pricing/",
    "EventBridge (custom events)": "https://aws.amazon.com/eventbridge/pricing/",
    "SES (outbound)": "https://aws.amazon.com/ses/pricing/",
    "IoT Core (messaging, rules engine)": "https://aws.amazon.com/iot-core/pricing/",
    "Stripe Billing (0.7% of billing volume)": "https://stripe.com/billing/pricing",
}
STRIPE_BILLING_FEE = 0.007

# Assumptions, in the open.
DYNAMODB_LATENCY_S = 0.005          # one request, same region
FULL_VCPU_MB = 1769                 # Lambda: one vCPU at this memory size
INGEST_MEMORY_MB = 512              # .chalice/config.json
BILLING_MEMORY_MB = 512
API_MEMORY_MB = 1024
SQS_MESSAGES_PER_RECEIVE = 10       # Lambda's poller receives and deletes by tens
EVENTS_PER_INVOICE_MAILS = 0        # a paid invoice sends no mail; dunning does
MONTHLY_INVOICE_EUR = 150.0         # a Clic&O subscriber's invoice, for the 0.7% comparison
READINGS_PER_SUBSCRIBER_MONTH = 30  # one reading a day of one machine
USAGE_API_REQUESTS_PER_SUBSCRIBER_MONTH = 30   # e.g. a call-centre system posting daily
API_READS_PER_SUBSCRIBER_MONTH = 20             # the merchant's back office looking things up


def lambda_seconds(cpu_s: float, requests: float, memory_mb: int) -> float:
    return cpu_s * max(1.0, FULL_VCPU_MB / memory_mb) + requests * DYNAMODB_LATENCY_S


def ingestion_per_million(result: dict, prices: dict, *, batched: bool) -> dict:
    """USD per million readings, from one bench_ingest result (a batch size).

    batched: IoT rule -> SQS -> Lambda in batches of result's batch size;
    otherwise the per-message baseline: the IoT rule invokes a Lambda per
    message (the handler's work at batch size 1, no queue)."""
    million = 1_000_000
    batch = result["batch_size"]
    invocations = million / batch
    cpu_s = result["cpu_us_per_reading"] / 1e6 * million
    requests = (result["reads_per_reading"] + result["writes_per_reading"]) * million
    gb_s = lambda_seconds(cpu_s, requests, INGEST_MEMORY_MB) * INGEST_MEMORY_MB / 1024
    cost = {
        "iot_core": prices["iot_messages_per_million"] + prices["iot_rules_triggered_per_million"]
        + prices["iot_actions_executed_per_million"],
        "sqs": (1 + 2 / SQS_MESSAGES_PER_RECEIVE) * prices["sqs_requests_per_million"] if batched else 0.0,
        "lambda_requests": invocations / million * prices["lambda_requests_per_million"],
        "lambda_duration": gb_s * prices["lambda_gb_second"],
        "dynamodb_writes": result["wcu_per_reading"] * prices["dynamodb_write_request_unit_per_million"],
        "dynamodb_reads": result["rcu_per_reading"] * prices["dynamodb_read_request_unit_per_million"],
    }
    cost["total"] = sum(cost.values())
    return {k: round(v, 4) for k, v in cost.items()}


def per_invoice(billing: dict, prices: dict) -> dict:
    """USD per invoice of the billing run (worker and its share of the scheduler)."""
    m = billing
    invoices = m["invoices"]
    cpu_s = m["cpu_ms_per_invoice"]["median"] / 1000
    requests = m["dynamodb_requests_per_invoice"]["mean"]
    gb_s = lambda_seconds(cpu_s, requests, BILLING_MEMORY_MB) * BILLING_MEMORY_MB / 1024
    cost = {
        "lambda": prices["lambda_requests_per_million"] / 1e6 + gb_s * prices["lambda_gb_second"],
        # Scheduler sends by tens; the worker's poller receives and deletes.
        "sqs": (0.1 + 2) * prices["sqs_requests_per_million"] / 1e6,
        "dynamodb": (m["wcu_per_invoice"] * prices["dynamodb_write_request_unit_per_million"]
                     + m["rcu_per_invoice"] * prices["dynamodb_read_request_unit_per_million"]) / 1e6,
        "eventbridge": m["eventbridge_calls_per_invoice"] * prices["eventbridge_events_per_million"] / 1e6,
        "ses": EVENTS_PER_INVOICE_MAILS * prices["ses_per_thousand_mails"] / 1e3,
    }
    cost["total"] = sum(cost.values())
    assert invoices > 0
    return {k: round(v, 8) for k, v in cost.items()}


def per_api_request(api: dict, prices: dict, route: str) -> float:
    r = api["routes"][route]
    cpu_s = r["cpu_ms"]["median"] / 1000
    gb_s = lambda_seconds(cpu_s, r["dynamodb_requests"]["median"], API_MEMORY_MB) * API_MEMORY_MB / 1024
    ops = r["dynamodb_by_operation"]
    writes = sum(n for op, n in ops.items() if op not in ("GetItem", "BatchGetItem", "Query"))
    reads = sum(n for op, n in ops.items() if op in ("GetItem", "BatchGetItem", "Query"))
    # Capacity not measured for the API: one unit per request (small items),
    # a transaction's items at two units each counted as 4 (a usage request
    # writes its events and the period's tally).
    return (prices["api_gateway_rest_per_million"] / 1e6 + prices["lambda_requests_per_million"] / 1e6
            + gb_s * prices["lambda_gb_second"]
            + writes * 4 * prices["dynamodb_write_request_unit_per_million"] / 1e6
            + reads * prices["dynamodb_read_request_unit_per_million"] / 1e6)


def subscriber_month(results: dict, prices: dict, subscribers: int) -> dict:
    """USD per subscriber-month at `subscribers`, beside Stripe Billing's 0.7%."""
    ingest = next(r for r in results["ingest"]["results"] if r["batch_size"] == max(
        x["batch_size"] for x in results["ingest"]["results"]))
    readings = ingestion_per_million(ingest, prices, batched=True)["total"] * READINGS_PER_SUBSCRIBER_MONTH / 1e6
    invoice = per_invoice(results["billing"]["measured"], prices)["total"]
    api = results["api"]
    usage_route = next(k for k in api["routes"] if k.startswith("POST /usage"))
    reads = [k for k in api["routes"] if not k.startswith("POST")]
    api_cost = (USAGE_API_REQUESTS_PER_SUBSCRIBER_MONTH * per_api_request(api, prices, usage_route)
                + API_READS_PER_SUBSCRIBER_MONTH * sum(per_api_request(api, prices, k) for k in reads) / len(reads))
    # Fixed per run, shared: the scheduler's queries every 15 minutes.
    scheduler = 4 * 24 * 30 * (prices["lambda_requests_per_million"] / 1e6
                               + 0.128 * 0.5 * prices["lambda_gb_second"]) / subscribers
    total = readings + invoice + api_cost + scheduler
    stripe = MONTHLY_INVOICE_EUR * STRIPE_BILLING_FEE
    return {"subscribers": subscribers, "readings": round(readings, 6), "invoice": round(invoice, 6),
            "api": round(api_cost, 6), "scheduler_share": round(scheduler, 6), "total": round(total, 6),
            "stripe_billing_fee": round(stripe, 4), "stripe_over_ours": round(stripe / total) if total else None}


def model(results: dict) -> dict:
    out = {"prices_as_of": PRICES_AS_OF, "prices": PRICES, "sources": SOURCES, "assumptions": {
        "dynamodb_latency_s": DYNAMODB_LATENCY_S, "full_vcpu_mb": FULL_VCPU_MB,
        "memory_mb": {"ingest_usage": INGEST_MEMORY_MB, "billing_worker": BILLING_MEMORY_MB,
                      "api_handler": API_MEMORY_MB},
        "monthly_invoice_eur": MONTHLY_INVOICE_EUR, "readings_per_subscriber_month": READINGS_PER_SUBSCRIBER_MONTH,
        "usage_api_requests_per_subscriber_month": USAGE_API_REQUESTS_PER_SUBSCRIBER_MONTH,
        "api_reads_per_subscriber_month": API_READS_PER_SUBSCRIBER_MONTH}, "regions": {}}
    ingest_results = {r["batch_size"]: r for r in results["ingest"]["results"]}
    for region, prices in PRICES.items():
        per_million = {f"batch_{size}": ingestion_per_million(r, prices, batched=True)
                       for size, r in sorted(ingest_results.items())}
        baseline = ingestion_per_million(ingest_results[min(ingest_results)], prices, batched=False)
        best = per_million[f"batch_{max(ingest_results)}"]
        out["regions"][region] = {
            "readings_per_million": per_million,
            "per_message_lambda_baseline_per_million": baseline,
            "baseline_over_batched": round(baseline["total"] / best["total"], 2),
            "invoice": per_invoice(results["billing"]["measured"], prices),
            "subscriber_month": [subscriber_month(results, prices, n) for n in (1_000, 100_000, 1_000_000)],
        }
    return out
