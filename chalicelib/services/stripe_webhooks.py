"""Stripe's webhook: what Stripe tells us happened to cards and payments.

Every event is verified (signature and timestamp) before it is read, and
handled at most once: the first delivery claims the event id (a conditional
put); a redelivery of a handled event changes nothing. When handling fails
the claim is released and the error answered 500, so Stripe delivers again.
Events we do not act on are acknowledged (200) and otherwise ignored.
"""
from __future__ import annotations

from typing import Callable

from chalicelib import payments
from chalicelib.clock import clock
from chalicelib.observability import logger
from chalicelib.services import billing, cards
from chalicelib.store import stripe_events as store

HANDLERS: dict[str, Callable[[dict], object]] = {
    "setup_intent.succeeded": cards.setup_intent_succeeded,
    # Billing records the outcome on the invoice of the PaymentIntent's
    # metadata, once, whichever of the worker and the webhook comes first.
    "payment_intent.succeeded": billing.reconcile_payment,
    "payment_intent.payment_failed": billing.reconcile_payment,
    "payment_method.updated": cards.payment_method_updated,
    "payment_method.automatically_updated": cards.payment_method_updated,
    "customer.deleted": cards.stripe_customer_deleted,
}


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
    if not store.claim_event(event_id, event_type, clock().now()):
        logger.info("Stripe event already handled", extra={"event_id": event_id, "event_type": event_type})
        return {"received": True, "handled": False, "duplicate": True}
    try:
        handler(event["data"]["object"])
    except Exception:
        store.release_event(event_id)
        raise
    store.finish_event(event_id)
    logger.info("Stripe event handled", extra={"event_id": event_id, "event_type": event_type})
    return {"received": True, "handled": True}
