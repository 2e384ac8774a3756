"""A customer saves a card on the payment page, in a real (headless) browser,
against the local stage: the page loads localstripe's stand-in for
Stripe.js, which confirms the SetupIntent with localstripe directly; the
page then tells the API, and the card shows on the customer.

Chromium is Debian's (`make system-deps`); Playwright only drives it and
never downloads a browser.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from chalicelib.clock import isoformat

from tests.e2e.conftest import ARTIFACTS


def subscribed_customer(merchant) -> tuple[str, str]:
    """A French customer with a subscription and no card yet: (customer id, subscription id)."""
    customer = merchant.post(
        "/customers", json={"name": "Jeanne Martin", "email": "jeanne@example.fr", "country": "FR", "locale": "fr"}
    )
    assert customer.status_code == 201, customer.text
    offer = merchant.post("/offers", json={
        "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
        "interval_count": 1, "components": [{"code": "base", "type": "flat", "amount": "49.00"}],
    })
    assert offer.status_code == 201, offer.text
    subscription = merchant.post(
        "/subscriptions", json={"customer_id": customer.json()["id"], "offer_id": offer.json()["id"]}
    )
    assert subscription.status_code == 201, subscription.text
    return customer.json()["id"], subscription.json()["id"]


def save_card(chromium, url: str, screenshot: str | None = None, offer_name: str = "Clic&O Neksia") -> str:
    """Type a card into the page as a customer would; the confirmation text."""
    page = chromium.new_page(viewport={"width": 480, "height": 860})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        assert page.locator("h1").inner_text() == "Moyen de paiement"
        assert offer_name in page.locator(".charges").inner_text()
        card = page.locator("#card-element")
        card.locator('input[placeholder="number"]').press_sequentially("4242424242424242")
        card.locator('input[placeholder="exp_month"]').press_sequentially("12")
        card.locator('input[placeholder="exp_year"]').press_sequentially("34")
        card.locator('input[placeholder="cvc"]').press_sequentially("123")
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{screenshot}.png"), full_page=True)
        page.locator("#submit").click()
        success = page.locator("#success")
        success.wait_for(state="visible", timeout=15_000)
        if screenshot:
            page.screenshot(path=str(ARTIFACTS / f"{screenshot}-saved.png"), full_page=True)
        assert not errors
        return success.inner_text()
    finally:
        page.close()


def test_a_customer_saves_a_card_on_the_payment_page(new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    customer_id, _ = subscribed_customer(merchant)
    link = merchant.post(f"/customers/{customer_id}/payment-link")
    assert link.status_code == 200, link.text

    confirmation = save_card(chromium, link.json()["url"], screenshot="payment-page")
    assert "4242" in confirmation

    shown = merchant.get(f"/customers/{customer_id}").json()
    assert shown["default_payment_method"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}


def test_a_saved_card_pays_the_first_invoice_of_an_incomplete_subscription(operator, new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    customer_id, subscription_id = subscribed_customer(merchant)
    assert merchant.get(f"/subscriptions/{subscription_id}").json()["status"] == "incomplete"
    # The billing run issues the first invoice; with no card it stays open.
    now = datetime.fromisoformat(operator.get("/_local/clock").json()["now"].replace("Z", "+00:00"))
    moved = operator.post("/_local/clock", json={"now": isoformat(now + timedelta(minutes=16))})
    assert moved.status_code == 200, moved.text
    (first,) = merchant.get("/invoices", params={"subscription_id": subscription_id}).json()["data"]
    assert (first["status"], first["amount_due"]) == ("open", "58.80")

    url = merchant.post(f"/customers/{customer_id}/payment-link").json()["url"]
    save_card(chromium, url)

    deadline = time.monotonic() + 30
    while merchant.get(f"/subscriptions/{subscription_id}").json()["status"] != "active":
        assert time.monotonic() < deadline, "the subscription did not become active"
        time.sleep(0.5)
    paid = merchant.get(f"/invoices/{first['id']}").json()
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == paid["total"] == "58.80" and paid["amount_due"] == "0.00"
