"""/reports (monthly summary, usage statistics, revenue) and /exports (the
accounting CSV, the journal, the FEC)."""
from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import Call, endpoint, require_accept
from chalicelib.services import reports

blueprint = Blueprint(__name__)

CSV = "text/csv"
TSV = "text/tab-separated-values"


@endpoint(blueprint, "/reports/summary", response="ReportSummary")
def report_summary(call: Call):
    return reports.summary(call.merchant_id, call.query("month"))


@endpoint(blueprint, "/reports/usage", response="UsageReport")
def usage_report(call: Call):
    return reports.usage_statistics(
        call.merchant_id, call.query("meter"), call.query("from"), call.query("to"), call.query("group_by")
    )


@endpoint(blueprint, "/reports/revenue", response="RevenueReport")
def revenue_report(call: Call):
    """Revenue recognised, invoiced, credited and deferred in a month, per currency."""
    from chalicelib.services import accounting

    return accounting.revenue_report(call.merchant_id, call.query("month"))


def _accepts_gzip(call: Call) -> bool:
    return "gzip" in (call.request.headers or {}).get("accept-encoding", "")


def export_response(body: bytes, media_type: str, filename: str, *, compress: bool) -> Response:
    """An export file as an attachment (gzip-compressed when the client takes it)."""
    answer = {"Content-Type": f"{media_type}; charset=utf-8",
              "Content-Disposition": f'attachment; filename="{filename}"'}
    if compress:
        answer["Content-Encoding"] = "gzip"
    return Response(body=body, status_code=200, headers=answer)


@endpoint(blueprint, "/exports/invoices.csv", response=CSV)
def invoices_csv(call: Call):
    require_accept(call, CSV, "the export")
    compress = _accepts_gzip(call)
    month = call.query("month")
    body = reports.invoice_export(call.merchant_id, month, compress=compress)
    return export_response(body, CSV, f"invoices-{month}.csv", compress=compress)


@endpoint(blueprint, "/exports/journal.csv", response=CSV)
def journal_csv(call: Call):
    """The month's double-entry journal lines, with the merchant's accounts."""
    from chalicelib.services import accounting

    require_accept(call, CSV, "the journal")
    compress = _accepts_gzip(call)
    month = call.query("month")
    body = accounting.journal_export(call.merchant_id, month, compress=compress)
    return export_response(body, CSV, f"journal-{month}.csv", compress=compress)


@endpoint(blueprint, "/exports/fec.txt", response=TSV)
def fec_txt(call: Call):
    """The FEC (fichier des écritures comptables) of a year, or of one of its months."""
    from chalicelib.services import accounting

    require_accept(call, TSV, "the FEC")
    compress = _accepts_gzip(call)
    body, filename = accounting.fec_export(call.merchant_id, call.query("year"), call.query("month"),
                                           compress=compress)
    return export_response(body, TSV, filename, compress=compress)
