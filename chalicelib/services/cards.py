"""A customer's card: set up on the payment page, kept current by Stripe.

One outcome for a succeeded SetupIntent, reached by the page's `/complete`
or by the `setup_intent.succeeded` webhook, whichever comes first: the card
is attached to the customer's Stripe customer, made its default for
invoices, recorded on our customer (brand, last4, expiry: what API.md shows
and what the expiry alerts read), and billing retries the customer's open
invoices. The second arrival finds the SetupIntent's marker and does nothing.
Every step is safe to repeat, so a crash half-way is finished by whichever
comes next (the page's retry or Stripe's redelivery).
"""
from __future__ import annotations

from chalicelib import payments
from chalicelib.clock import clock
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.observability import logger
from chalicelib.services import invoice_actions
from chalicelib.store import customers as customer_store
from chalicelib.store import stripe_events as store


def stripe_customer_for(customer) -> str:
    """The Stripe customer of our customer, created (and stored) when first needed.

    Two first visits at once get the same one from Stripe (the same
    idempotency key); were they to get two, the store keeps the first id
    written and the other is never used."""
    if customer.stripe_customer_id:
        return customer.stripe_customer_id
    stripe_customer_id = payments.ensure_customer(
        None,
        merchant_id=customer.merchant_id,
        customer_id=customer.customer_id,
        name=customer.name,
        email=customer.email,
        locale=customer.locale,
        replacing=customer.deleted_stripe_customer_id,
    )
    try:
        customer_store.set_stripe_customer_id(customer.merchant_id, customer.customer_id, stripe_customer_id)
    except Conflict as error:
        if error.code != "stripe_customer_exists":
            raise
        # Another first visit won the race: its Stripe customer is the one.
        stored = customer_store.get_customer(customer.merchant_id, customer.customer_id, consistent=True)
        return stored.stripe_customer_id
    return stripe_customer_id


def complete_card_setup(
    merchant_id: str, customer_id: str, setup_intent: payments.SetupIntent, *, completed_by: str
) -> dict:
    """Make a succeeded SetupIntent's card the customer's default; returns
    the card as API.md shows it. `setup_intent` comes from Stripe (retrieved
    by us, or a signed webhook), never from the browser."""
    customer = customer_store.get_customer(merchant_id, customer_id, consistent=True)
    if (
        not customer.stripe_customer_id
        or setup_intent.customer != customer.stripe_customer_id
        or setup_intent.metadata.get("customer_id", customer_id) != customer_id
    ):
        raise InvalidRequest("setup_intent: not a card setup of this customer", param="setup_intent")
    if setup_intent.status != "succeeded" or not setup_intent.payment_method:
        raise Conflict(
            f"the card is not confirmed yet (setup intent {setup_intent.status})", code="setup_intent_not_succeeded"
        )
    if store.card_setup_done(merchant_id, setup_intent.id):
        return current_card(customer_store.get_customer(merchant_id, customer_id))
    if not store.claim_newest_card_setup(merchant_id, customer_id, setup_intent.id, setup_intent.created):
        # An older setup arriving late (Stripe redelivers for days): the card
        # set up since stays the default.
        logger.info("older setup intent left aside", extra={"setup_intent": setup_intent.id})
        return current_card(customer)
    card = payments.attach_default_card(customer.stripe_customer_id, setup_intent.payment_method)
    customer_store.set_default_card(merchant_id, customer_id, _card_record(card))
    logger.info("default card set", extra={"customer_id": customer_id, "by": completed_by})
    try:
        invoice_actions.retry_open_invoices(merchant_id, customer_id)
    except Exception:
        if completed_by != "page":
            raise  # the webhook answers 500: Stripe delivers again, and this runs again
        # The card is saved: the customer is told so. Without the marker the
        # setup_intent.succeeded webhook (Stripe sends it for every setup)
        # runs the retry again.
        logger.exception("retrying open invoices failed", extra={"customer_id": customer_id})
        return card.summary()
    store.record_card_setup(
        merchant_id=merchant_id,
        customer_id=customer_id,
        setup_intent_id=setup_intent.id,
        payment_method_id=card.payment_method_id,
        setup_intent_created=setup_intent.created,
        completed_by=completed_by,
        now=clock().now(),
    )
    return card.summary()


