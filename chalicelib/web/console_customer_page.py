"""One customer on one page: details, default card, subscriptions,
invoices (with their PDF), payments of every method, credit notes, devices
with a usage chart per meter and day, open alerts, the e-mails sent, and
the timeline of every change with who made it. And the PDFs of invoices
and credit notes, streamed to the signed-in member.

The DynamoDB requests of the page are bounded whatever the customer's
history: the API's one-page relationship (services/customers.get_customer:
one read or Query per section), a page of invoices, a page of the
timeline, the alerts' e-mails, the offers of its subscriptions (one Query
each, at most MAX_OFFERS) and the daily usage read by key (BatchGetItem).
"""
from __future__ import annotations

from urllib.parse import urlencode

from chalice import Blueprint, Response

from chalicelib.web.charts import Chart, bar_chart
from chalicelib.web.pages import Visit, page
from chalicelib.web.texts import TEXTS
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

INVOICES_SHOWN = 10
TIMELINE_SHOWN = 20
CHART_DAYS = 30
MAX_METERS = 6
# Offers named on the page (one Query each); others show their id.
MAX_OFFERS = 5
CHART_COLOURS = ("#1f5fbf", "#157f3c", "#9a6700", "#7a8fb8", "#b42318", "#5b6577")
# Confirmations after an action (`?done=`), and whether each is good news.
NOTICES = {
    "customers_created": "ok",
    "customers_created_subscribed": "ok",
    "customers_subscription_failed": "error",
    "customers_saved": "ok",
    "customers_subscribed": "ok",
}
# Audited fields shown in a timeline entry, at most.
CHANGES_SHOWN = 6


@page(blueprint, "/console/customers/{customer_id}")
def customer_page(visit: Visit, customer_id: str):
    from chalicelib.services import alerts, audit, customers, invoices, merchants, reports

    merchant_id = visit.merchant_id
    customer = customers.get_customer(merchant_id, customer_id)
    merchant = merchants.get_merchant(merchant_id)
    timezone_name = merchant.get("timezone") or "UTC"
    invoice_cursor = visit.query("invoices_cursor") or None
    timeline_cursor = visit.query("timeline_cursor") or None
    listed, invoices_next = invoices.list_invoices(merchant_id, customer_id=customer_id, subscription_id=None,
                                                   status=None, limit=INVOICES_SHOWN, cursor=invoice_cursor)
    entries, timeline_next = audit.customer_timeline(merchant_id, customer_id, TIMELINE_SHOWN, timeline_cursor)
    offers_by_id = _offers(merchant_id, customer["subscriptions"])
    devices = customer["devices"]
    meters = sorted({meter for device in devices for meter in device["counters"]})[:MAX_METERS]
    usage = reports.recent_daily_usage(merchant_id, [d["subscription_id"] for d in devices], meters,
                                       days=CHART_DAYS, timezone_name=timezone_name) if meters else None
    done = visit.query("done")
    here = f"/console/customers/{customer_id}"
    rows = [_subscription_row(s, offers_by_id) for s in customer["subscriptions"]]
    return render(
        visit, "customer.html", customer=customer, merchant=merchant, tz=timezone_name,
        notice=(done, NOTICES[done]) if done in NOTICES else None,
        subscriptions=rows, offer_of={row["id"]: row["offer_name"] for row in rows},
        invoices=listed, invoices_next=_more(here, "invoices_cursor", invoices_next),
        timeline=[_entry(visit.lang, e) for e in entries], timeline_next=_more(here, "timeline_cursor", timeline_next),
        emails=alerts.customer_emails(merchant_id, customer_id),
        charts=_charts(visit.lang, usage),
        may_serve=visit.session.may("serve"),
    )


@page(blueprint, "/console/invoices/{invoice_id}/pdf", answers="application/pdf")
def invoice_pdf(visit: Visit, invoice_id: str):
    from chalicelib.services import invoices

    return _pdf(*invoices.invoice_pdf(visit.merchant_id, invoice_id))


