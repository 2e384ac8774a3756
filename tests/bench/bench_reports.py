"""What a report costs, and what feeding it costs.

On moto in-process, a merchant with `--months` months of history:
`--invoices` invoices a month (each finalized open, then paid: two stream
records) and `--usage` usage events a month, fed to the report feed by its
own code path (`services.reports.feed_reports`, as the stream's Lambda calls
it) in batches of 100. Measured:

- the summary (`GET /reports/summary`'s service): DynamoDB requests and
  items read, against the items a scan of the month's invoices would read;
- the feed: DynamoDB requests per stream record counted, records per second
  of CPU (ours, moto's own work excluded);
- the export (`GET /exports/invoices.csv`'s service): one month read from
  moto (lines, bytes, time); and 100,000 lines built from a generator of
  invoices: the peak of Python memory while building the file (tracemalloc),
  against the file's size, plain and gzipped.

Run: `python -m tests.bench.bench_reports [--months N --invoices N --usage N]`.
Prints one JSON line. Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench.harness import AwsMeter, dynamodb_requests, lighten_moto, use_bench_environment

use_bench_environment()

UTC = timezone.utc
LAST_MONTH = "2026-10"
# A summary must stay a handful of reads whatever the history.
TARGET_SUMMARY_REQUESTS = 2
LINES_PER_INVOICE = 4
EXPORT_LINES = 100_000


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--invoices", type=int, default=int(os.environ.get("BENCH_REPORT_INVOICES", "60")))
    parser.add_argument("--usage", type=int, default=100)
    args = parser.parse_args(argv if argv is not None else [])
    from moto import mock_aws

    lighten_moto()
    with mock_aws():
        from infra.local.provision import provision

        os.environ.update(provision())
        from chalicelib import config

        config.settings.cache_clear()
        result = _measure(args.months, args.invoices, args.usage)
    print(json.dumps(result), flush=True)
    return result


def _measure(months: int, invoices_per_month: int, usage_per_month: int) -> dict:
    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.domain import reports as domain
    from chalicelib.services import merchants, reports

    clock = FixedClock(datetime(2026, 11, 15, tzinfo=UTC))
    use_clock(clock)
    merchant_id = merchants.create_merchant({
        "name": "Optique Durand", "default_currency": "EUR", "invoice_prefix": "OD",
        "tax_rates": {"FR": "20.0"}, "timezone": "Europe/Paris", "locale": "fr"})["id"]
    month_list = [domain.add_months(LAST_MONTH, -k) for k in reversed(range(months))]

    # The facts, as the stream shows them, and the invoices themselves (the export reads them).
    records = []
    for month in month_list:
        for n in range(invoices_per_month):
            old, new = _invoice_images(merchant_id, month, n)
            _put(new)
            records.append(_record(f"{month}-inv-{n}-final", old=None, new=old))
            records.append(_record(f"{month}-inv-{n}-paid", old=old, new=new))
        for n in range(usage_per_month):
            records.append(_record(f"{month}-use-{n}", old=None, new=_usage_event(merchant_id, month, n)))

    meter = AwsMeter().install()
    try:
        started = time.thread_time()
        for start in range(0, len(records), 100):
            assert reports.feed_reports(records[start:start + 100]) == []
        feed_cpu = time.thread_time() - started
        counts, sdk_cpu, moto_cpu = meter.take()
        feed_requests = sum(dynamodb_requests(counts).values())

        started = time.perf_counter()
        summary = reports.summary(merchant_id, LAST_MONTH)
        summary_seconds = time.perf_counter() - started
        counts, _, _ = meter.take()
        summary_requests = dynamodb_requests(counts)
        summary_items = _items_of_last_query
    finally:
        meter.uninstall()
    figures = summary["currencies"]["EUR"]
    expected_invoiced = f"{invoices_per_month * 120:.2f}"
    assert figures["invoiced"] == figures["collected"] == expected_invoiced, figures

    started = time.perf_counter()
    body = reports.invoice_export(merchant_id, LAST_MONTH, compress=False)
    export_seconds = time.perf_counter() - started
    lines = body.count(b"\n") - 1
    assert lines == invoices_per_month * LINES_PER_INVOICE, lines
    large = _export_memory(EXPORT_LINES)

    result = {
        "benchmark": "reports",
        "history": {"months": months, "invoices": months * invoices_per_month,
                    "usage_events": months * usage_per_month, "stream_records": len(records)},
        "summary": {
            "dynamodb_requests": summary_requests,
            "dynamodb_items_read": summary_items,
            "items_a_scan_of_the_month_would_read": invoices_per_month,
            "seconds_on_moto": round(summary_seconds, 4),
        },
        "feed": {
            "dynamodb_requests_per_record": round(feed_requests / len(records), 3),
            "our_cpu_ms_per_record": round((feed_cpu - moto_cpu) / len(records) * 1000, 3),
            "sdk_cpu_ms_per_record": round((sdk_cpu - moto_cpu) / len(records) * 1000, 3),
        },
        "export_on_moto": {"lines": lines, "bytes": len(body), "seconds": round(export_seconds, 3)},
        "export_memory": large,
    }
    result["targets_met"] = (sum(summary_requests.values()) <= TARGET_SUMMARY_REQUESTS
                             and large["peak_over_file"] < 1.5)
    return result


def _export_memory(line_count: int) -> dict:
    """The export's own memory for `line_count` lines: the invoices come from
    a generator (as from the paginated queries, without moto's memory in the
    measure); tracemalloc's peak while the file is built, against its size."""
    from chalicelib.services import exports, reports

    def invoices(merchant_id: str, month: str):
        for n in range(line_count // LINES_PER_INVOICE):
            yield _invoice_object(n)

    original, limit = reports._invoices_of_month, exports.MAX_PLAIN_EXPORT_BYTES
    accounts = reports._line_accounts
    reports._invoices_of_month = invoices
    reports._line_accounts = lambda merchant_id: lambda kind: "706000"
    # The API refuses a plain file this large (Lambda's 6 MB answer): built
    # here anyway, to measure that it sits in memory once.
    exports.MAX_PLAIN_EXPORT_BYTES = 10**12
    try:
        figures = {}
        for compress in (False, True):
            tracemalloc.start()
            started = time.perf_counter()
            body = reports.invoice_export("mer_bench", "2026-10", compress=compress)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures["gzip" if compress else "plain"] = {"bytes": len(body), "peak_python_bytes": peak,
                                                       "seconds": round(seconds, 2)}
    finally:
        reports._invoices_of_month, exports.MAX_PLAIN_EXPORT_BYTES = original, limit
        reports._line_accounts = accounts
    plain = figures["plain"]
    return {"lines": line_count, **figures,
            "peak_over_file": round(plain["peak_python_bytes"] / plain["bytes"], 2)}


def _invoice_object(n: int) -> dict:
    lines = [{"kind": kind, "component": component, "description": f"{component} of October",
              "quantity": "1", "unit_amount": amount, "amount": amount,
              "period_start": "2026-09-30T22:00:00Z", "period_end": "2026-10-31T23:00:00Z"}
             for kind, component, amount in (("usage", "montage", "30.00"), ("usage", "calls", "11.00"),
                                             ("fee", "base", "49.00"), ("option", "express", "10.00"))]
    return {"id": f"inv_bench{n:08d}", "number": f"OD2026-{n + 1:06d}", "status": "paid", "currency": "EUR",
            "customer_id": f"cus_bench{n:06d}", "customer_name": f"Labo {n}", "invoice_date": "2026-10-03T09:00:00Z",
            "finalized_at": "2026-10-03T09:00:00Z", "lines": lines, "tax": [{"rate": "20.0", "amount": "20.00"}]}


# ---------------------------------------------------------------------------
# Synthetic facts


_items_of_last_query = 0


def _count_items() -> None:
    """Count what the summary's Query returns (DynamoDB bills reads by what it returns)."""
    from chalicelib.store import dynamo

    original = dynamo.query_all

    def counted(**request):
        global _items_of_last_query
        items = original(**request)
        _items_of_last_query = len(items)
        return items

    dynamo.query_all = counted


_count_items()


def _invoice_images(merchant_id: str, month: str, n: int) -> tuple[dict, dict]:
    """An invoice of 100.00 net + 20.00 VAT in four lines, finalized open on
    the 3rd of `month` (Paris), then paid the 5th."""
    from chalicelib.store.invoices import InvoiceRecord, invoice_id_for

    year, number = int(month[:4]), int(month[5:7])
    finalized = datetime(year, number, 3, 9, tzinfo=UTC)
    invoice_id = invoice_id_for(merchant_id, f"sub_bench{n:06d}", finalized)
    lines = [
        {"kind": kind, "component": component, "description": component, "quantity": "1", "unit_amount": amount,
         "amount": amount, "period_start": finalized.isoformat(), "period_end": finalized.isoformat()}
        for kind, component, amount in (("usage", "montage", "30.00"), ("usage", "calls", "11.00"),
                                        ("fee", "base", "49.00"), ("option", "express", "10.00"))
    ]

    def image(**changes) -> dict:
        fields = dict(
            merchant_id=merchant_id, invoice_id=invoice_id, number=f"OD{year}-{n + 1:06d}", status="open",
            billing_reason="subscription_cycle", customer_id=f"cus_bench{n:06d}", subscription_id=f"sub_bench{n:06d}",
            currency="EUR", invoice_date=finalized.isoformat().replace("+00:00", "Z"),
            period_start=None, period_end=None, lines=json.dumps(lines), tax=json.dumps([{"rate": "20.0", "amount": "20.00"}]),
            subtotal="100.00", tax_amount="20.00", total="120.00", credit_applied="0.00", amount_due="120.00",
            amount_paid="0.00", starting_balance="0.00", ending_balance="0.00",
            seller=json.dumps({"name": "Optique Durand", "timezone": "Europe/Paris"}),
            buyer=json.dumps({"name": f"Labo {n}", "country": "FR"}), created_at=finalized.isoformat(),
            finalized_at=finalized.isoformat().replace("+00:00", "Z"), version=1,
        )
        fields.update(changes)
        record = InvoiceRecord(*InvoiceRecord.key(merchant_id, invoice_id), **fields)
        record.sync_keys()
        return record.serialize()

    paid_at = (finalized + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    return image(), image(status="paid", amount_due="0.00", amount_paid="120.00", paid_at=paid_at, version=2)


def _usage_event(merchant_id: str, month: str, n: int) -> dict:
    at = f"{month}-{1 + n % 28:02d}T10:00:00Z"
    return {"pk": {"S": f"{merchant_id}#usage_event#bench-{month}-{n}"}, "sk": {"S": "usage_event"},
            "merchant_id": {"S": merchant_id}, "event_id": {"S": f"bench-{month}-{n}"},
            "subscription_id": {"S": f"sub_bench{n % 50:06d}"}, "meter": {"S": "calls"}, "quantity": {"S": "1"},
            "timestamp": {"S": at}, "period_start": {"S": at}, "net_quantity": {"S": "1"},
            "received_at": {"S": at}, "version": {"N": "1"}}


def _put(image: dict) -> None:
    from chalicelib.store import dynamo

    dynamo.client().put_item(TableName=dynamo.table_name(), Item=image)


def _record(event_id: str, *, old: dict | None, new: dict | None) -> dict:
    change = {"Keys": {"pk": (new or old)["pk"], "sk": (new or old)["sk"]}, "SequenceNumber": event_id,
              "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if old:
        change["OldImage"] = old
    if new:
        change["NewImage"] = new
    return {"eventID": event_id, "eventName": "MODIFY" if old and new else "INSERT", "eventSource": "aws:dynamodb",
            "dynamodb": change}


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:])["targets_met"] else 1)
