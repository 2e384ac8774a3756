"""The customer portal in Debian's Chromium on the local stage: a customer
with a machine opens the link the merchant made, sees its usage chart,
replaces its card on the payment page's form, downloads an invoice PDF and
cancels at the period end; another customer's invoice through that link,
a tampered link and an expired one are refused. Screenshots in
test-artifacts/portal-*.png, in French and English."""
from __future__ import annotations

from datetime import timedelta

from chalicelib.clock import isoformat
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_usage import publish, stage_now, wait_for

OFFER = {"code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}]}
PREMIUM = {**OFFER, "code": "clico-neksia-plus", "name": "Clic&O Neksia Plus",
           "components": [{"code": "base", "type": "flat", "amount": "69.00"},
                          {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "0.90"}]}


def customer_with_a_machine(stage, operator, merchant, *, email: str, locale: str) -> tuple[str, str]:
    """A customer whose subscription started yesterday, with a machine that
    reported counters yesterday and today: (customer id, subscription id)."""
    premium = merchant.post("/offers", json=PREMIUM).json()
    offer = merchant.post("/offers", json={**OFFER, "portal_upgrades": [premium["id"]]})
    assert offer.status_code == 201, offer.text
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": email, "country": "FR",
                                                 "locale": locale}).json()
    now = stage_now(operator)
    subscription = merchant.post("/subscriptions", json={
        "customer_id": customer["id"], "offer_id": offer.json()["id"],
        "start_at": isoformat(now - timedelta(hours=23))})
    assert subscription.status_code == 201, subscription.text
    device_id = f"neksia-{customer['id'][-6:]}"
    attached = merchant.post("/devices", json={"device_id": device_id, "subscription_id": subscription.json()["id"]})
    assert attached.status_code == 201, attached.text
    readings = [(now - timedelta(hours=22), 1000), (now - timedelta(hours=21), 1042), (now - timedelta(minutes=5), 1075)]
    # One at a time: the usage of a batch of readings is dated by its last one.
    for seq, (ts, value) in enumerate(readings, start=1):
        publish(stage.ports["mqtt"], f"billing/{merchant.merchant['id']}/{device_id}/counters",
                [{"seq": seq, "ts": isoformat(ts), "counters": {"montages": value}}])
        assert wait_for(lambda: (merchant.get(f"/devices/{device_id}").json().get("last_reading") or {})
                        .get("seq") == seq)
    return customer["id"], subscription.json()["id"]


class PortalTab:
    def __init__(self, chromium, lang: str = "fr"):
        self.context = chromium.new_context(viewport={"width": 900, "height": 1100}, locale=lang,
                                            extra_http_headers={"Accept-Language": lang}, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: dialog.accept())

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def portal_url(merchant, customer_id: str) -> str:
    link = merchant.post(f"/customers/{customer_id}/portal-session", json={"return_url": "https://shop.example/"})
    assert link.status_code == 200, link.text
    return link.json()["url"]


