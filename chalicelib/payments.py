"""Stripe: the only module that imports `stripe`.

`stripe` is imported inside the functions (through `_client()`), so the
routes that never pay (most of them) do not pay its import at cold start.

Every Stripe failure is classified here, once, into a few kinds the services
act on:

- `Declined` (the card said no: record, dun) and `AuthenticationRequired`
  (the bank wants the customer present, 3-D Secure: send a payment link);
- `RateLimited` and `Unavailable` (network, timeouts, Stripe's 5xx): try
  again later, with the same idempotency key;
- `NoSuchObject`: an id Stripe does not know (a browser sent a wrong id);
- `StripeInvalidRequest`: Stripe refused what we sent. That is a bug of
  ours or a wrong key, never the customer's doing: it is logged at error
  level and counted (metric `StripeInvalidRequest`) so that it alarms.

Only parameters that both Stripe and localstripe (the local stage's fake)
accept are sent. Where localstripe lacks something Stripe does, this module
does what Stripe needs (attaching a SetupIntent's card, listing a customer's
PaymentIntents); tests/integration/test_payments.py says where they differ.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator

from chalicelib import config
from chalicelib.domain.errors import BillingError
from chalicelib.domain.money import currency_rule
from chalicelib.observability import logger, metrics

# (connect, read) seconds. With two retries and the library's back-off the
# worst case stays under API Gateway's 29 s limit; Stripe answers in well
# under a second when it is healthy.
TIMEOUT_SECONDS = (3.0, 8.0)
# The library retries connection errors, 409 (a request with the same
# idempotency key still running) and 5xx, re-sending the same idempotency key.
MAX_NETWORK_RETRIES = 2


# -- the result kinds --------------------------------------------------------


class PaymentError(BillingError):
    """Base of the classified Stripe failures. `retryable`: the same call may
    succeed later (with the same idempotency key)."""

    retryable = False

    def __init__(self, message: str, *, code: str | None = None, payment_intent_id: str | None = None):
        super().__init__(message, code=code)
        self.payment_intent_id = payment_intent_id


class Declined(PaymentError):
    """The card was refused. `decline_code` is Stripe's reason
    (`insufficient_funds`, `generic_decline` ...) or, when Stripe gives none,
    the error code (`card_declined`, `expired_card` ...)."""

    status = 402
    type = "card_error"
    code = "card_declined"

    def __init__(self, decline_code: str, message: str, *, payment_intent_id: str | None = None):
        super().__init__(message, payment_intent_id=payment_intent_id)
        self.decline_code = decline_code


class AuthenticationRequired(PaymentError):
    """The bank wants the cardholder to authenticate (3-D Secure): an
    off-session charge cannot succeed until the customer confirms a card."""

    status = 402
    type = "card_error"
    code = "authentication_required"


class RateLimited(PaymentError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"
    retryable = True


class Unavailable(PaymentError):
    """Stripe could not be reached or failed (timeouts, 5xx), after the retries."""

    status = 503
    type = "api_error"
    code = "payment_provider_unavailable"
    retryable = True


class NoSuchObject(PaymentError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class StripeInvalidRequest(PaymentError):
    """Stripe refused the request itself: a bug or a configuration error."""

    status = 500
    type = "api_error"
    code = "api_error"


class WebhookSignatureInvalid(BillingError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_signature"


# -- what the services get back ----------------------------------------------


@dataclass(frozen=True)
class Card:
    """A card as our customer record keeps it: no number, only what a person
    needs to recognise it and what the expiry alerts need."""

    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int

    def summary(self) -> dict:
        """API.md's default payment method object."""
        return {"brand": self.brand, "last4": self.last4, "exp_month": self.exp_month, "exp_year": self.exp_year}


@dataclass(frozen=True)
class SetupIntent:
    id: str
    status: str
    customer: str | None
    payment_method: str | None
    client_secret: str
    created: int
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StripeCustomer:
    id: str
    merchant_id: str | None
    customer_id: str | None
    default_payment_method: str | None


@dataclass(frozen=True)
class Payment:
    """A PaymentIntent. `amount` is in minor units, `currency` upper-case."""

    id: str
    status: str
    amount: int
    currency: str
    customer: str | None
    payment_method: str | None
    created: int
    metadata: dict = field(default_factory=dict)
    failure_code: str | None = None
    failure_message: str | None = None
    # What a page hands Stripe.js to confirm the charge with the customer
    # present (3-D Secure asked for by the bank).
    client_secret: str | None = field(default=None, repr=False)

    @property
    def invoice_id(self) -> str | None:
        return self.metadata.get("invoice_id")

    @property
    def attempt(self) -> int | None:
        attempt = self.metadata.get("attempt")
        return int(attempt) if attempt and attempt.isdigit() else None


