"""/reports (monthly summary, usage statistics) and /exports (the accounting CSV)."""
from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import Call, endpoint, require_accept
from chalicelib.services import reports

blueprint = Blueprint(__name__)

CSV = "text/csv"


@endpoint(blueprint, "/reports/summary", response="ReportSummary")
def report_summary(call: Call):
    return reports.summary(call.merchant_id, call.query("month"))


@endpoint(blueprint, "/reports/usage", response="UsageReport")
def usage_report(call: Call):
    return reports.usage_statistics(
        call.merchant_id, call.query("meter"), call.query("from"), call.query("to"), call.query("group_by")
    )


@endpoint(blueprint, "/exports/invoices.csv", response=CSV)
def invoices_csv(call: Call):
    require_accept(call, CSV, "the export")
    headers = call.request.headers or {}
    compress = "gzip" in headers.get("accept-encoding", "")
    month = call.query("month")
    body = reports.invoice_export(call.merchant_id, month, compress=compress)
    answer = {"Content-Type": f"{CSV}; charset=utf-8",
              "Content-Disposition": f'attachment; filename="invoices-{month}.csv"'}
    if compress:
        answer["Content-Encoding"] = "gzip"
    return Response(body=body, status_code=200, headers=answer)