def test_the_customer_helps_themselves_in_the_portal(stage, operator, new_merchant, chromium, tmp_path):
    merchant = new_merchant(name="Optique Durand")
    customer_id, subscription_id = customer_with_a_machine(stage, operator, merchant, email="labo@martin.fr",
                                                           locale="fr")
    url = portal_url(merchant, customer_id)
    tab = PortalTab(chromium)
    page = tab.page
    try:
        page.goto(url)
        assert page.locator("h1").inner_text() == "Votre espace client"
        # The usage of the machine, by day: yesterday's 42 and today's 33 montages.
        chart = page.locator("figure.chart")
        assert chart.count() == 1 and "montages" in chart.get_attribute("aria-label")
        assert page.locator("figure.chart > svg rect").count() == 30
        figures = chart.locator("details.figures").text_content()
        assert "42" in figures and "33" in figures
        assert page.get_by_role("button", name="Passer à Clic&O Neksia Plus").count() == 1
        tab.shot("fr")

        # Replace the card, on the payment page's form.
        page.locator("#replace-card").click()
        page.wait_for_url("**/card")
        card = page.locator("#card-element")
        for name, value in (("number", "4242424242424242"), ("exp_month", "12"), ("exp_year", "34"), ("cvc", "123")):
            card.locator(f'input[placeholder="{name}"]').press_sequentially(value)
        page.locator("#submit").click()
        page.locator("#success").wait_for(state="visible", timeout=15_000)
        tab.shot("card-saved")
        page.locator("#back").click()
        page.wait_for_url(url)
        assert "Visa se terminant par 4242" in page.locator("#card-on-file").inner_text()
        # The first invoice, paid by the card just saved, as a PDF.
        assert page.locator(".badge.paid").count() == 1
        with page.expect_download() as download:
            page.locator("a.pdf").first.click()
        assert download.value.failure() is None and download.value.suggested_filename.endswith(".pdf")
        saved = tmp_path / "invoice.pdf"
        download.value.save_as(saved)
        assert saved.read_bytes()[:5] == b"%PDF-"

        # Cancel at the period end (the page asks first; the dialog is accepted).
        page.get_by_role("button", name="Résilier à la fin de la période").click()
        page.wait_for_url("**?done=canceled")
        assert "votre abonnement prendra fin" in page.locator("#notice").inner_text()
        tab.shot("canceled-fr")
        assert not tab.errors, tab.errors
    finally:
        tab.close()
    shown = merchant.get(f"/subscriptions/{subscription_id}").json()
    assert shown["cancel_at_period_end"] is True and shown["status"] == "active"
    assert merchant.get(f"/customers/{customer_id}").json()["default_payment_method"]["last4"] == "4242"


def test_the_portal_in_english_refuses_another_customers_invoice(stage, operator, new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    customer_id, _ = customer_with_a_machine(stage, operator, merchant, email="lab@example.com", locale="en")
    other = merchant.post("/customers", json={"name": "Other Lab", "email": "other@example.com",
                                              "country": "FR"}).json()
    offer_id = merchant.get("/offers").json()["data"][0]["id"]
    merchant.post("/subscriptions", json={"customer_id": other["id"], "offer_id": offer_id})
    (others_invoice,) = merchant.get("/invoices", params={"customer_id": other["id"]}).json()["data"]
    url = portal_url(merchant, customer_id)
    tab = PortalTab(chromium, lang="en")
    try:
        tab.page.goto(url)
        assert tab.page.locator("h1").inner_text() == "Your customer account"
        tab.shot("en")
        answer = tab.page.goto(f"{url}/invoices/{others_invoice['id']}/pdf")
        assert answer.status == 404 and tab.page.locator("h1").inner_text() == "Link not found"
        tab.shot("refused-en")
        answer = tab.page.goto(url[:-3] + ("abc" if not url.endswith("abc") else "xyz"))
        assert answer.status == 404
    finally:
        tab.close()


def test_an_expired_portal_link_is_refused_with_a_way_to_a_new_one(stage, operator, new_merchant, chromium):
    merchant = new_merchant(name="Optique Durand")
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "expire@martin.fr",
                                                 "country": "FR", "locale": "fr"}).json()
    url = portal_url(merchant, customer["id"])
    now = stage_now(operator)
    moved = operator.post("/_local/clock", json={"now": isoformat(now + timedelta(minutes=61))})
    assert moved.status_code == 200, moved.text
    tab = PortalTab(chromium)
    try:
        answer = tab.page.goto(url)
        assert answer.status == 410 and tab.page.locator("h1").inner_text() == "Lien expiré"
        tab.shot("expired-fr")
        # The way to a new link: the e-mail form, the same answer for any address.
        tab.page.get_by_role("link", name="Recevoir un nouveau lien").click()
        tab.page.fill('input[name="email"]', "expire@martin.fr")
        tab.page.get_by_role("button", name="Recevoir le lien").click()
        assert "un lien vient d’y être envoyé" in tab.page.locator("#sent").inner_text()
        tab.shot("link-sent-fr")
    finally:
        tab.close()

    def portal_mail():
        mails = operator.get("/_local/outbox").json()["data"]
        return [m for m in mails if "expire@martin.fr" in m["to"] and "/portal/" in m["text"]]

    (mail,) = wait_for(portal_mail)
    assert mail["subject"] == "Votre espace client Optique Durand"
