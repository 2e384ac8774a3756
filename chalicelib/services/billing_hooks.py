"""The two points where card and payment news hand over to billing.

Billing (`chalicelib.services.billing`) owns invoices and their charges; the
payment page and the Stripe webhook only tell it that something happened.
While that module, or one of its functions, does not exist the call is a
no-op (logged). An error raised *inside* billing is never swallowed here.

Both calls may come more than once for the same fact (the page and the
webhook race, Stripe redelivers): billing must make them idempotent, which
it does anyway because an invoice is never charged twice.
"""
from __future__ import annotations

import importlib
import importlib.util

from chalicelib.observability import logger

BILLING_MODULE = "chalicelib.services.billing"


def _billing_function(name: str):
    if importlib.util.find_spec(BILLING_MODULE) is None:
        return None
    return getattr(importlib.import_module(BILLING_MODULE), name, None)


def retry_open_invoices(merchant_id: str, customer_id: str) -> bool:
    """A customer has a new default card: charge again its `incomplete` and
    `past_due` subscriptions' open invoices. False when billing cannot yet."""
    retry = _billing_function("retry_open_invoices")
    if retry is None:
        logger.info("billing has no retry_open_invoices yet", extra={"customer_id": customer_id})
        return False
    retry(merchant_id, customer_id)
    return True


def reconcile_payment(payment_intent: dict) -> bool:
    """Stripe says how a PaymentIntent ended (`payment_intent.succeeded` or
    `payment_intent.payment_failed`): `payment_intent` is Stripe's object as a
    dict, its `metadata` carrying `invoice_id`, `merchant_id` and `attempt`."""
    reconcile = _billing_function("reconcile_payment")
    if reconcile is None:
        logger.info("billing has no reconcile_payment yet", extra={"payment_intent": payment_intent.get("id")})
        return False
    reconcile(payment_intent)
    return True
