"""The customer portal: one customer of one merchant helps themselves.

A portal link (`POST /customers/{id}/portal-session`, or e-mailed from the
`/portal` form) opens the customer's pages for an hour: subscriptions,
invoices with their PDF, the card (replaced on the payment page's form),
usage per device and meter by day, a change of offer among those the
merchant allows (`offer.portal_upgrades`), cancellation at the period end
where no commitment forbids it. Every action is the API's own service,
acting as `customer`; whatever the link names that is not its customer's is
a 404, as another merchant's object is for an API key.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone

from chalicelib import config
from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain import self_service
from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.ids import new_id
from chalicelib.observability import logger
from chalicelib.store import self_service as store

LINK_LIFETIME = timedelta(hours=1)
ACTOR = "customer"
# One e-mailed link per customer in such a window, however often the form is
# sent for that address (nobody fills a stranger's mailbox from our form).
MAIL_WINDOW_SECONDS = 600
# Customers of one e-mail address that the form sends a link to, at most.
MAX_CUSTOMERS_PER_EMAIL = 5
INVOICES_SHOWN = 12
CHART_DAYS = 30
MAX_DEVICES = 5
MAX_METERS = 4


def create_portal_session(merchant_id: str, customer_id: str, return_url: str | None = None) -> dict:
    """`{"url", "expires_at"}` for one of the merchant's customers (404 otherwise)."""
    from chalicelib.store import customers as customer_store

    customer_store.get_customer(merchant_id, customer_id)
    now = clock().now().replace(microsecond=0)
    expires_at = now + LINK_LIFETIME
    secret = secrets.token_urlsafe(32)
    session_id = new_id("bps")
    store.create_portal_session(store.PortalSessionRecord(
        *store.PortalSessionRecord.key(merchant_id, session_id), merchant_id=merchant_id,
        portal_session_id=session_id, secret_digest=self_service.secret_digest(secret), customer_id=customer_id,
        return_url=return_url, created_at=isoformat(now), expires_at=int(expires_at.timestamp()),
    ))
    token = self_service.link_token(merchant_id, session_id, secret)
    return {"id": session_id, "object": "portal_session", "customer_id": customer_id,
            "url": f"{config.settings().public_base_url}/portal/{token}", "return_url": return_url,
            "expires_at": isoformat(expires_at)}


def link_for_mail(merchant_id: str, customer_id: str) -> dict:
    """The fresh link an e-mailed portal notice carries (services/alerts.py)."""
    return create_portal_session(merchant_id, customer_id)


def merchant_of_link(token: str) -> str | None:
    """The merchant a link names, genuine or not (the refusal page offers its e-mail form)."""
    try:
        return self_service.parse_link(token, "bps_").merchant_id
    except NotFound:
        return None


def open_portal(token: str) -> store.PortalSessionRecord:
    """The session a link opens: 404 for one that is not a link of ours (or
    whose secret is wrong), 410 once past its hour."""
    link = self_service.parse_link(token, "bps_")
    try:
        record = store.get_portal_session(link.merchant_id, link.object_id)
    except NotFound:
        raise self_service.LinkNotFound("this link leads nowhere; ask for a new one") from None
    self_service.check_secret(link, record.secret_digest)
    self_service.check_not_expired(datetime.fromtimestamp(int(record.expires_at), timezone.utc), clock().now())
    return record


def csrf_token(session: store.PortalSessionRecord) -> str:
    """The token every form of the session's pages carries: bound to the
    session, derived with the platform's signing key (nothing more to store)."""
    key = config.secret("token_signing_key").encode()
    message = f"portal-csrf/v1\n{session.merchant_id}\n{session.portal_session_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def check_csrf(session: store.PortalSessionRecord, sent: str) -> None:
    if not sent or not hmac.compare_digest(sent, csrf_token(session)):
        raise InvalidRequest("this form has expired; open the page again", param="csrf_token")


