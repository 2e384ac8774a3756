"""The console's dashboard: the month's figures and twelve months of
them as charts, from the report aggregates (one Query), and the alerts of
the last days."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.web.charts import bar_chart
from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render, text

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
    labels = [m["month"][5:] + "/" + m["month"][2:4] for m in months]

    def t(key: str) -> str:
        return text(visit.lang, key)

    def of(name: str) -> list:
        return [f.get(name) for f in figures]

    charts = {
        "mrr": bar_chart(t("mrr"), labels, [(t("mrr"), "#1f5fbf", of("mrr"))], kind="money", currency=currency),
        "invoiced": bar_chart(t("invoiced_and_collected"), labels, [
            (t("invoiced"), "#7a8fb8", of("invoiced")), (t("collected"), "#157f3c", of("collected"))],
            kind="money", currency=currency),
        "active": bar_chart(t("active_subscriptions"), labels,
                            [(t("active_subscriptions"), "#9a6700", of("active_subscriptions"))]),
    }
    return render(visit, "dashboard.html", merchant=merchant, currency=currency, now=figures[-1], charts=charts,
                  alerts=alerts.recent_alerts(visit.merchant_id, limit=10))


def _main_currency(months: list[dict], default: str) -> str:
    seen = months[-1]["currencies"] if months else {}
    return default if default in seen or not seen else sorted(seen)[0]
