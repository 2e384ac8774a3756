"""Stripe's webhook: what Stripe tells us happened to cards and payments.

Every event is verified (signature and timestamp) before it is read, and
handled at most once: the first delivery claims the event id (a conditional
put); a redelivery of a handled event changes nothing. When handling fails
the claim is released and the error answered 500, so Stripe delivers again.
Events we do not act on are acknowledged (200) and otherwise ignored. A
signed event without a field its handler reads is answered 400 naming it
(`data.object.<field>`), before anything is claimed or written.
"""
from __future__ import annotations

from typing import Callable

from chalicelib import payments
from chalicelib.clock import clock
from chalicelib.domain.errors import InvalidRequest
from chalicelib.observability import logger
from chalicelib.services import cards, collecting
from chalicelib.store import stripe_events as store

HANDLERS: dict[str, Callable[[dict], object]] = {
    "setup_intent.succeeded": cards.setup_intent_succeeded,
    # Billing records the outcome on the invoice of the PaymentIntent's
    # metadata, once, whichever of the worker and the webhook comes first.
    "payment_intent.succeeded": collecting.reconcile_payment,
    "payment_intent.payment_failed": collecting.reconcile_payment,
    "payment_method.updated": cards.payment_method_updated,
    "payment_method.automatically_updated": cards.payment_method_updated,
    "customer.deleted": cards.stripe_customer_deleted,
}


# What each handler reads of the event's object, as dotted paths (a
# PaymentMethod's card only when it is a card: others are ignored).
_PAYMENT_INTENT = ("id", "status", "amount", "currency")
_CARD = ("id", "card.last4", "card.exp_month", "card.exp_year")
REQUIRED: dict[str, tuple[str, ...]] = {
    "setup_intent.succeeded": ("id", "status"),
    "payment_intent.succeeded": _PAYMENT_INTENT,
    "payment_intent.payment_failed": _PAYMENT_INTENT,
    "payment_method.updated": _CARD,
    "payment_method.automatically_updated": _CARD,
    "customer.deleted": ("id",),
}


def missing_field(event_type: str, obj) -> str | None:
    """The first field the event type's handler needs that `obj` lacks."""
    if not isinstance(obj, dict):
        return ""
    for path in REQUIRED[event_type]:
        if path.startswith("card.") and obj.get("type") != "card":
            continue
        value = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or value == "":
            return path
    return None


def receive_event(payload: bytes, signature: str | None) -> dict:
    """Verify and handle one delivery; raises `WebhookSignatureInvalid` (400)
    for anything Stripe did not sign within the tolerance."""
    try:
        event = payments.verify_webhook(payload, signature)
    except payments.WebhookSignatureInvalid as error:
        # Never the payload: it is not ours to log until it is verified.
        logger.warning("Stripe webhook refused", extra={"reason": error.message, "bytes": len(payload)})
        raise
    event_id, event_type = event["id"], event["type"]
    handler = HANDLERS.get(event_type)
    if handler is None:
        return {"received": True, "handled": False}
    obj = (event.get("data") or {}).get("object")
    missing = missing_field(event_type, obj)
    if missing is not None:
        param = "data.object" + (f".{missing}" if missing else "")
        logger.error("Stripe event without a field we read", extra={"event_id": event_id, "event_type": event_type,
                                                                    "param": param})
        raise InvalidRequest(f"{param} is required in a {event_type} event", param=param)
    if not store.claim_event(event_id, event_type, clock().now()):
        logger.info("Stripe event already handled", extra={"event_id": event_id, "event_type": event_type})
        return {"received": True, "handled": False, "duplicate": True}
    try:
        handler(obj)
    except Exception:
        store.release_event(event_id)
        raise
    store.finish_event(event_id)
    logger.info("Stripe event handled", extra={"event_id": event_id, "event_type": event_type})
    return {"received": True, "handled": True}