def send_link_by_email(merchant_id: str, email: str) -> None:
    """The `/portal` form: each of the merchant's customers with this e-mail
    gets a portal link by e-mail (through the alerts' customer notices). The
    caller answers the same whatever happened, so the form tells nobody
    whether an address is a customer's."""
    from chalicelib.services import alerts
    from chalicelib.store import customers as customer_store
    from chalicelib.store import merchants as merchant_store

    try:
        merchant_store.get_merchant(merchant_id)
    except NotFound:
        return
    records, _ = customer_store.customers_by_email(merchant_id, email, MAX_CUSTOMERS_PER_EMAIL, None)
    window = int(clock().now().timestamp()) // MAIL_WINDOW_SECONDS
    for customer in records:
        digest = hashlib.sha256(f"{merchant_id}|{customer.customer_id}|{window}".encode()).hexdigest()[:32]
        alert = alerts.record(merchant_id, f"portal_link#{customer.customer_id}#{digest}", "portal_link",
                              customer_id=customer.customer_id,
                              details={"customer_name": customer.name, "customer_email": customer.email},
                              audiences=(alerts.CUSTOMER,), queue=False)
        if alert is None:
            continue
        try:
            alerts.deliver(alerts.alert_message(alert))
        except alerts.AlertNotDelivered:
            alerts.enqueue([alerts.alert_message(alert)])
    logger.info("portal link asked for", extra={"merchant_id": merchant_id, "customers": len(records)})


# ---------------------------------------------------------------------------
# What the pages show


def overview(session: store.PortalSessionRecord) -> dict:
    """The customer's page: who, its card, subscriptions with what each
    allows, the latest invoices and the usage of its devices."""
    from chalicelib.services import customers, invoices, merchants

    merchant_id, customer_id = session.merchant_id, session.customer_id
    customer = customers.get_customer(merchant_id, customer_id)
    merchant = merchants.get_merchant(merchant_id)
    listed, _ = invoices.list_invoices(merchant_id, customer_id=customer_id, subscription_id=None, status=None,
                                       limit=INVOICES_SHOWN, cursor=None)
    return {
        "customer": customer,
        "merchant": merchant,
        "subscriptions": [_subscription_view(merchant_id, s) for s in customer["subscriptions"]],
        "invoices": [i for i in listed if i["status"] not in ("draft", "void")],
        "usage": device_usage(merchant_id, customer["devices"], merchant.get("timezone") or "UTC"),
        "return_url": session.return_url,
        "expires_at": datetime.fromtimestamp(int(session.expires_at), timezone.utc),
    }


def _subscription_view(merchant_id: str, subscription: dict) -> dict:
    offer = _offer_or_none(merchant_id, subscription["offer_id"])
    live = subscription["status"] in ("trialing", "active", "past_due", "incomplete")
    blocked = self_service.cancel_blocked_until(_instant(subscription.get("commitment_ends_at")),
                                                _instant(subscription["current_period_end"]), subscription["status"])
    targets = []
    if live and offer is not None and not subscription.get("cancel_at_period_end"):
        allowed = list(offer.get("portal_upgrades") or [])
        candidates = {offer_id: _offer_or_none(merchant_id, offer_id) for offer_id in dict.fromkeys(allowed)}
        usable = {offer_id for offer_id, target in candidates.items() if target is not None
                  and target["status"] == "active" and _same_billing(target, offer)}
        targets = [candidates[offer_id] for offer_id in
                   self_service.portal_upgrade_targets(allowed, usable, subscription["offer_id"])]
    return {
        **subscription,
        "offer_name": offer["name"] if offer else subscription["offer_id"],
        "offer": offer,
        "live": live,
        "may_cancel": live and not subscription.get("cancel_at_period_end") and blocked is None,
        "committed_until": isoformat(blocked) if blocked else None,
        "may_reactivate": live and bool(subscription.get("cancel_at_period_end")),
        "upgrades": targets,
    }


def _same_billing(target: dict, offer: dict) -> bool:
    """A change keeps the currency and the billing interval (the API's rule)."""
    return all(target[name] == offer[name] for name in ("currency", "billing_interval", "interval_count"))


