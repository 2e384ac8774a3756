"""Scheduled price changes of an offer: a new version with what existing
subscriptions do about it, the customers' notice, and its cancellation.

- `POST /offers/{id}/price-changes` adds the version (offers.add_version,
  the catalog's rules) with `effective_from` = `effective_at`. New
  subscriptions take it from then. `existing`:
  - `migrate`: existing subscriptions move at their first period boundary
    from `effective_at`: the invoice rule takes, for each period, the version
    in force at its start, so the billing run's boundary invoice opens the
    next period on it and the subscription's history records the move
    (`price_migrated`, issuing.py);
  - `grandfather`: a subscription on an older version keeps it
    (`offers.terms_at(..., held=)`): only subscriptions that take the offer
    from then on pay the new prices.
- The customers of a migrating change are e-mailed `notice_days` (default
  30) before `effective_at` (at once when that is already past): its notice
  waits in the `due` index; the billing scheduler's run hands it to
  `send_due_notices`, which records one customer alert per subscription
  (services/alerts.py: put only if absent, so a run repeated or interrupted
  sends each e-mail once) and then takes the notice out of the index.
- A change whose `effective_at` has not come can be canceled
  (`POST /offers/{id}/price-changes/{price_change_id}/cancel`): its version is
  never in force, its notice is not sent.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain import catalog
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.ids import new_id
from chalicelib.observability import logger
from chalicelib.services import offers
from chalicelib.store import offers as store

DEFAULT_NOTICE_DAYS = 30
NOTICE_KIND = "price_change_notice"
# Subscriptions that will be billed again, and so move.
MOVING_STATUSES = ("incomplete", "trialing", "active", "past_due")
_PRICE_CHANGE_ID = re.compile(r"^prc_[0-9a-z]{26}$")


def schedule_price_change(merchant_id: str, offer_id: str, fields: dict) -> dict:
    """`fields`: version (the new terms: components, options,
    currency_options), effective_at, existing, notice_days. The terms'
    errors name the field under `version.` (`version.components[0].amount`)."""
    now = clock().now()
    effective_at = fields["effective_at"]
    notice_days = DEFAULT_NOTICE_DAYS if fields.get("notice_days") is None else fields["notice_days"]
    price_change = {"id": new_id("prc"), "existing": fields["existing"], "notice_days": notice_days,
                    "notice_at": max(effective_at - timedelta(days=notice_days), now)}
    version = catalog.OfferVersion.model_construct(effective_from=effective_at, **fields["version"])
    try:
        offers.add_version(merchant_id, offer_id, version, price_change=price_change)
    except InvalidRequest as error:
        raise _under_version(error) from None
    return get_price_change(merchant_id, offer_id, price_change["id"])


def list_price_changes(merchant_id: str, offer_id: str) -> list[dict]:
    """The offer's price changes, oldest first."""
    record, versions = offers.price_change_versions(merchant_id, offer_id)
    now = clock().now()
    return [_serialize(record, version, store.due_price_notice(merchant_id, version.price_change_id), now)
            for version in versions]


def get_price_change(merchant_id: str, offer_id: str, price_change_id: str) -> dict:
    record, version = _find(merchant_id, offer_id, price_change_id)
    return _serialize(record, version, store.due_price_notice(merchant_id, price_change_id), clock().now())


def cancel_price_change(merchant_id: str, offer_id: str, price_change_id: str) -> dict:
    """Cancel a change still to come (409 `price_change_effective` once it is
    in force; canceling twice answers the canceled change)."""
    record, version = _find(merchant_id, offer_id, price_change_id)
    now = clock().now()
    if not version.canceled_at:
        if parse_instant(version.effective_from) <= now:
            raise Conflict(f"price change {price_change_id} took effect at {version.effective_from}; "
                           "schedule another to change the prices again", code="price_change_effective")
        try:
            store.cancel_version(record, version, isoformat(now))
        except Conflict:
            pass  # canceled meanwhile: the outcome asked for holds
    return get_price_change(merchant_id, offer_id, price_change_id)


