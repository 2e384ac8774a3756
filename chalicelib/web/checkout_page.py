"""The hosted checkout page (services/checkout.py).

- `GET /checkout/{token}`: the offer, its price and tax, the card form
- `POST /checkout/{token}/intent`: a fresh SetupIntent after a refused card
- `POST /checkout/{token}/complete` `{"setup_intent"?, "payment_intent"?}`:
  the page's script says Stripe confirmed the card (or the first charge's
  3-D Secure); the answer says what comes next

Public: the link's token is the page's credential. The posts are JSON from
the page's own script (a cross-site form cannot send them).
"""
from __future__ import annotations

from typing import Annotated

from chalice import Blueprint
from pydantic import BaseModel, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint
from chalicelib.domain.errors import BillingError
from chalicelib.web import self_service
from chalicelib.web.render import money, text

blueprint = Blueprint(__name__)

StripeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,255}$")]
# The texts the page's script shows, by the name it asks for.
SCRIPT_TEXTS = ("working", "authenticating", "failed_card_declined", "failed_insufficient_funds",
                "failed_expired_card", "failed_incorrect_cvc", "failed_authentication", "failed_generic",
                "failed_network")


class CheckoutConfirmed(BaseModel):
    model_config = STRICT

    setup_intent: StripeId | None = None
    payment_intent: StripeId | None = None


@endpoint(blueprint, "/checkout/{token}", auth="public", response="text/html")
def show_checkout(call: Call, token: str):
    from chalicelib.services import checkout

    visit = self_service.visit_of(call.request)
    try:
        shown = checkout.checkout_page(token, self_service.language_for(call.request))
    except BillingError as error:
        return self_service.refusal_page(visit, error, face="checkout")
    visit.lang = self_service.language_for(call.request, shown.language)
    lang = visit.lang
    total = money(shown.total, shown.currency, lang)
    submit = text(lang, "checkout_pay", amount=total) if shown.total > 0 else text(lang, "checkout_subscribe")
    config = {}
    if shown.status == "open":
        config = {
            "publishableKey": shown.stripe["publishable_key"], "clientSecret": shown.stripe["client_secret"],
            "locale": lang, "name": shown.customer_name, "email": shown.customer_email,
            "texts": {"submit": submit, **{name: text(lang, f"checkout_{name}") for name in SCRIPT_TEXTS}},
        }
    return self_service.page(visit, "checkout.html", c=shown, config=config, submit_label=submit,
                             period=_period(lang, *shown.interval),
                             stripe_origins=_origins(shown.stripe.get("origin")) if shown.stripe else None)


@endpoint(blueprint, "/checkout/{token}/intent", methods=("POST",), auth="public", response="CheckoutIntent")
def new_checkout_intent(call: Call, token: str):
    from chalicelib.services import checkout

    return checkout.retry_setup_intent(token)


@endpoint(blueprint, "/checkout/{token}/complete", methods=("POST",), auth="public", response="CheckoutOutcome")
def complete_checkout(call: Call, token: str):
    from chalicelib.services import checkout

    body = call.body(CheckoutConfirmed)
    return checkout.complete(token, setup_intent_id=body.setup_intent, payment_intent_id=body.payment_intent)


class CheckoutIntent(BaseModel):
    client_secret: str


class CheckoutOutcome(BaseModel):
    status: str
    redirect_url: str | None = None
    client_secret: str | None = None
    code: str | None = None


def _period(lang: str, interval: str, count: int) -> str:
    return text(lang, f"checkout_period_{interval}") if count == 1 else \
        text(lang, f"checkout_period_{interval}s", count=count)


def _origins(origin: str | None) -> list[str]:
    """What the page may load and call: Stripe.js, its frames and its API, or the stand-in's one origin."""
    if not origin:
        return []
    if origin == "https://js.stripe.com":
        return ["https://js.stripe.com", "https://*.js.stripe.com", "https://api.stripe.com",
                "https://hooks.stripe.com"]
    return [origin]
