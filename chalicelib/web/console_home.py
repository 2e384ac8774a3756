"""The console's dashboard: the month's figures and twelve months of
them as charts, from the report aggregates (one Query), and the alerts of
the last days."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.web.charts import month_charts
from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render

blueprint = Blueprint(__name__)


@page(blueprint, "/console")
def dashboard(visit: Visit):
    from chalicelib.clock import clock
    from chalicelib.services import alerts, merchants, reports

    merchant = merchants.get_merchant(visit.merchant_id)
    month = clock().now().strftime("%Y-%m")
    months = reports.history(visit.merchant_id, month, 12)
    currency = _main_currency(months, merchant["default_currency"])
    figures = [m["currencies"].get(currency, {}) for m in months]
    return render(visit, "dashboard.html", merchant=merchant, currency=currency, now=figures[-1],
                  charts=month_charts(visit.lang, currency, months),
                  alerts=alerts.recent_alerts(visit.merchant_id, limit=10))


def _main_currency(months: list[dict], default: str) -> str:
    seen = months[-1]["currencies"] if months else {}
    return default if default in seen or not seen else sorted(seen)[0]
