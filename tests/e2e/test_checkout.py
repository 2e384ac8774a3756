"""The hosted checkout in Debian's Chromium on the local stage: the page
loads localstripe's stand-in for Stripe.js, which confirms the SetupIntent
(and, for a card that asks for it, 3-D Secure in its own dialog) with
localstripe directly; the page tells the API, which makes the customer and
the subscription and charges the first invoice, then sends the browser to
the merchant's success_url. Screenshots in test-artifacts/checkout-*.png."""
from __future__ import annotations

from tests.e2e.conftest import ARTIFACTS

OFFER = {"code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
         "options": [{"code": "express", "name": "Intervention en 4 h", "amount": "30.00"}]}
GOOD, DECLINED, THREE_D_SECURE = "4242424242424242", "4000000000000002", "4000002500003155"


def checkout(stage, merchant, *, email: str, locale: str = "fr", options=("express",)) -> dict:
    offer = merchant.post("/offers", json=OFFER)
    assert offer.status_code == 201, offer.text
    session = merchant.post("/checkout-sessions", json={
        "offer_id": offer.json()["id"], "options": list(options),
        "customer": {"name": "Jeanne Martin", "email": email, "country": "FR", "locale": locale},
        "success_url": f"{stage.url}/health?from=checkout", "cancel_url": f"{stage.url}/health?from=cancel",
    })
    assert session.status_code == 201, session.text
    return session.json()


class CheckoutTab:
    def __init__(self, chromium, url: str, lang: str = "fr"):
        self.context = chromium.new_context(viewport={"width": 520, "height": 1000}, locale=lang,
                                            extra_http_headers={"Accept-Language": lang})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)

    def type_card(self, number: str) -> None:
        card = self.page.locator("#card-element")
        for name, value in (("number", number), ("exp_month", "12"), ("exp_year", "34"), ("cvc", "123")):
            field = card.locator(f'input[placeholder="{name}"]')
            field.fill("")
            field.press_sequentially(value)

    def pay(self) -> None:
        self.page.locator("#submit").click()

    def authenticate(self, succeed: bool = True) -> None:
        """localstripe's 3-D Secure dialog: its two buttons."""
        label = "Complete authentication" if succeed else "Fail authentication"
        button = self.page.get_by_role("button", name=label)
        button.wait_for(state="visible", timeout=15_000)
        button.click()

    def error(self) -> str:
        box = self.page.locator("#error")
        box.wait_for(state="visible", timeout=15_000)
        return box.inner_text()

    def wait_ready_again(self) -> None:
        """After a refusal the button comes back (with a fresh SetupIntent)."""
        self.page.wait_for_function("!document.getElementById('submit').disabled", timeout=15_000)

    def wait_redirect(self) -> str:
        self.page.wait_for_url("**/health?from=checkout&session_id=*", timeout=30_000)
        return self.page.url

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"checkout-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def made(merchant, session_id: str) -> tuple[dict, dict]:
    """The completed session and its one subscription's first invoice."""
    shown = merchant.get(f"/checkout-sessions/{session_id}").json()
    assert shown["status"] == "complete", shown
    (invoice,) = merchant.get("/invoices", params={"subscription_id": shown["subscription_id"]}).json()["data"]
    return shown, invoice


def test_checkout_with_a_good_card(stage, new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    session = checkout(stage, merchant, email="jeanne@labo-martin.fr")
    tab = CheckoutTab(chromium, session["url"])
    try:
        page = tab.page
        assert page.locator("h1").inner_text() == "Souscrire à Clic&O Neksia"
        quote = page.locator("#quote").inner_text()
        assert "Intervention en 4 h" in quote and "TVA 20 % (FR)" in quote
        assert "94,80" in page.locator("#total").inner_text()
        assert "1,20" in page.content()  # the metered price, billed later
        tab.type_card(GOOD)
        tab.shot("fr")
        tab.pay()
        url = tab.wait_redirect()
        assert url.endswith(f"session_id={session['id']}")
        assert not tab.errors, tab.errors
    finally:
        tab.close()
    shown, invoice = made(merchant, session["id"])
    assert (invoice["status"], invoice["total"], invoice["amount_paid"]) == ("paid", "94.80", "94.80")
    customer = merchant.get(f"/customers/{shown['customer_id']}").json()
    assert customer["default_payment_method"]["last4"] == "4242"
    assert [s["status"] for s in customer["subscriptions"]] == ["active"]


def test_a_declined_card_then_a_good_one_makes_one_customer(stage, new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    session = checkout(stage, merchant, email="refus@labo-martin.fr", locale="en", options=())
    tab = CheckoutTab(chromium, session["url"], lang="en")
    try:
        assert tab.page.locator("h1").inner_text() == "Subscribe to Clic&O Neksia"
        tab.type_card(DECLINED)
        tab.pay()
        said = tab.error()
        assert "Your bank declined the card." in said and "try again" in said
        tab.wait_ready_again()
        tab.shot("declined-en")
        assert merchant.get("/customers", params={"email": "refus@labo-martin.fr"}).json()["data"] == []
        tab.type_card(GOOD)
        tab.pay()
        tab.wait_redirect()
        assert not tab.errors, tab.errors
    finally:
        tab.close()
    shown, invoice = made(merchant, session["id"])
    assert invoice["status"] == "paid" and invoice["total"] == "58.80"
    assert len(merchant.get("/customers", params={"email": "refus@labo-martin.fr"}).json()["data"]) == 1
    assert len(merchant.get("/subscriptions").json()["data"]) == 1


def test_a_card_that_asks_for_3d_secure(stage, new_merchant, chromium):
    """localstripe asks for 3-D Secure when the card is set up, and again for
    its off-session charges (Stripe would not after a setup authenticated):
    the page has the customer confirm the first charge on the spot. Refused
    first, then accepted: still one customer and one subscription."""
    merchant = new_merchant(name="Optique Durand")
    session = checkout(stage, merchant, email="3ds@labo-martin.fr")
    tab = CheckoutTab(chromium, session["url"])
    try:
        tab.type_card(THREE_D_SECURE)
        tab.pay()
        tab.page.get_by_role("button", name="Fail authentication").wait_for(state="visible", timeout=15_000)
        tab.shot("3ds-dialog")
        tab.authenticate(succeed=False)
        assert "L’authentification 3-D Secure n’a pas abouti" in tab.error()
        tab.wait_ready_again()
        tab.shot("3ds-refused")
        tab.pay()
        tab.authenticate()  # the card's setup
        tab.authenticate()  # the first charge
        tab.wait_redirect()
        assert not tab.errors, tab.errors
    finally:
        tab.close()
    shown, invoice = made(merchant, session["id"])
    assert invoice["status"] == "paid" and invoice["amount_paid"] == "94.80"
    assert len(merchant.get("/customers", params={"email": "3ds@labo-martin.fr"}).json()["data"]) == 1
    assert len(merchant.get("/subscriptions").json()["data"]) == 1
