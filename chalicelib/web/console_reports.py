"""The console's reports: a month's figures per currency, twelve months of
them as charts (one Query of the report aggregates, services/reports.py
`history`), the month's usage per meter, and the accounting export.

The export is the service of `GET /exports/invoices.csv`, one month a
request, gzip-compressed when the browser accepts it (a Lambda answers
6 MB at most). A range of months is fetched month by month by the page's
script, which shows its progress and joins the files; without a script,
each month's link downloads that month.
"""
from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.domain.errors import InvalidRequest
from chalicelib.web.charts import month_charts
from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

CSV = "text/csv"
HISTORY_MONTHS = 12
# A range export fetches one file a month; more than this is several exports.
MAX_EXPORT_MONTHS = 36
CURRENCIES_CHARTED = 4


@page(blueprint, "/console/reports")
def report_page(visit: Visit):
    from chalicelib.clock import clock
    from chalicelib.domain import reports as figures
    from chalicelib.services import merchants, reports

    merchant = merchants.get_merchant(visit.merchant_id)
    this_month = figures.day_of(clock().now(), merchant.get("timezone"))[:7]
    month = visit.query("month") or this_month
    errors = {}
    try:
        months = reports.history(visit.merchant_id, month, HISTORY_MONTHS)
    except InvalidRequest as error:
        errors["month"] = f"{text(visit.lang, 'reports_invalid_month')} ({error.message})"
        month = this_month
        months = reports.history(visit.merchant_id, month, HISTORY_MONTHS)
    seen = {currency for m in months for currency in m["currencies"]}
    currencies = sorted(seen, key=lambda c: (c != merchant["default_currency"], c))[:CURRENCIES_CHARTED]
    charts = {currency: month_charts(visit.lang, currency, months) for currency in currencies}
    return render(
        visit, "reports.html", status=400 if errors else 200, month=month, errors=errors,
        report=months[-1]["currencies"], currencies=currencies, charts=charts,
        export_from=months[0]["month"], export_to=month, max_months=MAX_EXPORT_MONTHS,
    )


@page(blueprint, "/console/exports/invoices.csv", answers="text/csv")
def invoice_export_csv(visit: Visit):
    """The month's invoice lines for accounting, as `GET /exports/invoices.csv` makes them."""
    from chalicelib.services import reports

    month = visit.query("month")
    compress = "gzip" in (visit.request.headers or {}).get("accept-encoding", "")
    body = reports.invoice_export(visit.merchant_id, month, compress=compress)
    headers = {"Content-Type": f"{CSV}; charset=utf-8", "Cache-Control": "no-store",
               "Content-Disposition": f'attachment; filename="invoices-{month}.csv"'}
    if compress:
        headers["Content-Encoding"] = "gzip"
    return Response(body=body, status_code=200, headers=headers)
