"""The payment page: where one customer of one merchant saves a card.

The customer opens a payment link (`GET /pay/{token}`, services/
payment_links.py), types the card into Stripe Elements, which confirms a
SetupIntent with Stripe directly (no card number ever reaches us), and the
page tells us (`POST /pay/{token}/complete`); the card becomes the
customer's default and pays its open invoices (services/cards.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib import config, payments
from chalicelib.clock import clock
from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.services import cards
from chalicelib.services.payment_links import open_link
from chalicelib.store import customers as customer_store
from chalicelib.store import merchants as merchant_store

SETUP_INTENT_ID = re.compile(r"^seti_[A-Za-z0-9_]{1,200}$")


@dataclass(frozen=True)
class PaymentPage:
    """What the payment page shows and needs."""

    merchant_name: str
    customer_name: str
    customer_email: str | None
    language: str
    timezone: str
    now: datetime
    expires_at: datetime
    client_secret: str
    publishable_key: str
    stripe_js_url: str
    stripe_origin: str
    current_card: dict | None
    charges: list[dict] = field(default_factory=list)


def payment_page(token: str) -> PaymentPage:
    """Open the page: a fresh SetupIntent for the customer's Stripe customer
    (created on the first visit). Each visit makes its own SetupIntent, as
    Stripe recommends; an abandoned one costs nothing."""
    link = open_link(token)
    return page_for(link.merchant_id, link.customer_id, link.expires_at)


def page_for(merchant_id: str, customer_id: str, expires_at: datetime) -> PaymentPage:
    """The page for one customer, whatever opened it (a payment link, the
    customer portal's "replace the card")."""
    customer = customer_store.get_customer(merchant_id, customer_id)
    merchant = merchant_store.get_merchant(merchant_id)
    stripe_customer_id = cards.stripe_customer_for(customer)
    intent = payments.create_setup_intent(
        stripe_customer_id, merchant_id=merchant_id, customer_id=customer_id
    )
    js_url, origin = stripe_js()
    return PaymentPage(
        merchant_name=merchant.name,
        customer_name=customer.name,
        customer_email=customer.email,
        language=page_language(customer.locale or merchant.locale),
        timezone=merchant.timezone or "UTC",
        now=clock().now(),
        expires_at=expires_at,
        client_secret=intent.client_secret,
        publishable_key=config.secret("stripe_publishable_key"),
        stripe_js_url=js_url,
        stripe_origin=origin,
        current_card=cards.current_card(customer),
        charges=upcoming_charges(merchant_id, customer_id),
    )


def complete(token: str, setup_intent_id: str) -> dict:
    """The page says Elements confirmed `setup_intent_id`: read it from
    Stripe, check it is this customer's, and make its card the default."""
    link = open_link(token)
    return complete_for(link.merchant_id, link.customer_id, setup_intent_id)


def complete_for(merchant_id: str, customer_id: str, setup_intent_id: str) -> dict:
    if not SETUP_INTENT_ID.match(setup_intent_id):
        raise InvalidRequest("setup_intent: not a SetupIntent id", param="setup_intent")
    try:
        intent = payments.retrieve_setup_intent(setup_intent_id)
    except payments.NoSuchObject:
        raise InvalidRequest("setup_intent: no such SetupIntent", param="setup_intent") from None
    card = cards.complete_card_setup(merchant_id, customer_id, intent, completed_by="page")
    return {"default_payment_method": card}


def stripe_js() -> tuple[str, str]:
    """Where the page loads Stripe.js from, and the origin it talks to.

    When the API is pointed at a stand-in for Stripe (the local stage and the
    tests: localstripe), the browser must use the stand-in's Stripe.js too,
    which localstripe serves at `{base}/js.stripe.com/v3/`."""
    base = config.settings().stripe_api_base
    if base:
        return f"{base}/js.stripe.com/v3/", base
    return "https://js.stripe.com/v3/", "https://js.stripe.com"


def page_language(locale: str | None) -> str:
    """The page speaks French to `fr`/`fr-XX` customers, English to everyone else."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


LIVE_STATUSES = ("incomplete", "trialing", "active", "past_due")


def upcoming_charges(merchant_id: str, customer_id: str) -> list[dict]:
    """What the card will pay for, `{"name", "amount", "currency",
    "billing_at"}` (amount due, a decimal string): first each open invoice
    (charged as soon as the card is saved), then one line per live
    subscription with its next invoice as it stands. A subscription with no
    next invoice (paused, ending) has no line of its own."""
    from chalicelib.services import invoices, offers, subscriptions

    charges = []
    live = [s for s in subscriptions.customer_subscriptions(merchant_id, customer_id)
            if s["status"] in LIVE_STATUSES]
    for subscription in live:
        for invoice in invoices.open_invoices_of_subscription(merchant_id, customer_id, subscription["id"]):
            charges.append({
                "name": offers.offer_summary(merchant_id, subscription["offer_id"])["name"],
                "amount": invoice["amount_due"],
                "currency": invoice["currency"],
                "billing_at": datetime.fromisoformat(invoice["finalized_at"].replace("Z", "+00:00")),
            })
    for subscription in live:
        if subscription.get("paused"):
            continue
        try:
            upcoming = subscriptions.upcoming_invoice(merchant_id, subscription["id"])
        except Conflict:
            continue
        charges.append({
            "name": offers.offer_summary(merchant_id, subscription["offer_id"])["name"],
            "amount": upcoming["amount_due"],
            "currency": upcoming["currency"],
            "billing_at": datetime.fromisoformat(upcoming["billing_at"].replace("Z", "+00:00")),
        })
    return charges
