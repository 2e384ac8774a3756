"""Hosted checkout: a merchant's offer sold to a customer on our page.

`POST /checkout-sessions` stores a session (what is sold, to whom, where the
browser goes back) and answers its link; nothing else exists yet. The page
(`/checkout/{token}`, web/checkout_page.py) shows the offer, its price and
the tax for the customer's country, and takes the card with Stripe Elements
on a SetupIntent made for the session alone (3-D Secure done there). Only
when Stripe says the card is confirmed does `complete` make the customer
(an id reserved in the session), save the card as its default, and create
the subscription (its id reserved too), which issues the first invoice and
charges it at once (services/subscriptions.py).

Once, whatever is retried: one request at a time holds the session's claim
(a conditional write with a lease) while it makes things, each step finds
what an earlier attempt made (the reserved ids), and the session moves
`open` -> `complete` by one conditional write. A card refused (by the bank,
or 3-D Secure failed) leaves the session open: the customer tries another
card on the same session, which reuses the customer and subscription
already made and charges the same first invoice. A session abandoned before
a card is confirmed leaves nothing behind.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from chalicelib import config, payments
from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain import self_service
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.ids import new_id
from chalicelib.observability import logger
from chalicelib.store import self_service as store

SESSION_LIFETIME = timedelta(hours=24)
# Longer than one completion can take inside API Gateway's 29 s.
CLAIM_LEASE = timedelta(seconds=60)
# How long a second completion (a double submit) waits for the first one.
WAIT_FOR_OTHER_SECONDS = 8.0
ACTOR = "customer"


# ---------------------------------------------------------------------------
# The merchant's API


def create_checkout_session(merchant_id: str, fields: dict) -> dict:
    """Store a session for `fields` (the API's `NewCheckoutSession`, dumped):
    404 naming `offer_id` / `customer_id` for objects the merchant does not
    have, 409 `offer_archived`, 400 naming the field otherwise."""
    from chalicelib.domain import catalog
    from chalicelib.services import offers
    from chalicelib.store import customers as customer_store

    if ("customer_id" in fields) == ("customer" in fields):
        raise InvalidRequest("customer: give either customer_id or customer", param="customer")
    try:
        offer = offers.load_offer(merchant_id, fields["offer_id"])
        archived = offers.offer_archived(merchant_id, fields["offer_id"])
    except NotFound as error:
        raise NotFound(error.message, param="offer_id") from None
    if archived:
        raise Conflict(f"offer {fields['offer_id']} is archived: no new subscription", code="offer_archived")
    catalog.check_options(offer.terms, fields.get("options") or [])
    currency = fields.get("currency") or offer.currency
    if currency != offer.currency and currency not in (getattr(offer, "currency_options", None) or {}):
        raise InvalidRequest(f"currency: offer {fields['offer_id']} is not sold in {currency}", param="currency")
    now = clock().now().replace(microsecond=0)
    new_customer = fields.get("customer")
    if new_customer is None:
        try:
            customer_store.get_customer(merchant_id, fields["customer_id"])
        except NotFound as error:
            raise NotFound(error.message, param="customer_id") from None
    secret = secrets.token_urlsafe(32)
    session_id = new_id("cs")
    record = store.CheckoutSessionRecord(
        *store.CheckoutSessionRecord.key(merchant_id, session_id),
        merchant_id=merchant_id, session_id=session_id, secret_digest=self_service.secret_digest(secret),
        status="open", offer_id=fields["offer_id"], options=list(fields.get("options") or []),
        customer_fields=json.dumps(new_customer) if new_customer is not None else None,
        customer_id=fields.get("customer_id") or new_id("cus"), customer_made=new_customer is None,
        subscription_id=new_id("sub"), subscription_made=False, currency=currency,
        locale=fields.get("locale"), success_url=fields["success_url"], cancel_url=fields["cancel_url"],
        created_at=isoformat(now), expires_at=isoformat(now + SESSION_LIFETIME),
    )
    store.create_checkout_session(record)
    token = self_service.link_token(merchant_id, session_id, secret)
    return {**serialize(record, now), "url": f"{config.settings().public_base_url}/checkout/{token}"}


def get_checkout_session(merchant_id: str, session_id: str) -> dict:
    return serialize(store.get_checkout_session(merchant_id, session_id), clock().now())


def serialize(record: store.CheckoutSessionRecord, now: datetime) -> dict:
    """The session as the API shows it; its link only in the creation's answer."""
    complete = record.status == "complete"
    return {
        "id": record.session_id,
        "object": "checkout_session",
        "status": self_service.checkout_status(record.status, parse_instant(record.expires_at), now),
        "url": None,
        "offer_id": record.offer_id,
        "options": list(record.options or []),
        "currency": record.currency,
        "locale": record.locale,
        "customer_id": record.customer_id if record.customer_made else None,
        "subscription_id": record.subscription_id if record.subscription_made else None,
        "success_url": record.success_url,
        "cancel_url": record.cancel_url,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "completed_at": record.completed_at if complete else None,
    }


# ---------------------------------------------------------------------------
# The page


@dataclass(frozen=True)
class CheckoutPage:
    session_id: str
    status: str  # open | complete
    language: str
    merchant_name: str
    offer_name: str
    interval: tuple[str, int]
    trial_days: int
    commitment_months: int
    currency: str
    fees: list[dict]  # {"name", "amount"} of the first period
    metered: list[dict]  # {"name", "unit_amount" | None}
    subtotal: Decimal
    tax_rate: Decimal | None
    tax: Decimal
    total: Decimal
    reverse_charge: bool
    customer_name: str
    customer_email: str | None
    country: str
    expires_at: datetime
    cancel_url: str
    success_redirect: str
    timezone: str
    stripe: dict = field(default_factory=dict)  # publishable key, client secret, Stripe.js


def open_session(token: str, *, allow_complete: bool = True) -> store.CheckoutSessionRecord:
    """The session a link opens: 404 for a link that is not one (or not
    this session's), 410 once expired; a completed one stays readable."""
    link = self_service.parse_link(token, "cs_")
    try:
        record = store.get_checkout_session(link.merchant_id, link.object_id, consistent=True)
    except NotFound:
        raise self_service.LinkNotFound("this link leads nowhere; ask for a new one") from None
    self_service.check_secret(link, record.secret_digest)
    if record.status == "complete" and allow_complete:
        return record
    self_service.check_not_expired(parse_instant(record.expires_at), clock().now())
    return record


def checkout_page(token: str, accepted_language: str | None = None) -> CheckoutPage:
    """What the page shows, and a fresh SetupIntent for it (each visit its
    own, as Stripe recommends: an abandoned one costs nothing)."""
    from chalicelib.services import payment_page

    record = open_session(token)
    merchant, customer = _parties(record)
    quote = quote_of(record, merchant, customer)
    stripe = {}
    if record.status == "open":
        stripe = {**_stripe_js(), "client_secret": new_setup_intent(record)}
    return CheckoutPage(
        session_id=record.session_id, status=record.status,
        language=payment_page.page_language(record.locale or customer.locale or accepted_language or merchant.locale),
        merchant_name=merchant.name, customer_name=customer.name, customer_email=customer.email,
        country=customer.country, expires_at=parse_instant(record.expires_at), cancel_url=record.cancel_url,
        success_redirect=self_service.success_redirect(record.success_url, record.session_id),
        timezone=merchant.timezone or "UTC", stripe=stripe, **quote,
    )


def new_setup_intent(record: store.CheckoutSessionRecord) -> str:
    """The client secret of a new SetupIntent for the session (the page asks
    for another after a refused card: Stripe may have closed the first)."""
    intent = payments.create_checkout_setup_intent(merchant_id=record.merchant_id,
                                                   checkout_session_id=record.session_id)
    return intent.client_secret


def retry_setup_intent(token: str) -> dict:
    record = open_session(token, allow_complete=False)
    if record.status != "open":
        raise Conflict("this checkout is complete", code="checkout_complete")
    return {"client_secret": new_setup_intent(record)}


def quote_of(record: store.CheckoutSessionRecord, merchant, customer) -> dict:
    """The first invoice as it would be issued now: the first period's fees
    and options, tax at the merchant's rate for the customer's country (none
    under a reverse charge), and the metered prices billed later."""
    from chalicelib.domain import invoicing, lifecycle
    from chalicelib.domain.invoices import totals
    from chalicelib.domain.money import ZERO
    from chalicelib.domain.periods import period_bounds
    from chalicelib.services import issuing, offers

    now = clock().now()
    offer = offers.load_offer(record.merchant_id, record.offer_id)
    in_currency = {"currency": record.currency} if record.currency != offer.currency else {}
    version, terms = offers.terms_at(record.merchant_id, record.offer_id, now, **in_currency)
    period = period_bounds(now, offer.interval, 0, merchant.timezone or "UTC")
    plan = lifecycle.Plan(record.offer_id, tuple(record.options or []), None)
    lines = [] if offer.trial_days else list(
        invoicing.first_invoice(plan, period, lambda _offer, _at: (version, terms)).lines)
    rate = merchant.tax_rate_table().get(customer.country)
    reverse = issuing.reverse_charge(merchant, customer)
    money = totals(lines, terms.currency, None if rate is None else Decimal(rate), reverse, ZERO)
    option_names = {option.code: option.name for option in terms.options}
    fees = [{"name": (line.source.name if line.source else None) or option_names.get(line.component)
             or (offer.name if line.kind == "fee" else line.component) or line.description,
             "kind": line.kind, "amount": line.amount} for line in lines]
    metered = [{"name": c.name or c.code, "meter": c.meter, "package_size": c.package_size,
                "unit_amount": None if c.tiers else c.unit_amount}
               for c in terms.components if c.type == "metered"]
    return {
        "offer_name": offer.name, "interval": (offer.billing_interval, offer.interval_count),
        "trial_days": offer.trial_days, "commitment_months": offer.commitment_months, "currency": terms.currency,
        "fees": fees, "metered": metered, "subtotal": money.subtotal,
        "tax_rate": None if reverse or rate is None else Decimal(rate), "tax": money.tax_amount,
        "total": money.total, "reverse_charge": reverse,
    }


def _parties(record: store.CheckoutSessionRecord):
    """The merchant, and the customer as far as the session knows it."""
    from chalicelib.store import customers as customer_store
    from chalicelib.store import merchants as merchant_store

    merchant = merchant_store.get_merchant(record.merchant_id)
    fields = record.new_customer()
    if fields is None or record.customer_made:
        return merchant, customer_store.get_customer(record.merchant_id, record.customer_id)
    return merchant, SimpleNamespace(name=fields["name"], email=fields.get("email"), country=fields["country"],
                                     locale=fields.get("locale"), vat_number=fields.get("vat_number"),
                                     tax_exempt=bool(fields.get("tax_exempt")))


def _stripe_js() -> dict:
    from chalicelib.services import payment_page

    js_url, origin = payment_page.stripe_js()
    return {"publishable_key": config.secret("stripe_publishable_key"), "js_url": js_url, "origin": origin}


# ---------------------------------------------------------------------------
# Completion


def complete(token: str, *, setup_intent_id: str | None = None, payment_intent_id: str | None = None) -> dict:
    """The page says Stripe confirmed a card (`setup_intent_id`) or the
    customer authenticated the first charge (`payment_intent_id`). Both are
    read back from Stripe, never trusted from the browser. Answers
    `{"status": "complete", "redirect_url"}`, `{"status": "requires_action",
    "client_secret"}` (3-D Secure for the charge), `{"status":
    "payment_failed", "code"}` (the session stays open for another card) or
    `{"status": "processing"}` (another request is completing it: ask again)."""
    record = open_session(token)
    if record.status == "complete":
        return _done(record)
    intent = _confirmed_setup(record, setup_intent_id) if setup_intent_id else None
    payment = _payment_of_session(record, payment_intent_id) if payment_intent_id else None
    now = clock().now()
    if not store.claim_checkout(record, _fixed(now), _fixed(now + CLAIM_LEASE)):
        return _wait_for_other(record)
    try:
        result = _make(record, intent, payment)
    except BaseException:
        store.release_checkout(record)
        raise
    if result is None:
        if store.complete_checkout(record, isoformat(clock().now())):
            logger.info("checkout complete", extra={"checkout_session": record.session_id})
        return _done(store.get_checkout_session(record.merchant_id, record.session_id, consistent=True))
    store.record_checkout_progress(record, last_failure=result.get("code"))
    store.release_checkout(record)
    return result


def _make(record, intent, payment) -> dict | None:
    """Holding the claim: the customer, its card, the subscription (each
    once), then the first invoice's outcome (None when paid or nothing due)."""
    from chalicelib.services import cards, collecting, invoice_actions, subscriptions

    customer_id = _ensure_customer(record)
    if intent is not None:
        cards.save_confirmed_card(record.merchant_id, customer_id, intent.payment_method)
    if not record.subscription_made:
        try:
            subscriptions.get_subscription(record.merchant_id, record.subscription_id)
        except NotFound:
            subscriptions.create_subscription(record.merchant_id, {
                "customer_id": customer_id, "offer_id": record.offer_id, "options": list(record.options or []),
            }, ACTOR, subscription_id=record.subscription_id)
        store.record_checkout_progress(record, subscription_made=True)
        record.subscription_made = True
    elif intent is not None:
        invoice_actions.retry_open_invoices(record.merchant_id, customer_id)
    if payment is not None:
        collecting.record_payment(payment)
    return _first_invoice_outcome(record, customer_id)


def _ensure_customer(record) -> str:
    from chalicelib.services import customers
    from chalicelib.store import customers as customer_store

    if record.customer_made:
        return record.customer_id
    try:
        customer_store.get_customer(record.merchant_id, record.customer_id, consistent=True)
    except NotFound:
        fields = record.new_customer()
        if record.locale and not fields.get("locale"):
            fields["locale"] = record.locale
        customers.create_customer(record.merchant_id, fields, customer_id=record.customer_id)
    store.record_checkout_progress(record, customer_made=True)
    record.customer_made = True
    return record.customer_id


def _first_invoice_outcome(record, customer_id: str) -> dict | None:
    """None once nothing of the first invoice is left to pay; else why not."""
    from chalicelib.services import collecting, invoices, issuing
    from chalicelib.store import subscriptions as subscription_store

    subscription = subscription_store.get_subscription(record.merchant_id, record.subscription_id, consistent=True)
    now = clock().now()
    if any(parse_instant(item["due_at"]) <= now for item in subscription.pending_invoice_items or []):
        # Issuing it at creation failed (logged there): once more now.
        with collecting.interactive():
            issuing.invoice_now(record.merchant_id, record.subscription_id)
    unpaid = invoices.open_invoices_of_subscription(record.merchant_id, customer_id, record.subscription_id)
    if not unpaid:
        return None
    attempts = unpaid[0].get("payment_attempts") or []
    last = attempts[-1] if attempts else {}
    if last.get("status") in ("pending", "processing"):
        return {"status": "processing"}
    code = last.get("failure_code") or "card_declined"
    if code == "authentication_required" and last.get("payment_intent"):
        charge = payments.retrieve_payment(last["payment_intent"])
        if charge.status == "requires_action" and charge.client_secret:
            return {"status": "requires_action", "client_secret": charge.client_secret}
    return {"status": "payment_failed", "code": code}


def _confirmed_setup(record, setup_intent_id: str) -> payments.SetupIntent:
    try:
        intent = payments.retrieve_setup_intent(setup_intent_id)
    except payments.NoSuchObject:
        raise InvalidRequest("setup_intent: no such SetupIntent", param="setup_intent") from None
    if (intent.metadata.get("checkout_session_id") != record.session_id
            or intent.metadata.get("merchant_id") != record.merchant_id):
        raise InvalidRequest("setup_intent: not a card setup of this checkout", param="setup_intent")
    if intent.status != "succeeded" or not intent.payment_method:
        raise Conflict(f"the card is not confirmed yet (setup intent {intent.status})",
                       code="setup_intent_not_succeeded")
    return intent


def _payment_of_session(record, payment_intent_id: str) -> payments.Payment:
    from chalicelib.store import invoices as invoice_store

    try:
        payment = payments.retrieve_payment(payment_intent_id)
    except payments.NoSuchObject:
        raise InvalidRequest("payment_intent: no such PaymentIntent", param="payment_intent") from None
    invoice = invoice_store.find_invoice(record.merchant_id, payment.invoice_id) if payment.invoice_id else None
    if (payment.metadata.get("merchant_id") != record.merchant_id or invoice is None
            or invoice.subscription_id != record.subscription_id):
        raise InvalidRequest("payment_intent: not a charge of this checkout", param="payment_intent")
    return payment


def _wait_for_other(record) -> dict:
    """Another request holds the claim (a double submit): its outcome, when it comes soon."""
    deadline = time.monotonic() + WAIT_FOR_OTHER_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.25)
        current = store.get_checkout_session(record.merchant_id, record.session_id, consistent=True)
        if current.status == "complete":
            return _done(current)
        if current.claimed_until is None:
            # Released without completing: a refused card says so; anything
            # else (it failed) is for the page to ask again.
            return {"status": "payment_failed", "code": current.last_failure} if current.last_failure \
                else {"status": "processing"}
    return {"status": "processing"}


def _done(record) -> dict:
    return {"status": "complete", "redirect_url": self_service.success_redirect(record.success_url, record.session_id),
            "customer_id": record.customer_id, "subscription_id": record.subscription_id}


def _fixed(moment: datetime) -> str:
    """Fixed-width ISO time (milliseconds), so that string order is time order."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