def device_usage(merchant_id: str, devices: list[dict], timezone_name: str) -> list[dict]:
    """Per device and meter, the last CHART_DAYS days of usage: `{"device_id",
    "meter", "days", "values"}`. A device's usage is its subscription's for
    that meter (what billing counts); at most MAX_DEVICES devices and
    MAX_METERS meters each, read by key."""
    from chalicelib.services import reports

    shown = []
    for device in devices[:MAX_DEVICES]:
        meters = sorted(device.get("counters") or {})[:MAX_METERS]
        if not meters or not device.get("subscription_id"):
            continue
        usage = reports.recent_daily_usage(merchant_id, [device["subscription_id"]], meters, days=CHART_DAYS,
                                           timezone_name=timezone_name)
        for meter in meters:
            shown.append({"device_id": device["device_id"], "meter": meter, "days": usage["days"],
                          "values": usage["meters"][meter]})
    return shown


# ---------------------------------------------------------------------------
# What the customer does


def cancel_at_period_end(session: store.PortalSessionRecord, subscription_id: str) -> dict:
    """Refused as the API refuses it (409 `commitment_active` before the commitment's end)."""
    from chalicelib.services import subscriptions

    _own_subscription(session, subscription_id)
    return subscriptions.cancel_subscription(session.merchant_id, subscription_id, at_period_end=True,
                                             reason="customer portal", actor=ACTOR)


def keep_subscription(session: store.PortalSessionRecord, subscription_id: str) -> dict:
    from chalicelib.services import subscriptions

    _own_subscription(session, subscription_id)
    return subscriptions.reactivate_subscription(session.merchant_id, subscription_id, ACTOR)


def change_offer(session: store.PortalSessionRecord, subscription_id: str, offer_id: str) -> dict:
    """To one of the offers the current one allows (`portal_upgrades`), now:
    the rest of the period at the new price, the old fees' unused part credited."""
    from chalicelib.services import subscriptions

    subscription = _own_subscription(session, subscription_id)
    allowed = {t["id"] for t in _subscription_view(session.merchant_id, subscription)["upgrades"]}
    if offer_id not in allowed:
        raise InvalidRequest("offer_id: not an offer this subscription may change to here", param="offer_id")
    return subscriptions.change_subscription(session.merchant_id, subscription_id,
                                             {"offer_id": offer_id, "effective": "immediately"}, ACTOR)


def invoice_pdf(session: store.PortalSessionRecord, invoice_id: str) -> tuple[bytes, str]:
    from chalicelib.services import invoices

    invoice = invoices.get_invoice(session.merchant_id, invoice_id)
    if invoice["customer_id"] != session.customer_id or invoice["status"] in ("draft", "void"):
        raise NotFound(f"no invoice {invoice_id}")
    return invoices.invoice_pdf(session.merchant_id, invoice_id)


def card_page(session: store.PortalSessionRecord):
    """The payment page's form, for this customer, until the link's end."""
    from chalicelib.services import payment_page

    expires_at = datetime.fromtimestamp(int(session.expires_at), timezone.utc)
    return payment_page.page_for(session.merchant_id, session.customer_id, expires_at)


def card_saved(session: store.PortalSessionRecord, setup_intent_id: str) -> dict:
    from chalicelib.services import payment_page

    return payment_page.complete_for(session.merchant_id, session.customer_id, setup_intent_id)


def _own_subscription(session: store.PortalSessionRecord, subscription_id: str) -> dict:
    from chalicelib.services import subscriptions

    subscription = subscriptions.get_subscription(session.merchant_id, subscription_id)
    if subscription["customer_id"] != session.customer_id:
        raise NotFound(f"no subscription {subscription_id}")
    return subscription


def _offer_or_none(merchant_id: str, offer_id: str) -> dict | None:
    from chalicelib.services import offers

    try:
        return offers.offer_summary(merchant_id, offer_id)
    except NotFound:
        return None


def _instant(text: str | None) -> datetime | None:
    return parse_instant(text) if text else None