@dataclass(frozen=True)
class Refund:
    id: str
    status: str
    amount: int
    payment_intent: str | None
    metadata: dict = field(default_factory=dict)


# -- the client ----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _client_for(api_key: str, api_base: str | None):
    import stripe

    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=TIMEOUT_SECONDS),
    )


def _client():
    """One client per (key, API base), kept for the life of the container: it
    holds the HTTP connection pool. A rotated key gives a new client."""
    return _client_for(config.secret("stripe_secret_key"), config.settings().stripe_api_base)


def _classify(error: Exception, operation: str) -> PaymentError:
    """The one place where a Stripe library error becomes one of our kinds."""
    import stripe

    if isinstance(error, stripe.CardError):
        details = error.error
        payment_intent = getattr(details, "payment_intent", None) if details else None
        payment_intent_id = payment_intent["id"] if payment_intent else None
        message = error.user_message or "the card was declined"
        if error.code == "authentication_required":
            return AuthenticationRequired(message, payment_intent_id=payment_intent_id)
        decline_code = (getattr(details, "decline_code", None) if details else None) or error.code or "card_declined"
        return Declined(decline_code, message, payment_intent_id=payment_intent_id)
    if isinstance(error, stripe.RateLimitError):
        return RateLimited("Stripe is limiting our request rate; try again shortly")
    status = getattr(error, "http_status", None) or 0
    # 409: a request with the same idempotency key is still running at Stripe.
    if isinstance(error, stripe.APIConnectionError) or status == 409 or status >= 500:
        logger.warning("Stripe unavailable", extra={"operation": operation, "error": str(error)})
        return Unavailable("the payment provider is unavailable; try again shortly")
    if isinstance(error, stripe.InvalidRequestError) and error.http_status == 404:
        return NoSuchObject(f"{operation}: no such object at Stripe")
    return _alarm(
        f"Stripe refused {operation}", error_type=type(error).__name__, error=str(error), http_status=status
    )


def _alarm(reason: str, **context) -> StripeInvalidRequest:
    """A request Stripe refused, or an answer we cannot use: our bug or a
    wrong key. Logged at error level and counted, so that it alarms; the
    caller's client only learns that it failed."""
    from aws_lambda_powertools.metrics import MetricUnit

    logger.error(reason, extra=context)
    metrics.add_metric(name="StripeInvalidRequest", unit=MetricUnit.Count, value=1)
    return StripeInvalidRequest("the payment provider refused the request; quote the request id to support")


def _call(operation: str, function, *args, **kwargs):
    import stripe

    try:
        return function(*args, **kwargs)
    except stripe.StripeError as error:
        raise _classify(error, operation) from error


