"""Checkout sessions: the merchant's API, the page's completion, once.

The browser's part (Stripe.js confirming the SetupIntent with localstripe)
is done here by the stripe library, as test_payments.confirm_in_browser does
for the payment page; tests/e2e/test_checkout.py drives a real Chromium."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from chalicelib.clock import FixedClock, clock as platform_clock, use_clock
from tests.integration.test_payments import CARD_DECLINED_ON_CHARGE, CARD_OK, Page, confirm_in_browser

OFFER = {"code": "neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
         "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}]}
CUSTOMER = {"name": "Jeanne Martin", "email": "jeanne@labo-martin.fr", "country": "FR", "locale": "fr"}


@pytest.fixture
def offer(merchant, localstripe):
    response = merchant.post("/offers", OFFER)
    assert response.status == 201, response
    return response.json


def session_body(offer, **fields) -> dict:
    return {"offer_id": offer["id"], "customer": CUSTOMER, "success_url": "https://shop.example/thanks",
            "cancel_url": "https://shop.example/offers", **fields}


def new_session(merchant, offer, **fields) -> dict:
    response = merchant.post("/checkout-sessions", session_body(offer, **fields))
    assert response.status == 201, response
    return response.json


def token_of(session: dict) -> str:
    return session["url"].rsplit("/checkout/", 1)[1]


def page_config(html: str) -> dict:
    start = html.index('<script type="application/json" id="checkout-config">')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])


def open_checkout(merchant, token: str, **kw) -> Page:
    return Page(merchant.as_key(None).get(f"/checkout/{token}", **kw))


def pay(merchant, token: str, number: str = CARD_OK) -> dict:
    """What the page does: confirm a fresh SetupIntent with the card, then tell the API."""
    client_secret = page_config(open_checkout(merchant, token).html)["clientSecret"]
    setup_intent = confirm_in_browser(client_secret, number)
    response = merchant.as_key(None).post(f"/checkout/{token}/complete", {"setup_intent": setup_intent})
    assert response.status == 200, response
    return response.json


@pytest.mark.parametrize("change, param", [
    ({"success_url": None}, "success_url"),
    ({"success_url": "javascript:alert(1)"}, "success_url"),
    ({"cancel_url": "/relative"}, "cancel_url"),
    ({"customer_id": "cus_x"}, "customer"),
    ({"customer": None}, "customer"),
    ({"currency": "EURO"}, "currency"),
    ({"currency": "USD"}, "currency"),
    ({"options": ["gold"]}, "options[0]"),
    ({"customer": {**CUSTOMER, "country": "France"}}, "customer.country"),
    ({"customer": {**CUSTOMER, "email": "not-an-address"}}, "customer.email"),
    ({"locale": "french"}, "locale"),
    ({"colour": "blue"}, "colour"),
])
def test_a_bad_session_is_a_400_naming_the_field(merchant, offer, change, param):
    body = {k: v for k, v in {**session_body(offer), **change}.items() if v is not None}
    response = merchant.post("/checkout-sessions", body)
    assert response.status == 400, response
    assert response.json["error"]["param"] == param, response


def test_objects_the_merchant_does_not_have_are_404_naming_the_field(merchant, new_merchant, offer):
    other = new_merchant(name="Autre")
    assert other.post("/checkout-sessions", session_body(offer)).json["error"]["param"] == "offer_id"
    body = {k: v for k, v in session_body(offer, customer_id="cus_unknown").items() if k != "customer"}
    response = merchant.post("/checkout-sessions", body)
    assert (response.status, response.json["error"]["param"]) == (404, "customer_id"), response
    assert other.get(f"/checkout-sessions/{new_session(merchant, offer)['id']}").status == 404


def test_a_session_makes_nothing_until_the_card_is_confirmed(merchant, offer):
    session = new_session(merchant, offer, options=["express"])
    assert session["status"] == "open" and session["url"].startswith("http")
    assert (session["customer_id"], session["subscription_id"]) == (None, None)
    shown = merchant.get(f"/checkout-sessions/{session['id']}").json
    assert shown["status"] == "open" and shown["url"] is None

    page = open_checkout(merchant, token_of(session))
    assert page.status == 200, page.html[:500]
    # The offer, its price and the tax of the customer's country, in French.
    assert "Clic&amp;O Neksia" in page.html and "4h on-site" in page.html
    assert "79,00" in page.html and "TVA 20" in page.html and "94,80" in page.html
    assert "1,20" in page.html  # the metered price, billed later
    assert page.headers["referrer-policy"] == "no-referrer"
    assert merchant.get("/customers?email=jeanne@labo-martin.fr").json["data"] == []
    assert merchant.get("/subscriptions").json["data"] == []


def test_a_good_card_makes_one_customer_one_subscription_and_a_paid_first_invoice(merchant, offer):
    session = new_session(merchant, offer)
    outcome = pay(merchant, token_of(session))
    assert outcome["status"] == "complete", outcome
    assert outcome["redirect_url"] == f"https://shop.example/thanks?session_id={session['id']}"

    shown = merchant.get(f"/checkout-sessions/{session['id']}").json
    assert shown["status"] == "complete" and shown["completed_at"]
    customer = merchant.get(f"/customers/{shown['customer_id']}").json
    assert customer["email"] == CUSTOMER["email"] and customer["default_payment_method"]["last4"] == "4242"
    (subscription,) = customer["subscriptions"]
    assert subscription["id"] == shown["subscription_id"] and subscription["status"] == "active"
    (invoice,) = merchant.get(f"/invoices?subscription_id={subscription['id']}").json["data"]
    assert (invoice["status"], invoice["total"], invoice["amount_paid"]) == ("paid", "58.80", "58.80")

    # A retried request, a second tab: the same answer, nothing more made.
    again = merchant.as_key(None).post(f"/checkout/{token_of(session)}/complete", {})
    assert again.json == outcome
    assert len(merchant.get("/subscriptions").json["data"]) == 1
    assert "Votre souscription est enregistrée" in open_checkout(merchant, token_of(session)).html


def test_a_declined_card_then_a_good_one_reuses_the_same_customer_and_subscription(merchant, offer):
    session = new_session(merchant, offer)
    token = token_of(session)
    refused = pay(merchant, token, CARD_DECLINED_ON_CHARGE)
    assert refused["status"] == "payment_failed" and refused["code"], refused
    shown = merchant.get(f"/checkout-sessions/{session['id']}").json
    assert shown["status"] == "open"

    accepted = pay(merchant, token, CARD_OK)
    assert accepted["status"] == "complete", accepted
    customers = merchant.get(f"/customers?email={CUSTOMER['email']}").json["data"]
    assert len(customers) == 1
    (subscription,) = merchant.get("/subscriptions").json["data"]
    assert subscription["status"] == "active" and subscription["customer_id"] == customers[0]["id"]
    (invoice,) = merchant.get(f"/invoices?subscription_id={subscription['id']}").json["data"]
    assert invoice["status"] == "paid" and len(invoice["payment_attempts"]) == 2


def test_a_card_refused_at_setup_makes_nothing_and_the_page_gets_a_fresh_intent(merchant, offer):
    session = new_session(merchant, offer)
    token = token_of(session)
    client_secret = page_config(open_checkout(merchant, token).html)["clientSecret"]
    with pytest.raises(Exception):
        confirm_in_browser(client_secret, "4000000000000002")
    fresh = merchant.as_key(None).post(f"/checkout/{token}/intent", {})
    assert fresh.status == 200 and fresh.json["client_secret"] != client_secret
    assert merchant.get("/subscriptions").json["data"] == []
    assert pay(merchant, token)["status"] == "complete"


def test_an_existing_customer_subscribes_through_a_checkout(merchant, offer):
    customer = merchant.post("/customers", {**CUSTOMER, "email": "deja@client.fr"}).json
    body = {k: v for k, v in session_body(offer, customer_id=customer["id"]).items() if k != "customer"}
    session = merchant.post("/checkout-sessions", body).json
    assert session["customer_id"] == customer["id"]
    assert pay(merchant, token_of(session))["status"] == "complete"
    assert merchant.get(f"/customers/{customer['id']}").json["subscriptions"][0]["status"] == "active"


def test_concurrent_completions_make_one_of_everything(merchant, offer):
    session = new_session(merchant, offer)
    token = token_of(session)
    client_secret = page_config(open_checkout(merchant, token).html)["clientSecret"]
    setup_intent = confirm_in_browser(client_secret, CARD_OK)
    public = merchant.as_key(None)
    answers, errors = [], []

    def submit():
        try:
            answers.append(public.post(f"/checkout/{token}/complete", {"setup_intent": setup_intent}))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(a.status == 200 for a in answers), answers
    statuses = [a.json["status"] for a in answers]
    assert "complete" in statuses and set(statuses) <= {"complete", "processing"}, statuses
    assert len(merchant.get(f"/customers?email={CUSTOMER['email']}").json["data"]) == 1
    (subscription,) = merchant.get("/subscriptions").json["data"]
    (invoice,) = merchant.get(f"/invoices?subscription_id={subscription['id']}").json["data"]
    assert invoice["status"] == "paid" and len(invoice["payment_attempts"]) == 1


def test_a_setup_intent_of_another_session_is_refused(merchant, offer):
    first, second = new_session(merchant, offer), new_session(merchant, offer)
    client_secret = page_config(open_checkout(merchant, token_of(first)).html)["clientSecret"]
    setup_intent = confirm_in_browser(client_secret, CARD_OK)
    response = merchant.as_key(None).post(f"/checkout/{token_of(second)}/complete", {"setup_intent": setup_intent})
    assert (response.status, response.json["error"]["param"]) == (400, "setup_intent"), response
    assert merchant.get("/subscriptions").json["data"] == []


def test_an_expired_session_is_refused_and_leaves_nothing(merchant, offer):
    now = platform_clock().now()
    session = new_session(merchant, offer)
    use_clock(FixedClock(now + timedelta(hours=24, seconds=1)))
    try:
        assert merchant.get(f"/checkout-sessions/{session['id']}").json["status"] == "expired"
        page = open_checkout(merchant, token_of(session))
        assert page.status == 410 and "expiré" in page.html
        response = merchant.as_key(None).post(f"/checkout/{token_of(session)}/complete", {})
        assert response.status == 410 and response.json["error"]["code"] == "link_expired"
    finally:
        use_clock(None)
    assert merchant.get("/subscriptions").json["data"] == []


def test_a_tampered_link_is_a_404_page(merchant, offer):
    token = token_of(new_session(merchant, offer))
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "cs_x", token + "x"):
        page = open_checkout(merchant, forged)
        assert page.status == 404 and ("Lien introuvable" in page.html or "Link not found" in page.html), forged