def save_confirmed_card(merchant_id: str, customer_id: str, payment_method_id: str) -> dict:
    """A card Stripe confirmed before our customer existed (a checkout's
    SetupIntent, read from Stripe by the caller): attached to the customer's
    Stripe customer and made its default. Safe to repeat. The caller
    charges what is due (a checkout: the first invoice)."""
    customer = customer_store.get_customer(merchant_id, customer_id, consistent=True)
    stripe_customer_id = stripe_customer_for(customer)
    card = payments.attach_default_card(stripe_customer_id, payment_method_id)
    customer_store.set_default_card(merchant_id, customer_id, _card_record(card))
    logger.info("default card set", extra={"customer_id": customer_id, "by": "checkout"})
    return card.summary()


def setup_intent_succeeded(intent: dict) -> None:
    """The `setup_intent.succeeded` webhook: the same outcome as the page's
    `/complete`. SetupIntents that our payment page did not create (no
    merchant and customer in their metadata) are none of our business."""
    setup_intent = payments.setup_intent_from_event(intent)
    merchant_id = setup_intent.metadata.get("merchant_id")
    customer_id = setup_intent.metadata.get("customer_id")
    if not merchant_id or not customer_id:
        logger.info("setup intent without our metadata ignored", extra={"setup_intent": setup_intent.id})
        return
    try:
        complete_card_setup(merchant_id, customer_id, setup_intent, completed_by="webhook")
    except (NotFound, InvalidRequest) as error:
        # The customer is gone, or this is not its Stripe customer any more:
        # nothing to record, and a redelivery would not change that.
        logger.warning("setup intent not recorded", extra={"setup_intent": setup_intent.id, "reason": error.message})


def payment_method_updated(payment_method: dict) -> None:
    """`payment_method.updated` / `payment_method.automatically_updated`: the
    bank issued a new expiry (card updater). Recorded on the customer whose
    default card it is, so the expiry alert is not sent for a card that no
    longer expires."""
    if payment_method.get("type") != "card" or not payment_method.get("customer"):
        return
    card = payments.card_of(payment_method)
    try:
        stripe_customer = payments.retrieve_customer(payment_method["customer"])
    except payments.NoSuchObject:
        return
    customer = _our_customer(stripe_customer)
    if customer is None:
        return
    current = _default_card(customer)
    if not current or current.get("payment_method_id") != card.payment_method_id:
        return
    customer_store.set_default_card(customer.merchant_id, customer.customer_id, _card_record(card))
    logger.info("card expiry updated", extra={"customer_id": customer.customer_id})


def stripe_customer_deleted(stripe_customer: dict) -> None:
    """`customer.deleted` (someone deleted it in Stripe's dashboard): our
    customer no longer has a Stripe customer or a card; the next payment page
    creates new ones."""
    customer = _our_customer(payments.customer_from_event(stripe_customer))
    if customer is None:
        return
    store.forget_stripe_customer(customer.merchant_id, customer.customer_id, customer.stripe_customer_id)
    logger.info("Stripe customer deleted; card forgotten", extra={"customer_id": customer.customer_id})


def _our_customer(stripe_customer: payments.StripeCustomer):
    """Our customer behind a Stripe customer, from the metadata we gave it,
    if our record still points at that Stripe customer."""
    if not stripe_customer.merchant_id or not stripe_customer.customer_id:
        return None
    try:
        customer = customer_store.get_customer(stripe_customer.merchant_id, stripe_customer.customer_id)
    except NotFound:
        return None
    if customer.stripe_customer_id != stripe_customer.id:
        return None
    return customer


def _card_record(card: payments.Card) -> dict:
    return {"payment_method_id": card.payment_method_id, **card.summary()}


def _default_card(customer) -> dict | None:
    return customer.card()


def current_card(customer) -> dict | None:
    """The customer's default card as API.md shows it, or None."""
    card = _default_card(customer)
    if not card:
        return None
    return {name: card[name] for name in ("brand", "last4", "exp_month", "exp_year")}