def _plain(obj: Any) -> dict:
    """A Stripe object as a plain dict (stripe >= 15 objects are not dicts)."""
    if obj is None:
        return {}
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the object carrying it."""
    if value is None or isinstance(value, str):
        return value
    return value["id"]


# -- customers -------------------------------------------------------------------


def ensure_customer(
    stripe_customer_id: str | None, *, merchant_id: str, customer_id: str, name: str, email: str | None,
    locale: str | None = None, replacing: str | None = None,
) -> str:
    """The Stripe customer of our customer: the one given, or a new one.

    The caller stores a new id (customers store). Its metadata names our
    merchant and customer, which is how a webhook finds its way back. The
    idempotency key makes a concurrent first payment page a single Stripe
    customer (and the store's conditional write keeps one id on our side).
    `replacing` names the Stripe customer deleted before this one: the key
    then differs from the one that made it, which Stripe would answer with
    the deleted customer again for 24 h."""
    if stripe_customer_id:
        return stripe_customer_id
    params: dict[str, Any] = {"name": name, "metadata": {"merchant_id": merchant_id, "customer_id": customer_id}}
    if email:
        params["email"] = email
    if locale:
        params["preferred_locales"] = [locale.split("-")[0]]
    customer = _call(
        "create customer", _client().v1.customers.create,
        params=params, options={"idempotency_key": customer_idempotency_key(merchant_id, customer_id, replacing)},
    )
    return customer["id"]


def customer_idempotency_key(merchant_id: str, customer_id: str, replacing: str | None = None) -> str:
    key = f"customer-{merchant_id}-{customer_id}"
    return key if replacing is None else f"{key}-after-{replacing}"


def retrieve_customer(stripe_customer_id: str) -> StripeCustomer:
    customer = _plain(_call("retrieve customer", _client().v1.customers.retrieve, stripe_customer_id))
    return _stripe_customer(customer)


def _stripe_customer(customer: dict) -> StripeCustomer:
    metadata = customer.get("metadata") or {}
    settings = customer.get("invoice_settings") or {}
    return StripeCustomer(
        id=customer["id"],
        merchant_id=metadata.get("merchant_id"),
        customer_id=metadata.get("customer_id"),
        default_payment_method=_id(settings.get("default_payment_method")),
    )


def customer_from_event(customer: dict) -> StripeCustomer:
    """A customer object carried by a webhook event (customer.deleted)."""
    return _stripe_customer(customer)


# -- cards: SetupIntent, attach, default ---------------------------------------


def create_setup_intent(stripe_customer_id: str, *, merchant_id: str, customer_id: str) -> SetupIntent:
    """A SetupIntent for the payment page: the card is saved for later
    off-session charges (`usage=off_session`)."""
    intent = _call(
        "create setup intent", _client().v1.setup_intents.create,
        params={
            "customer": stripe_customer_id,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": {"merchant_id": merchant_id, "customer_id": customer_id},
        },
    )
    return _setup_intent(_plain(intent))


def create_checkout_setup_intent(*, merchant_id: str, checkout_session_id: str) -> SetupIntent:
    """A SetupIntent for a checkout page, before any customer exists: the
    card is attached to the Stripe customer once the checkout completes
    (`attach_default_card`). Its metadata names the session, never a
    customer, so the card webhooks leave it to the checkout."""
    intent = _call(
        "create setup intent", _client().v1.setup_intents.create,
        params={
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": {"merchant_id": merchant_id, "checkout_session_id": checkout_session_id},
        },
    )
    return _setup_intent(_plain(intent))


def retrieve_setup_intent(setup_intent_id: str) -> SetupIntent:
    """The SetupIntent as Stripe knows it: what the browser says is never trusted."""
    return _setup_intent(_plain(_call("retrieve setup intent", _client().v1.setup_intents.retrieve, setup_intent_id)))


def setup_intent_from_event(intent: dict) -> SetupIntent:
    return _setup_intent(intent)


def _setup_intent(intent: dict) -> SetupIntent:
    return SetupIntent(
        id=intent["id"],
        status=intent["status"],
        customer=_id(intent.get("customer")),
        payment_method=_id(intent.get("payment_method")),
        client_secret=intent.get("client_secret") or "",
        created=int(intent.get("created") or 0),
        metadata=dict(intent.get("metadata") or {}),
    )


def attach_default_card(stripe_customer_id: str, payment_method_id: str) -> Card:
    """Attach the card to the customer (Stripe does it when a SetupIntent with
    a customer succeeds, localstripe does not) and make it the default for
    invoices. Safe to repeat: an attached card is not attached again."""
    client = _client()
    method = _plain(_call("retrieve payment method", client.v1.payment_methods.retrieve, payment_method_id))
    owner = _id(method.get("customer"))
    if owner is None:
        method = _plain(
            _call("attach payment method", client.v1.payment_methods.attach, payment_method_id,
                  params={"customer": stripe_customer_id})
        )
    elif owner != stripe_customer_id:
        raise _alarm(f"payment method {payment_method_id} belongs to another Stripe customer")
    _call(
        "set default payment method", client.v1.customers.update, stripe_customer_id,
        params={"invoice_settings": {"default_payment_method": payment_method_id}},
    )
    return card_of(method)


def retrieve_card(payment_method_id: str) -> Card:
    method = _call("retrieve payment method", _client().v1.payment_methods.retrieve, payment_method_id)
    return card_of(_plain(method))


def card_of(payment_method: dict) -> Card:
    """The card of a PaymentMethod (from the API or a webhook event)."""
    card = payment_method.get("card") or {}
    if payment_method.get("type") != "card" or not card:
        raise _alarm(f"payment method {payment_method.get('id')} is not a card")
    return Card(
        payment_method_id=payment_method["id"],
        brand=str(card.get("brand") or "unknown"),
        last4=str(card["last4"]),
        exp_month=int(card["exp_month"]),
        exp_year=int(card["exp_year"]),
    )


# -- amounts -----------------------------------------------------------------------


def stripe_amount(amount: Decimal, currency: str) -> int:
    """`amount` (major units) as the integer Stripe reads, by the rules of
    money.CURRENCIES: EUR 12.50 -> 1250, JPY 1250 -> 1250, KWD 5.120 -> 5120,
    ISK 5 -> 500. Never rounds: the invoice rounded once, to an amount
    Stripe can take (money.round_billed); one that is not is a bug, and a
    ValueError here rather than a different amount at Stripe."""
    rule = currency_rule(currency)
    scaled = amount.scaleb(rule.stripe_exponent)
    if scaled != scaled.to_integral_value() or int(scaled) % rule.stripe_step:
        raise ValueError(f"{amount} {currency} is not an amount Stripe can take "
                         f"(multiples of {rule.quantum} {currency})")
    return int(scaled)


def amount_from_stripe(minor: int, currency: str) -> Decimal:
    """The inverse of `stripe_amount`: 5120 KWD -> Decimal("5.120"), 500 ISK -> Decimal("5")."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("Stripe amounts are an int")
    rule = currency_rule(currency)
    return Decimal(minor).scaleb(-rule.stripe_exponent).quantize(Decimal(1).scaleb(-rule.decimals))


# -- charges -----------------------------------------------------------------------


def charge_idempotency_key(invoice_id: str, attempt: int, retry: int | None = None) -> str:
    """`invoice-{id}-attempt-{n}`; a retry of an attempt that is known to
    have charged nothing gets a key of its own (`...-retry-{k}`): Stripe
    answers a key's first result again for 24 h, a 500 included, so the
    attempt's own key would fail the same way all day."""
    key = f"invoice-{invoice_id}-attempt-{attempt}"
    return key if retry is None else f"{key}-retry-{retry}"


def charge_invoice(
    *, invoice_id: str, merchant_id: str, attempt: int, amount: Decimal, currency: str,
    stripe_customer_id: str, payment_method_id: str, retry: int | None = None,
) -> Payment:
    """Charge an invoice's amount due off-session on the customer's card.

    Returns the PaymentIntent when it `succeeded` (or is `processing`: the
    webhook will tell the end). Raises `Declined`, `AuthenticationRequired`,
    `RateLimited`, `Unavailable` or `StripeInvalidRequest`.

    The idempotency key is derived from the invoice and the attempt: a
    retried call within Stripe's 24 h gets the first PaymentIntent back.
    A crash may come between the charge and our write, and after 24 h the
    key is forgotten: before charging again for an attempt, the caller
    looks for it with `find_invoice_payments`. After `Unavailable` the
    charge may have happened all the same (a timeout after Stripe acted):
    retry the same attempt, never a new one, until it is known; once the
    lookup shows nothing was charged, `retry` gives the call a key Stripe
    has not answered yet."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    minor = stripe_amount(amount, currency)
    if minor <= 0:
        raise ValueError("only a positive amount is charged; a zero invoice is paid without Stripe")
    intent = _call(
        "create payment intent", _client().v1.payment_intents.create,
        params={
            "amount": minor,
            "currency": currency.lower(),
            "customer": stripe_customer_id,
            "payment_method": payment_method_id,
            # Card only: Stripe's default (automatic payment methods) would
            # want a return_url for methods that redirect, which an
            # off-session charge cannot follow.
            "payment_method_types": ["card"],
            "off_session": True,
            "confirm": True,
            "metadata": {"invoice_id": invoice_id, "merchant_id": merchant_id, "attempt": str(attempt)},
        },
        options={"idempotency_key": charge_idempotency_key(invoice_id, attempt, retry)},
    )
    payment = payment_of(_plain(intent))
    return _settled(payment)


def _settled(payment: Payment) -> Payment:
    """A confirmed PaymentIntent that did not raise, read by its status."""
    if payment.status in ("succeeded", "processing"):
        return payment
    if payment.status == "requires_action":
        # Stripe answers an off-session charge that needs 3-D Secure with a
        # card error (authentication_required); localstripe with this status.
        raise AuthenticationRequired("the bank asks the cardholder to authenticate", payment_intent_id=payment.id)
    if payment.status == "requires_payment_method":
        raise Declined(payment.failure_code or "card_declined", payment.failure_message or "the card was declined",
                       payment_intent_id=payment.id)
    raise _alarm(f"payment intent {payment.id} is {payment.status} after confirmation")


def retrieve_payment(payment_intent_id: str) -> Payment:
    intent = _call("retrieve payment intent", _client().v1.payment_intents.retrieve, payment_intent_id)
    return payment_of(_plain(intent))


def find_invoice_payments(stripe_customer_id: str, invoice_id: str) -> list[Payment]:
    """The PaymentIntents made for an invoice, oldest attempt first.

    A charge that crashed before we recorded it is found here instead of
    being made again. Stripe lists a customer's PaymentIntents newest first;
    the invoice is in their metadata (Stripe's search API would find it by
    metadata too, but its index lags by up to a minute: too late for a retry
    right after a crash)."""
    found = [payment for payment in _customer_payments(stripe_customer_id) if payment.invoice_id == invoice_id]
    return sorted(found, key=lambda p: (p.attempt or 0, p.created, p.id))


def _customer_payments(stripe_customer_id: str) -> Iterator[Payment]:
    page = _call(
        "list payment intents", _client().v1.payment_intents.list,
        params={"customer": stripe_customer_id, "limit": 100},
    )
    while True:
        for intent in page.data:
            yield payment_of(_plain(intent))
        if not page.has_more or not page.data:
            return
        page = _call(
            "list payment intents", _client().v1.payment_intents.list,
            params={"customer": stripe_customer_id, "limit": 100, "starting_after": page.data[-1]["id"]},
        )


def payment_of(intent: dict) -> Payment:
    """A PaymentIntent (from the API or a webhook event) as a `Payment`."""
    error = intent.get("last_payment_error") or {}
    return Payment(
        id=intent["id"],
        status=intent["status"],
        amount=int(intent["amount"]),
        currency=str(intent["currency"]).upper(),
        customer=_id(intent.get("customer")),
        payment_method=_id(intent.get("payment_method")),
        created=int(intent.get("created") or 0),
        metadata=dict(intent.get("metadata") or {}),
        failure_code=error.get("decline_code") or error.get("code"),
        failure_message=error.get("message"),
        client_secret=intent.get("client_secret"),
    )


def refund(payment_intent_id: str, *, idempotency_key: str, amount: Decimal | None = None,
           currency: str | None = None, metadata: dict[str, str] | None = None) -> Refund:
    """Refund a PaymentIntent, wholly or `amount` of it (major units of
    `currency`). The caller's idempotency key comes from our own ids, so a
    retried refund is one refund on Stripe; `metadata` (our ids) lets
    `find_refunds` find it again where the key is not kept (after 24 h, or
    on localstripe)."""
    params: dict[str, Any] = {"payment_intent": payment_intent_id}
    if amount is not None:
        if currency is None:
            raise ValueError("a partial refund needs its currency")
        params["amount"] = stripe_amount(amount, currency)
    if metadata:
        params["metadata"] = dict(metadata)
    result = _plain(_call("create refund", _client().v1.refunds.create, params=params,
                          options={"idempotency_key": idempotency_key}))
    return _refund(result)


def find_refunds(payment_intent_id: str) -> list[Refund]:
    """The refunds of a PaymentIntent, newest first (a PaymentIntent has a
    handful at most: one page)."""
    listing = _call("list refunds", _client().v1.refunds.list,
                    params={"payment_intent": payment_intent_id, "limit": 100})
    return [_refund(_plain(item)) for item in listing.data]


def _refund(result: dict) -> Refund:
    return Refund(id=result["id"], status=result["status"], amount=int(result["amount"]),
                  payment_intent=_id(result.get("payment_intent")), metadata=dict(result.get("metadata") or {}))


# -- webhooks --------------------------------------------------------------------------


def verify_webhook(payload: bytes, signature: str | None) -> dict:
    """The event Stripe signed, as a plain dict; `WebhookSignatureInvalid`
    when the signature does not match our secret or its timestamp is outside
    the library's tolerance (5 minutes: a replayed old delivery)."""
    import stripe

    if not signature:
        raise WebhookSignatureInvalid("missing Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(payload, signature, config.secret("stripe_webhook_secret"))
    except stripe.SignatureVerificationError:
        raise WebhookSignatureInvalid("the Stripe signature does not match or is too old") from None
    except ValueError:
        # Signed by Stripe but not an event we can read.
        raise WebhookSignatureInvalid("the payload is not a Stripe event") from None
    return _plain(event)
