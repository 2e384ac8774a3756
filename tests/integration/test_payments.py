"""Payments through the official stripe library against localstripe, and the
payment link, page and Stripe webhook through the API (moto + localstripe).

Where localstripe differs from Stripe (the code does what Stripe needs):
- a succeeded SetupIntent does not attach its card to the customer on
  localstripe; Stripe does. `attach_default_card` attaches it when it is not
  attached yet, so both end with the card attached and default.
- localstripe never sends `setup_intent.*` or `payment_method.*updated`
  events: these tests sign the payloads themselves, exactly as Stripe does.
- localstripe ignores idempotency keys; the local stand-in
  (infra/local/localstripe_server.py) replays the first answer as Stripe
  does, for the session (Stripe: 24 h), so each test charges invoice ids of
  its own. The retry after a crash finds the charge through
  `find_invoice_payments` (a customer's PaymentIntents, filtered by the
  invoice in their metadata), which holds on both.
- localstripe lists PaymentIntents without any filter; the local stand-in
  (infra/local/localstripe_server.py) adds Stripe's `customer` filter.
- a decline on localstripe carries no `decline_code`: `Declined.decline_code`
  is then the error code (`card_declined`); Stripe gives e.g.
  `generic_decline` for 4000000000000341.
- an off-session charge needing 3-D Secure raises a card error
  `authentication_required` on Stripe and returns a PaymentIntent in
  `requires_action` on localstripe: both are `AuthenticationRequired`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chalicelib import config, payments
from chalicelib.clock import FixedClock, use_clock

CARD_OK = "4242424242424242"
CARD_DECLINED_ON_CHARGE = "4000000000000341"
CARD_NEEDS_3DS = "4000002760003184"


def stripe_client():
    """The official library, as the browser's Stripe.js or Stripe's dashboard would act."""
    import stripe

    base = config.settings().stripe_api_base
    return stripe.StripeClient(os.environ["STRIPE_SECRET_KEY"], base_addresses={"api": base})


def new_card(number: str, exp_month: int = 12, exp_year: int = 2030) -> str:
    method = stripe_client().v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"}}
    )
    return method["id"]


def confirm_in_browser(client_secret: str, number: str = CARD_OK, exp_month: int = 12, exp_year: int = 2030) -> str:
    """What Stripe.js does on the page: confirm the SetupIntent with a card."""
    setup_intent_id = client_secret.split("_secret_")[0]
    stripe_client().v1.setup_intents.confirm(
        setup_intent_id, params={"payment_method": new_card(number, exp_month, exp_year)}
    )
    return setup_intent_id


def stripe_customer_with_card(number: str, merchant_id: str = "mer_test", customer_id: str | None = None):
    """A new Stripe customer with a card attached: our customer id is new on
    each call, or the idempotency key would give back an earlier test's."""
    stripe_customer_id = payments.ensure_customer(
        None, merchant_id=merchant_id, customer_id=customer_id or f"cus_{uuid.uuid4().hex[:12]}",
        name="Jeanne Martin", email="jeanne@example.fr",
    )
    method = new_card(number)
    stripe_client().v1.payment_methods.attach(method, params={"customer": stripe_customer_id})
    return stripe_customer_id, method