# ---------------------------------------------------------------------------
# The customers' notice (the billing scheduler's run)


def send_due_notices(now: datetime) -> dict:
    """Record the notice e-mail of every migrating price change whose notice
    time has come, one per subscription that will move; then the notice
    leaves the due index. Safe to run again: each e-mail is recorded once."""
    from chalicelib.store.due import due_items

    done = []
    for pk, _, _ in due_items(now, (store.PRICE_NOTICE_SK,)):
        merchant_id, price_change_id = pk.split("#", 1)
        try:
            done.append(notify_customers(merchant_id, price_change_id, now))
        except Exception:  # one change's failure: logged, still due, tried again at the next run
            logger.exception("price change notice not sent", extra={"merchant_id": merchant_id,
                                                                    "price_change_id": price_change_id})
    return {"due": len(done), "notices": done}


def notify_customers(merchant_id: str, price_change_id: str, now: datetime) -> dict:
    from chalicelib.services import alerts
    from chalicelib.store import subscriptions as subscription_store

    notice = store.due_price_notice(merchant_id, price_change_id)
    if notice is None or notice.due_at is None:
        return {"price_change_id": price_change_id, "recorded": 0}
    record, version = _find(merchant_id, notice.offer_id, price_change_id)
    recorded = 0
    if not version.canceled_at:
        summary = offers.offer_summary(merchant_id, notice.offer_id)
        for subscription in subscription_store.live_subscriptions_of_offer(merchant_id, notice.offer_id,
                                                                         MOVING_STATUSES):
            if int(subscription.offer_version) >= int(version.version):
                continue  # already on it
            details = {"subscription_id": subscription.subscription_id, "offer_id": notice.offer_id,
                       "offer_name": summary["name"], "price_change_id": price_change_id,
                       "effective_at": version.effective_from, "currency": subscription.currency,
                       "version": int(version.version)}
            alert = alerts.record(merchant_id, f"{NOTICE_KIND}#{price_change_id}#{subscription.subscription_id}",
                                  NOTICE_KIND, customer_id=subscription.customer_id, details=details,
                                  audiences=(alerts.CUSTOMER,))
            recorded += alert is not None
    store.price_notice_sent(notice, isoformat(now))
    return {"price_change_id": price_change_id, "recorded": recorded}


# ---------------------------------------------------------------------------
# Internals


def _find(merchant_id: str, offer_id: str, price_change_id: str):
    if not isinstance(price_change_id, str) or not _PRICE_CHANGE_ID.match(price_change_id):
        raise NotFound(f"no price change {price_change_id}")
    record, versions = offers.price_change_versions(merchant_id, offer_id)
    for version in versions:
        if version.price_change_id == price_change_id:
            return record, version
    raise NotFound(f"no price change {price_change_id}")


def _serialize(record, version, notice, now: datetime) -> dict:
    effective = parse_instant(version.effective_from)
    status = "canceled" if version.canceled_at else ("effective" if effective <= now else "scheduled")
    return {
        "id": version.price_change_id,
        "object": "price_change",
        "offer_id": record.offer_id,
        "version": int(version.version),
        "effective_at": version.effective_from,
        "existing": version.existing,
        "notice_days": int(version.notice_days),
        "status": status,
        "notice_at": None if version.existing != "migrate" or notice is None else (
            notice.due_at if notice.due_at else notice.sent_at),
        "notice_sent_at": None if notice is None else notice.sent_at,
        "canceled_at": version.canceled_at,
        "created_at": version.created_at,
    }


def _under_version(error: InvalidRequest) -> InvalidRequest:
    """The version's errors as the price change's body names them."""
    param = error.param
    if param == "effective_from":
        param, message = "effective_at", error.message.replace("effective_from", "effective_at", 1)
    elif param and param.split("[")[0].split(".")[0] in ("components", "options", "currency_options"):
        param, message = f"version.{param}", f"version.{error.message}"
    else:
        return error
    return InvalidRequest(message, param=param, code=error.code)
