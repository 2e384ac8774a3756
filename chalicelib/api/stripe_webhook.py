"""`POST /webhooks/stripe`: public, authenticated by Stripe's signature."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.actor import STRIPE
from chalicelib.api.http import Call, endpoint
from chalicelib.services import stripe_webhooks

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/webhooks/stripe", methods=("POST",), auth="public", response="WebhookReceived",
          actor=STRIPE)
def receive(call: Call):
    # The signature covers the exact bytes Stripe sent: never re-encode them.
    request = call.request
    return stripe_webhooks.receive_event(request.raw_body or b"", (request.headers or {}).get("stripe-signature"))
