"""The customer portal: its links, its pages, what a customer may do there."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from chalicelib.clock import FixedClock, clock as platform_clock, use_clock
from tests.integration.console_client import Browser
from tests.integration.test_alerts import mails_to
from tests.integration.test_payments import CARD_OK, confirm_in_browser, page_config

BASE = {"code": "base", "name": "Essentiel", "currency": "EUR", "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": "0.00"}]}


def offer(merchant, **fields) -> dict:
    response = merchant.post("/offers", {**BASE, **fields})
    assert response.status == 201, response
    return response.json


def subscribed(merchant, offer_id: str, email: str = "jeanne@labo-martin.fr") -> tuple[dict, dict]:
    customer = merchant.post("/customers", {"name": "Jeanne Martin", "email": email, "country": "FR",
                                            "locale": "fr"}).json
    subscription = merchant.post("/subscriptions", {"customer_id": customer["id"], "offer_id": offer_id}).json
    assert subscription["status"] == "active", subscription
    return customer, subscription


def portal_path(merchant, customer_id: str, **body) -> str:
    response = merchant.post(f"/customers/{customer_id}/portal-session", body)
    assert response.status == 200, response
    return "/" + response.json["url"].split("://", 1)[1].split("/", 1)[1]


@pytest.fixture
def browser(client):
    return Browser(client)


def test_a_portal_link_is_valid_one_hour_for_one_customer(merchant, new_merchant):
    free = offer(merchant)
    customer, _ = subscribed(merchant, free["id"])
    now = platform_clock().now()
    response = merchant.post(f"/customers/{customer['id']}/portal-session", {"return_url": "https://shop.example/"})
    assert response.status == 200, response
    link = response.json
    assert "/portal/" in link["url"] and link["return_url"] == "https://shop.example/"
    expires = link["expires_at"]
    assert expires > (now + timedelta(minutes=59)).isoformat()[:16] and expires < (now + timedelta(minutes=61)).isoformat()
    bad = merchant.post(f"/customers/{customer['id']}/portal-session", {"return_url": "ftp://x"})
    assert (bad.status, bad.json["error"]["param"]) == (400, "return_url")
    other = new_merchant(name="Autre")
    assert other.post(f"/customers/{customer['id']}/portal-session", {}).status == 404


def test_the_portal_shows_the_customer_and_serves_its_invoice_pdfs_only(merchant, browser):
    free = offer(merchant)
    customer, subscription = subscribed(merchant, free["id"])
    other, _ = subscribed(merchant, free["id"], email="autre@client.fr")
    (invoice,) = merchant.get(f"/invoices?subscription_id={subscription['id']}").json["data"]
    (others,) = merchant.get(f"/invoices?customer_id={other['id']}").json["data"]
    path = portal_path(merchant, customer["id"])

    page = browser.get(path)
    assert page.status_code == 200
    html = browser.text(page)
    assert "Votre espace client" in html and "Jeanne Martin" in html and "Essentiel" in html
    assert f"{path}/invoices/{invoice['id']}/pdf" in html
    pdf = browser.get(f"{path}/invoices/{invoice['id']}/pdf", headers={"Accept": "*/*"})
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.body[:5] == b"%PDF-"
    # Another customer's invoice through this customer's link: nothing to see.
    refused = browser.get(f"{path}/invoices/{others['id']}/pdf", headers={"Accept": "*/*"})
    assert refused.status_code == 404 and "Lien introuvable" in browser.text(refused)
    assert browser.get(f"{path}x").status_code == 404
    english = browser.get(f"{path}?lang=en")
    assert "Your customer account" in browser.text(english)


def test_an_expired_link_is_a_410_page_offering_a_new_one(merchant, browser):
    customer, _ = subscribed(merchant, offer(merchant)["id"])
    path = portal_path(merchant, customer["id"])
    use_clock(FixedClock(platform_clock().now() + timedelta(minutes=61)))
    try:
        page = browser.get(path)
    finally:
        use_clock(None)
    assert page.status_code == 410
    html = browser.text(page)
    assert "Lien expiré" in html and f"/portal?merchant={merchant.merchant['id']}" in html


def test_cancel_at_period_end_once_and_with_the_forms_tokens(merchant, browser):
    customer, subscription = subscribed(merchant, offer(merchant)["id"])
    path = portal_path(merchant, customer["id"])
    page = browser.get(path)
    csrf, form_token = browser.hidden(page, "csrf_token"), browser.hidden(page, "form_token")
    action = f"{path}/subscriptions/{subscription['id']}/cancel"

    forged = browser.post(action, {"csrf_token": "x" * 32, "form_token": form_token})
    assert forged.status_code == 400
    assert merchant.get(f"/subscriptions/{subscription['id']}").json["cancel_at_period_end"] is False

    done = browser.post(action, {"csrf_token": csrf, "form_token": form_token})
    assert done.status_code == 303 and done.headers["Location"].endswith("?done=canceled")
    again = browser.post(action, {"csrf_token": csrf, "form_token": form_token})
    assert again.status_code == 303 and again.headers["Location"] == done.headers["Location"]
    shown = merchant.get(f"/subscriptions/{subscription['id']}").json
    assert shown["cancel_at_period_end"] is True
    history = merchant.get(f"/subscriptions/{subscription['id']}/history").json["data"]
    assert [h["actor"] for h in history if h["type"] == "cancellation_scheduled"] == ["customer"]
    assert "Garder mon abonnement" in browser.text(browser.get(path))


def test_a_commitment_forbids_cancelling_from_the_portal(merchant, browser):
    committed = offer(merchant, code="committed", commitment_months=12)
    customer, subscription = subscribed(merchant, committed["id"])
    path = portal_path(merchant, customer["id"])
    page = browser.get(path)
    html = browser.text(page)
    assert "Résilier à la fin de la période" not in html and "Engagement jusqu’au" in html
    # No form offers it; a post made by hand is refused all the same.
    from chalicelib.services import portal

    csrf = portal.csrf_token(portal.open_portal(path.rsplit("/", 1)[1]))
    refused = browser.post(f"{path}/subscriptions/{subscription['id']}/cancel",
                           {"csrf_token": csrf, "form_token": "t" * 24})
    assert refused.headers["Location"].endswith("?problem=commitment")
    assert merchant.get(f"/subscriptions/{subscription['id']}").json["cancel_at_period_end"] is False


def test_an_offer_change_among_the_portal_upgrades_only(merchant, browser):
    premium = offer(merchant, code="premium", name="Premium")
    elsewhere = offer(merchant, code="other", name="Autre")
    bad = merchant.post("/offers", {**BASE, "code": "x", "portal_upgrades": ["off_" + "0" * 26]})
    assert (bad.status, bad.json["error"]["param"]) == (400, "portal_upgrades[0]"), bad
    basic = offer(merchant, code="basic", name="Basique", portal_upgrades=[premium["id"]])
    assert merchant.get(f"/offers/{basic['id']}").json["portal_upgrades"] == [premium["id"]]
    customer, subscription = subscribed(merchant, basic["id"])
    path = portal_path(merchant, customer["id"])
    page = browser.get(path)
    html = browser.text(page)
    assert "Passer à Premium" in html and "Passer à Autre" not in html
    csrf = browser.hidden(page, "csrf_token")
    action = f"{path}/subscriptions/{subscription['id']}/change"
    refused = browser.post(action, {"csrf_token": csrf, "form_token": "a" * 24, "offer_id": elsewhere["id"]})
    assert refused.headers["Location"].endswith("?problem=refused")
    done = browser.post(action, {"csrf_token": csrf, "form_token": "b" * 24, "offer_id": premium["id"]})
    assert done.headers["Location"].endswith("?done=changed")
    assert merchant.get(f"/subscriptions/{subscription['id']}").json["offer_id"] == premium["id"]


def test_the_card_is_replaced_on_the_payment_pages_form(merchant, browser, localstripe):
    customer, _ = subscribed(merchant, offer(merchant)["id"])
    path = portal_path(merchant, customer["id"])
    page = browser.get(f"{path}/card")
    assert page.status_code == 200 and "Retour à votre espace client" in browser.text(page)
    setup_intent = confirm_in_browser(page_config(browser.text(page))["clientSecret"], CARD_OK)
    saved = merchant.as_key(None).post(f"{path}/card/complete", {"setup_intent": setup_intent})
    assert saved.status == 200 and saved.json["default_payment_method"]["last4"] == "4242", saved
    assert "se terminant par 4242" in browser.text(browser.get(path))


def test_a_link_by_email_answers_the_same_for_any_address(merchant, browser):
    customer, _ = subscribed(merchant, offer(merchant)["id"], email="lien@labo-martin.fr")
    form = browser.get(f"/portal?merchant={merchant.merchant['id']}")
    assert form.status_code == 200
    token = browser.hidden(form, "form_csrf")
    known = browser.post("/portal", {"merchant": merchant.merchant["id"], "email": "lien@labo-martin.fr",
                                     "form_csrf": token})
    unknown = browser.post("/portal", {"merchant": merchant.merchant["id"], "email": "personne@nulle.part",
                                       "form_csrf": token})
    assert known.status_code == unknown.status_code == 200
    def strip(response) -> str:
        text = browser.text(response).replace("lien@labo-martin.fr", "@").replace("personne@nulle.part", "@")
        return re.sub(r'nonce="[^"]*"', "", text)

    assert strip(known) == strip(unknown)
    (mail,) = mails_to("lien@labo-martin.fr")
    link = re.search(r"https?://\S+/portal/(\S+)", mail["text"]).group(0)
    assert browser.get("/portal/" + link.split("/portal/", 1)[1]).status_code == 200
    assert not mails_to("personne@nulle.part")
    without_cookie = Browser(browser.client).post("/portal", {"merchant": merchant.merchant["id"],
                                                              "email": "lien@labo-martin.fr", "form_csrf": token})
    assert without_cookie.status_code == 400