@page(blueprint, "/console/credit-notes/{credit_note_id}/pdf", answers="application/pdf")
def credit_note_pdf(visit: Visit, credit_note_id: str):
    from chalicelib.services import credit_notes

    return _pdf(*credit_notes.credit_note_pdf(visit.merchant_id, credit_note_id))


def _pdf(document: bytes, filename: str) -> Response:
    return Response(body=document, status_code=200, headers={
        "Content-Type": "application/pdf", "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _offers(merchant_id: str, subscriptions: list[dict]) -> dict[str, dict]:
    """The offers of the customer's subscriptions (name, options' names)."""
    from chalicelib.domain.errors import NotFound
    from chalicelib.services import offers

    found = {}
    for offer_id in list(dict.fromkeys(s["offer_id"] for s in subscriptions))[:MAX_OFFERS]:
        try:
            found[offer_id] = offers.get_offer(merchant_id, offer_id)
        except NotFound:
            continue
    return found


def _subscription_row(subscription: dict, offers_by_id: dict[str, dict]) -> dict:
    offer = offers_by_id.get(subscription["offer_id"])
    names = {o["code"]: o.get("name") or o["code"] for o in (offer or {}).get("options", [])}
    return {**subscription, "offer_name": offer["name"] if offer else subscription["offer_id"],
            "option_names": [names.get(code, code) for code in subscription["options"]]}


def _more(here: str, name: str, cursor: str | None) -> str | None:
    return f"{here}?{urlencode({name: cursor})}" if cursor else None


ENTITY_PAGES = {"subscription": "/console/subscriptions/{}", "invoice": "/console/invoices/{}"}


def _entry(lang: str, entry: dict) -> dict:
    """A timeline entry as a person reads it: who, what, which fields from what to what."""
    before, after = entry.get("before") or {}, entry.get("after") or {}
    # What a creation or a deletion holds is the object itself (its page has it): only edits list fields.
    # Fields a person knows by name; the others (what the billing keeps for
    # itself: pending items, payment links, retry times) are only counted.
    changed = sorted(set(before) | set(after)) if entry["action"] == "updated" else []
    names = [name for name in changed if f"customers_field_{name}" in TEXTS[lang]]
    changes = [(text(lang, f"customers_field_{name}"), _shown(before.get(name)), _shown(after.get(name)))
               for name in names[:CHANGES_SHOWN]]
    link = ENTITY_PAGES.get(entry["entity_type"])
    return {
        **entry,
        "who": actor_label(lang, entry["actor"]),
        "what": text(lang, f"customers_entity_{entry['entity_type']}") if entry["entity_type"] else "",
        "did": text(lang, f"customers_action_{entry['action']}"),
        "changes": changes,
        "more_changes": max(0, len(names) - CHANGES_SHOWN),
        "technical_changes": len(changed) - len(names),
        "link": link.format(entry["entity_id"]) if link else None,
    }


def actor_label(lang: str, actor: str | None) -> str:
    """`user:<email>` is the member; the others in plain words."""
    actor = actor or "system"
    kind, _, rest = actor.partition(":")
    if kind == "user":
        return rest
    if kind == "key":
        return text(lang, "customers_actor_key", prefix=rest)
    if kind in ("operator", "customer", "stripe"):
        return text(lang, f"customers_actor_{kind}")
    return text(lang, "customers_actor_system")


def _shown(value) -> str:
    if value is None:
        return "–"
    shown = value if isinstance(value, str) else _compact(value)
    return shown if len(shown) <= 80 else shown[:77] + "…"


def _compact(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _charts(lang: str, usage: dict | None) -> list[tuple[str, Chart]]:
    """One chart per meter, a bar per day: (meter, its chart)."""
    if not usage:
        return []
    labels = [day[8:10] + "/" + day[5:7] for day in usage["days"]]
    return [(meter, bar_chart(text(lang, "customers_usage_of", meter=meter), labels,
                              [(meter, CHART_COLOURS[i % len(CHART_COLOURS)], values)],
                              first_column="customers_day", label_every=5))
            for i, (meter, values) in enumerate(sorted(usage["meters"].items()))]