def sign(payload: bytes, *, secret: str | None = None, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    secret = secret or os.environ["STRIPE_WEBHOOK_SECRET"]
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps({
        "id": event_id or f"evt_{os.urandom(8).hex()}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "api_version": "2017-08-15",
        "livemode": False,
        "data": {"object": obj},
    }).encode()


def deliver(api, payload: bytes, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature == "sign":
        signature = sign(payload)
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return api.as_key(None).request("POST", "/webhooks/stripe", headers=headers, raw=payload)


# -- the gateway on its own ------------------------------------------------------------


def test_setup_intent_card_becomes_the_default(localstripe):
    stripe_customer_id = payments.ensure_customer(
        None, merchant_id="mer_a", customer_id="cus_a", name="Jeanne", email="jeanne@example.fr", locale="fr-FR"
    )
    assert payments.ensure_customer(
        stripe_customer_id, merchant_id="mer_a", customer_id="cus_a", name="Jeanne", email=None
    ) == stripe_customer_id
    intent = payments.create_setup_intent(stripe_customer_id, merchant_id="mer_a", customer_id="cus_a")
    assert intent.status == "requires_payment_method" and intent.client_secret.startswith(intent.id)

    confirm_in_browser(intent.client_secret, CARD_OK, 11, 2031)
    seen = payments.retrieve_setup_intent(intent.id)
    assert seen.status == "succeeded" and seen.customer == stripe_customer_id
    assert seen.metadata == {"merchant_id": "mer_a", "customer_id": "cus_a"}

    card = payments.attach_default_card(stripe_customer_id, seen.payment_method)
    assert card.summary() == {"brand": "visa", "last4": "4242", "exp_month": 11, "exp_year": 2031}
    # Again (the webhook after the page): same card, nothing attached twice.
    assert payments.attach_default_card(stripe_customer_id, seen.payment_method) == card
    customer = payments.retrieve_customer(stripe_customer_id)
    assert customer.default_payment_method == seen.payment_method
    assert (customer.merchant_id, customer.customer_id) == ("mer_a", "cus_a")
    assert payments.retrieve_card(seen.payment_method) == card


def test_a_card_of_another_customer_is_refused(localstripe):
    owner, method = stripe_customer_with_card(CARD_OK)
    other, _ = stripe_customer_with_card(CARD_OK)
    with pytest.raises(payments.StripeInvalidRequest):
        payments.attach_default_card(other, method)


def test_charge_in_minor_units_with_the_invoice_in_metadata(localstripe):
    stripe_customer_id, method = stripe_customer_with_card(CARD_OK)
    payment = payments.charge_invoice(
        invoice_id="inv_eur", merchant_id="mer_test", attempt=1, amount=Decimal("519.12"), currency="EUR",
        stripe_customer_id=stripe_customer_id, payment_method_id=method,
    )
    assert payment.status == "succeeded"
    assert (payment.amount, payment.currency) == (51912, "EUR")
    assert payment.metadata == {"invoice_id": "inv_eur", "merchant_id": "mer_test", "attempt": "1"}
    assert (payment.invoice_id, payment.attempt) == ("inv_eur", 1)
    assert payments.retrieve_payment(payment.id) == payment

    yen = payments.charge_invoice(
        invoice_id="inv_jpy", merchant_id="mer_test", attempt=2, amount=Decimal("1250"), currency="JPY",
        stripe_customer_id=stripe_customer_id, payment_method_id=method,
    )
    assert (yen.amount, yen.currency) == (1250, "JPY")
    assert payments.charge_idempotency_key("inv_jpy", 2) == "invoice-inv_jpy-attempt-2"


def test_a_charge_made_before_a_crash_is_found_again(localstripe):
    stripe_customer_id, method = stripe_customer_with_card(CARD_OK)
    charge = dict(merchant_id="mer_test", currency="EUR", stripe_customer_id=stripe_customer_id,
                  payment_method_id=method)
    first = payments.charge_invoice(invoice_id="inv_crash", attempt=1, amount=Decimal("10.00"), **charge)
    payments.charge_invoice(invoice_id="inv_other", attempt=1, amount=Decimal("20.00"), **charge)
    second = payments.charge_invoice(invoice_id="inv_crash", attempt=2, amount=Decimal("10.00"), **charge)

    found = payments.find_invoice_payments(stripe_customer_id, "inv_crash")
    assert [(p.id, p.attempt) for p in found] == [(first.id, 1), (second.id, 2)]
    assert payments.find_invoice_payments(stripe_customer_id, "inv_never") == []


def test_more_payments_than_one_page_are_all_searched(localstripe, monkeypatch):
    stripe_customer_id, method = stripe_customer_with_card(CARD_OK)
    for attempt in (1, 2, 3):
        payments.charge_invoice(invoice_id=f"inv_page{attempt}", merchant_id="mer_test", attempt=attempt,
                                amount=Decimal("1.00"), currency="EUR", stripe_customer_id=stripe_customer_id,
                                payment_method_id=method)
    calls = []
    original = payments._client().v1.payment_intents.list

    def small_pages(params=None, **kw):
        calls.append(params)
        return original(params={**params, "limit": 1}, **kw)

    monkeypatch.setattr(payments._client().v1.payment_intents, "list", small_pages)
    assert [p.invoice_id for p in payments.find_invoice_payments(stripe_customer_id, "inv_page1")] == ["inv_page1"]
    assert len(calls) == 3


def test_a_declined_charge_names_the_decline(localstripe):
    stripe_customer_id, method = stripe_customer_with_card(CARD_DECLINED_ON_CHARGE)
    with pytest.raises(payments.Declined) as declined:
        payments.charge_invoice(
            invoice_id="inv_declined", merchant_id="mer_test", attempt=1, amount=Decimal("49.00"),
            currency="EUR", stripe_customer_id=stripe_customer_id, payment_method_id=method,
        )
    assert declined.value.decline_code == "card_declined"
    assert declined.value.message and not declined.value.retryable
    (failed,) = payments.find_invoice_payments(stripe_customer_id, "inv_declined")
    assert failed.status == "requires_payment_method" and failed.failure_code == "card_declined"


def test_a_card_that_needs_3d_secure_requires_authentication(localstripe):
    stripe_customer_id, method = stripe_customer_with_card(CARD_NEEDS_3DS)
    with pytest.raises(payments.AuthenticationRequired) as required:
        payments.charge_invoice(
            invoice_id="inv_3ds", merchant_id="mer_test", attempt=1, amount=Decimal("49.00"),
            currency="EUR", stripe_customer_id=stripe_customer_id, payment_method_id=method,
        )
    assert required.value.payment_intent_id.startswith("pi_")
    assert payments.retrieve_payment(required.value.payment_intent_id).status == "requires_action"


def test_refund_whole_or_part(localstripe):
    stripe_customer_id, method = stripe_customer_with_card(CARD_OK)
    payment = payments.charge_invoice(invoice_id="inv_refund", merchant_id="mer_test", attempt=1,
                                      amount=Decimal("30.00"), currency="EUR",
                                      stripe_customer_id=stripe_customer_id, payment_method_id=method)
    part = payments.refund(payment.id, idempotency_key="refund-inv_refund-1", amount=Decimal("12.34"), currency="EUR")
    assert (part.status, part.amount, part.payment_intent) == ("succeeded", 1234, payment.id)
    whole = payments.refund(payment.id, idempotency_key="refund-inv_refund-2")
    assert whole.amount == 3000


def test_a_request_stripe_refuses_is_an_alarm(localstripe):
    from chalicelib.observability import metrics

    with pytest.raises(payments.StripeInvalidRequest) as refused:
        payments.create_setup_intent("not-a-customer", merchant_id="mer_x", customer_id="cus_x")
    assert refused.value.status == 500 and not refused.value.retryable
    assert "StripeInvalidRequest" in metrics.metric_set
    metrics.clear_metrics()
    with pytest.raises(payments.NoSuchObject):
        payments.retrieve_setup_intent("seti_doesnotexist")


class _Failing(BaseHTTPRequestHandler):
    status = 500
    requests = 0

    def _answer(self):
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"type": "api_error", "message": "down"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_stripe(monkeypatch):
    """Point the client at a local server answering every request with `status`."""

    def start(status: int) -> type[_Failing]:
        handler = type("Handler", (_Failing,), {"status": status, "requests": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{server.server_port}")
        config.settings.cache_clear()
        return handler

    servers = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    monkeypatch.undo()
    config.settings.cache_clear()


def _charge():
    return payments.charge_invoice(invoice_id="inv_net", merchant_id="mer_test", attempt=1, amount=Decimal("5.00"),
                                   currency="EUR", stripe_customer_id="cus_x", payment_method_id="pm_x")


def test_stripe_errors_are_retried_a_bounded_number_of_times(failing_stripe):
    handler = failing_stripe(500)
    started = time.monotonic()
    with pytest.raises(payments.Unavailable) as unavailable:
        _charge()
    assert unavailable.value.retryable and unavailable.value.status == 503
    assert handler.requests == 1 + payments.MAX_NETWORK_RETRIES
    assert time.monotonic() - started < 10


def test_rate_limiting_is_left_to_the_caller(failing_stripe):
    handler = failing_stripe(429)
    with pytest.raises(payments.RateLimited) as limited:
        _charge()
    assert limited.value.retryable
    assert handler.requests == 1  # Stripe's library does not retry a 429 by itself


def test_an_unreachable_stripe_is_unavailable(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{closed_port}")
    config.settings.cache_clear()
    try:
        with pytest.raises(payments.Unavailable):
            _charge()
    finally:
        monkeypatch.undo()
        config.settings.cache_clear()


# -- the payment link and page -------------------------------------------------------------


@pytest.fixture
def customer(merchant, localstripe):
    def create(**fields):
        body = {"name": "Jeanne Martin", "email": "jeanne@example.fr", "country": "FR", **fields}
        response = merchant.post("/customers", body)
        assert response.status == 201, response
        return response.json

    return create


class Page:
    """An HTML answer: status, headers by lower-case name, text."""

    def __init__(self, response):
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.headers.items()}
        body = response.json
        self.html = body.decode() if isinstance(body, bytes) else body if isinstance(body, str) else json.dumps(body)


def open_page(api, token: str, **kw) -> Page:
    return Page(api.as_key(None).get(f"/pay/{token}", **kw))


def page_config(html: str) -> dict:
    start = html.index('<script type="application/json" id="pay-config">') + len(
        '<script type="application/json" id="pay-config">'
    )
    return json.loads(html[start:html.index("</script>", start)])


def token_of(link: dict) -> str:
    return link["url"].rsplit("/pay/", 1)[1]


def test_a_payment_link_is_a_signed_expiring_page_url(merchant, new_merchant, customer):
    now = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
    use_clock(FixedClock(now))
    try:
        cus = customer()
        response = merchant.post(f"/customers/{cus['id']}/payment-link")
        assert response.status == 200, response
        assert response.json["expires_at"] == "2026-11-27T09:30:00Z"
        assert response.json["url"].startswith(f"{config.settings().public_base_url}/pay/")
        assert len(token_of(response.json)) < 120
        assert new_merchant(name="Autre").post(f"/customers/{cus['id']}/payment-link").status == 404
        assert merchant.post("/customers/cus_nope/payment-link").status == 404
        assert merchant.as_key(None).post(f"/customers/{cus['id']}/payment-link").status == 401
    finally:
        use_clock(None)


def test_the_page_speaks_the_customers_language_and_loads_the_stand_in(merchant, customer, localstripe):
    cus = customer(locale="fr")
    link = merchant.post(f"/customers/{cus['id']}/payment-link").json
    page = open_page(merchant, token_of(link))
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.html
    assert '<html lang="fr">' in html and "Enregistrer la carte" in html
    assert "Optique Durand" in html
    assert f'src="{localstripe}/js.stripe.com/v3/"' in html
    settings = page_config(html)
    assert settings["publishableKey"].startswith("pk_") and settings["clientSecret"].startswith("seti_")

    english = customer(name="John Smith", email="john@example.com", country="GB", locale="en")
    link = merchant.post(f"/customers/{english['id']}/payment-link").json
    html = open_page(merchant, token_of(link)).html
    assert '<html lang="en">' in html and "Save card" in html


def test_a_tampered_or_expired_link_is_a_readable_page(merchant, customer):
    cus = customer()
    link = merchant.post(f"/customers/{cus['id']}/payment-link").json
    token = token_of(link)
    public = merchant.as_key(None)
    other = customer(name="Paul", email="paul@example.fr")
    tampered = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # signature
        token.replace(cus["id"], other["id"]),  # someone else
        "not-a-token",
    ]
    for bad in tampered:
        page = open_page(merchant, bad, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
        assert page.status == 400, bad
        assert page.headers["content-type"].startswith("text/html")
        assert "Lien invalide" in page.html and "Traceback" not in page.html
        assert public.post(f"/pay/{bad}/complete", {"setup_intent": "seti_x"}).status == 400

    use_clock(FixedClock(datetime.now(timezone.utc) + timedelta(days=7, seconds=1)))
    try:
        page = open_page(merchant, token)
        assert page.status == 410 and "Link expired" in page.html
        complete = public.post(f"/pay/{token}/complete", {"setup_intent": "seti_x"})
        assert complete.status == 410 and complete.json["error"]["code"] == "payment_link_expired"
    finally:
        use_clock(None)


def test_completing_the_page_makes_the_card_the_default(merchant, customer):
    cus = customer()
    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    public = merchant.as_key(None)
    settings = page_config(open_page(merchant, token).html)

    unconfirmed = public.post(f"/pay/{token}/complete", {"setup_intent": settings["clientSecret"].split("_secret_")[0]})
    assert unconfirmed.status == 409 and unconfirmed.json["error"]["code"] == "setup_intent_not_succeeded"

    setup_intent = confirm_in_browser(settings["clientSecret"], CARD_OK, 8, 2029)
    done = public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    card = {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2029}
    assert done.status == 200 and done.json == {"default_payment_method": card}
    assert merchant.get(f"/customers/{cus['id']}").json["default_payment_method"] == card
    again = public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert again.status == 200 and again.json == done.json

    from chalicelib.store import stripe_events

    assert stripe_events.card_setup_done(merchant.merchant["id"], setup_intent).completed_by == "page"


def test_the_page_never_completes_another_customers_card(merchant, customer):
    jeanne, paul = customer(), customer(name="Paul", email="paul@example.fr")
    jeanne_token = token_of(merchant.post(f"/customers/{jeanne['id']}/payment-link").json)
    paul_token = token_of(merchant.post(f"/customers/{paul['id']}/payment-link").json)
    public = merchant.as_key(None)
    pauls_secret = page_config(open_page(merchant, paul_token).html)["clientSecret"]
    setup_intent = confirm_in_browser(pauls_secret)

    stolen = public.post(f"/pay/{jeanne_token}/complete", {"setup_intent": setup_intent})
    assert stolen.status == 400 and stolen.json["error"]["param"] == "setup_intent"
    assert merchant.get(f"/customers/{jeanne['id']}").json["default_payment_method"] is None
    for body in ({"setup_intent": "seti_unknown"}, {"setup_intent": "pm_123"}, {"setup_intent": 3}, {}):
        response = public.post(f"/pay/{jeanne_token}/complete", body)
        assert response.status == 400 and response.json["error"]["param"] == "setup_intent", body


# -- the webhook ------------------------------------------------------------------------------


def test_only_events_signed_by_stripe_within_the_tolerance_are_read(merchant):
    payload = event("customer.created", {"id": "cus_x", "object": "customer"})
    assert deliver(merchant, payload).status == 200
    assert deliver(merchant, payload, sign(payload, secret="whsec_forged")).status == 400
    assert deliver(merchant, payload, sign(payload, timestamp=int(time.time()) - 600)).status == 400
    assert deliver(merchant, payload, None).status == 400
    changed = payload.replace(b"cus_x", b"cus_y")
    refused = deliver(merchant, changed, sign(payload))
    assert refused.status == 400 and refused.json["error"]["code"] == "invalid_signature"
    unknown = deliver(merchant, event("charge.dispute.created", {"id": "dp_1"}))
    assert unknown.status == 200 and unknown.json["handled"] is False


def _customer_with_page_card(merchant, customer, exp_month=12, exp_year=2030):
    cus = customer()
    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    secret = page_config(open_page(merchant, token).html)["clientSecret"]
    setup_intent = confirm_in_browser(secret, CARD_OK, exp_month, exp_year)
    return cus, token, setup_intent


def test_setup_intent_succeeded_sets_the_card_once_whichever_comes_first(merchant, customer):
    cus, token, setup_intent = _customer_with_page_card(merchant, customer, 3, 2032)
    intent = stripe_client().v1.setup_intents.retrieve(setup_intent).to_dict()
    payload = event("setup_intent.succeeded", intent)
    first = deliver(merchant, payload)
    assert first.status == 200 and first.json["handled"] is True
    card = {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2032}
    assert merchant.get(f"/customers/{cus['id']}").json["default_payment_method"] == card

    # The page's /complete comes second: the same card, nothing done again.
    done = merchant.as_key(None).post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    assert done.status == 200 and done.json["default_payment_method"] == card
    from chalicelib.store import stripe_events

    assert stripe_events.card_setup_done(merchant.merchant["id"], setup_intent).completed_by == "webhook"
    duplicate = deliver(merchant, payload)
    assert duplicate.status == 200 and duplicate.json.get("duplicate") is True


def test_the_card_updater_records_the_new_expiry_and_a_redelivery_changes_nothing(merchant, customer):
    cus, token, setup_intent = _customer_with_page_card(merchant, customer, 12, 2026)
    merchant.as_key(None).post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    method_id = stripe_client().v1.setup_intents.retrieve(setup_intent)["payment_method"]
    method = stripe_client().v1.payment_methods.retrieve(method_id).to_dict()

    renewed = {**method, "card": {**method["card"], "exp_month": 12, "exp_year": 2029}}
    first = event("payment_method.automatically_updated", renewed)
    assert deliver(merchant, first).status == 200
    shown = merchant.get(f"/customers/{cus['id']}").json["default_payment_method"]
    assert (shown["exp_month"], shown["exp_year"]) == (12, 2029)

    later = {**method, "card": {**method["card"], "exp_month": 6, "exp_year": 2030}}
    assert deliver(merchant, event("payment_method.updated", later)).status == 200
    again = deliver(merchant, first)  # Stripe delivers the first event once more
    assert again.status == 200 and again.json["duplicate"] is True
    shown = merchant.get(f"/customers/{cus['id']}").json["default_payment_method"]
    assert (shown["exp_month"], shown["exp_year"]) == (6, 2030)

    # A card that is not the customer's default changes nothing.
    other = stripe_client().v1.payment_methods.retrieve(new_card(CARD_OK, 1, 2035)).to_dict()
    stripe_client().v1.payment_methods.attach(other["id"], params={"customer": method["customer"]})
    other["customer"] = method["customer"]
    assert deliver(merchant, event("payment_method.automatically_updated", other)).status == 200
    assert merchant.get(f"/customers/{cus['id']}").json["default_payment_method"]["exp_year"] == 2030


def test_a_deleted_stripe_customer_takes_the_card_with_it(merchant, customer):
    cus, token, setup_intent = _customer_with_page_card(merchant, customer)
    merchant.as_key(None).post(f"/pay/{token}/complete", {"setup_intent": setup_intent})
    stripe_customer_id = stripe_client().v1.setup_intents.retrieve(setup_intent)["customer"]
    deleted = stripe_client().v1.customers.retrieve(stripe_customer_id).to_dict()
    stripe_client().v1.customers.delete(stripe_customer_id)

    assert deliver(merchant, event("customer.deleted", {**deleted, "deleted": True})).status == 200
    assert merchant.get(f"/customers/{cus['id']}").json["default_payment_method"] is None
    # The next visit of the page makes a new Stripe customer.
    secret = page_config(open_page(merchant, token).html)["clientSecret"]
    new_intent = stripe_client().v1.setup_intents.retrieve(secret.split("_secret_")[0])
    assert new_intent["customer"] not in (None, stripe_customer_id)


def test_the_page_shows_what_the_card_will_pay_for(merchant, customer):
    offer = merchant.post("/offers", {
        "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
        "interval_count": 1, "components": [{"code": "base", "type": "flat", "amount": "49.00"}],
    })
    assert offer.status == 201, offer
    cus = customer(locale="fr")
    subscription = merchant.post("/subscriptions", {"customer_id": cus["id"], "offer_id": offer.json["id"]})
    assert subscription.status == 201, subscription
    # The first invoice is open (no card yet): 49.00 + 20 % VAT, due now.
    [first] = merchant.get(f"/invoices?subscription_id={subscription.json['id']}").json["data"]
    assert (first["status"], first["amount_due"]) == ("open", "58.80")
    upcoming = merchant.get(f"/subscriptions/{subscription.json['id']}/upcoming-invoice").json

    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    html = open_page(merchant, token).html
    assert "Ce qui sera prélevé" in html
    assert "Clic&amp;O Neksia" in html
    assert "58,80 EUR <span class=\"muted\">à régler maintenant" in html
    # Then the next invoice, on its date.
    assert upcoming["amount_due"] == "58.80" and html.count("58,80 EUR") == 2
    assert f"le {int(upcoming['billing_at'][8:10])} " in html


def test_the_page_asks_to_come_back_when_stripe_is_down(merchant, customer, failing_stripe):
    cus = customer()
    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    failing_stripe(503)
    page = open_page(merchant, token)
    assert page.status == 503 and page.headers["content-type"].startswith("text/html")
    assert "temporarily unavailable" in page.html and "Traceback" not in page.html


def test_an_older_setup_delivered_late_never_takes_the_default_back(merchant, customer):
    cus = customer()
    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    older = confirm_in_browser(page_config(open_page(merchant, token).html)["clientSecret"], CARD_OK, 1, 2030)
    newer = confirm_in_browser(page_config(open_page(merchant, token).html)["clientSecret"], CARD_OK, 2, 2031)
    assert merchant.as_key(None).post(f"/pay/{token}/complete", {"setup_intent": newer}).status == 200

    # The older SetupIntent's webhook, redelivered after the newer card was
    # set up. localstripe stamps both in the same second (a tie goes to the
    # later arrival, see the next test); a customer takes longer than that.
    late_intent = stripe_client().v1.setup_intents.retrieve(older).to_dict()
    late_intent["created"] -= 60
    late = deliver(merchant, event("setup_intent.succeeded", late_intent))
    assert late.status == 200
    shown = merchant.get(f"/customers/{cus['id']}").json["default_payment_method"]
    assert (shown["exp_month"], shown["exp_year"]) == (2, 2031)
    stripe_customer = stripe_client().v1.setup_intents.retrieve(newer)["customer"]
    default = stripe_client().v1.customers.retrieve(stripe_customer)["invoice_settings"]["default_payment_method"]
    assert default == stripe_client().v1.setup_intents.retrieve(newer)["payment_method"]


def test_two_setups_of_the_same_second_go_to_the_later_arrival(merchant, customer):
    cus = customer()
    token = token_of(merchant.post(f"/customers/{cus['id']}/payment-link").json)
    first = confirm_in_browser(page_config(open_page(merchant, token).html)["clientSecret"], CARD_OK, 1, 2030)
    second = confirm_in_browser(page_config(open_page(merchant, token).html)["clientSecret"], CARD_OK, 2, 2031)
    same_second = stripe_client().v1.setup_intents.retrieve(first)["created"]
    for setup_intent, created in ((first, same_second), (second, same_second)):
        intent = stripe_client().v1.setup_intents.retrieve(setup_intent).to_dict()
        intent["created"] = created
        assert deliver(merchant, event("setup_intent.succeeded", intent)).status == 200
    shown = merchant.get(f"/customers/{cus['id']}").json["default_payment_method"]
    assert (shown["exp_month"], shown["exp_year"]) == (2, 2031)


@pytest.mark.parametrize("event_type, obj, param", [
    ("payment_intent.succeeded", {"id": "pi_1", "amount": 1200, "currency": "eur"}, "data.object.status"),
    ("payment_intent.payment_failed", {"id": "pi_1", "status": "requires_payment_method", "currency": "eur"},
     "data.object.amount"),
    ("setup_intent.succeeded", {"status": "succeeded"}, "data.object.id"),
    ("payment_method.automatically_updated", {"id": "pm_1", "type": "card", "customer": "cus_1",
                                              "card": {"last4": "4242", "exp_month": 12}}, "data.object.card.exp_year"),
    ("customer.deleted", "cus_1", "data.object"),
])
def test_a_signed_event_without_a_field_we_read_is_a_400_naming_it(merchant, event_type, obj, param):
    from chalicelib.services.stripe_webhooks import HANDLERS, REQUIRED

    assert set(REQUIRED) == set(HANDLERS)
    payload = event(event_type, obj)
    refused = deliver(merchant, payload)
    assert refused.status == 400, refused
    assert refused.json["error"]["param"] == param and refused.json["error"]["code"] == "invalid_request"


def test_a_refused_incomplete_event_is_not_claimed(merchant):
    incomplete = event("customer.deleted", {"object": "customer"}, event_id="evt_incomplete")
    assert deliver(merchant, incomplete).status == 400
    complete = event("customer.deleted", {"id": "cus_gone", "object": "customer"}, event_id="evt_incomplete")
    answer = deliver(merchant, complete)
    assert answer.status == 200 and answer.json["handled"] is True


def test_a_payment_method_that_is_not_a_card_needs_no_card(merchant):
    sepa = {"id": "pm_sepa", "type": "sepa_debit", "customer": "cus_1"}
    answer = deliver(merchant, event("payment_method.updated", sepa))
    assert answer.status == 200 and answer.json["handled"] is True
