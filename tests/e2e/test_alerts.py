"""Expiring-card alerts on the local stage, over HTTP: a customer's card
expires next month, the clock moves a day (POST /_local/clock runs the daily
scan), and GET /_local/outbox shows the digest to operations and the
customer's e-mail with a payment link that opens; a day later, nothing new.
The two e-mails are looked at in headless Chromium and kept as screenshots
in test-artifacts/."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import stripe

from tests.e2e.test_billing import page_config
from tests.e2e.conftest import ARTIFACTS


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def save_card(stage, merchant, customer_id: str, exp_month: int, exp_year: int) -> None:
    """The payment page's server path, with the card confirmed at Stripe as Stripe.js would."""
    token = merchant.post(f"/customers/{customer_id}/payment-link").json()["url"].rsplit("/pay/", 1)[1]
    public = merchant.as_key(None)
    secret = page_config(public.get(f"/pay/{token}").text)["clientSecret"]
    client = stripe.StripeClient("sk_test_local", base_addresses={"api": f"http://127.0.0.1:{stage.ports['stripe']}"})
    method = client.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"}})
    setup_intent = secret.split("_secret_")[0]
    client.v1.setup_intents.confirm(setup_intent, params={"payment_method": method["id"]})
    done = public.post(f"/pay/{token}/complete", json={"setup_intent": setup_intent})
    assert done.status_code == 200, done.text


def outbox_to(operator, address: str) -> list[dict]:
    response = operator.get("/_local/outbox")
    assert response.status_code == 200, response.text
    return [mail for mail in response.json()["data"] if address in mail["to"]]


def test_the_daily_scan_mails_an_expiring_card_once(stage, operator, new_merchant, chromium):  # noqa: F811
    run = uuid.uuid4().hex[:8]
    ops, email = f"ops-{run}@optique-durand.fr", f"compta-{run}@labo-martin.fr"
    merchant = new_merchant(alert_emails=[ops])
    now = instant(operator.get("/_local/clock").json()["now"])
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": email, "country": "FR",
                                                 "locale": "fr"})
    assert customer.status_code == 201, customer.text
    customer_id = customer.json()["id"]
    save_card(stage, merchant, customer_id, next_month.month, next_month.year)
    offer = merchant.post("/offers", json={"code": "clico", "name": "Clic&O Neksia", "currency": "EUR",
                                           "billing_interval": "month",
                                           "components": [{"code": "base", "type": "flat", "amount": "49.00"}]})
    assert merchant.post("/subscriptions", json={"customer_id": customer_id,
                                                 "offer_id": offer.json()["id"]}).status_code == 201

    # A day later (a daily tick has passed): the scan runs within the clock's move.
    moved = operator.post("/_local/clock", json={"now": (now + timedelta(hours=25)).isoformat()})
    assert moved.status_code == 200, moved.text
    [scan] = [job["result"] for job in moved.json()["jobs"] if job["name"] == "card_expiry_scan"]
    assert scan["alerts"] >= 1 and scan["emails_sent"] >= 2

    [digest] = outbox_to(operator, ops)
    assert digest["subject"].startswith("Cartes qui expirent : 1 client de Optique Durand")
    assert f"Labo Martin <{email}> ({customer_id}) : Visa •••• 4242" in digest["text"]
    [mail] = outbox_to(operator, email)
    assert mail["subject"] == (f"Votre carte Visa •••• 4242 expire après {next_month.month:02d}/{next_month.year} : "
                               "mettez-la à jour pour Optique Durand")
    assert "4242424242424242" not in mail["text"] + mail["html"] + digest["text"] + digest["html"]
    assert mail["sent_at"] and instant(mail["sent_at"]) > now
    link = next(word for word in mail["text"].split() if "/pay/" in word)
    page = merchant.as_key(None).get("/pay/" + link.rsplit("/pay/", 1)[1])
    assert page.status_code == 200 and "Labo Martin" in page.text

    shown = merchant.get(f"/customers/{customer_id}").json()["open_alerts"]
    assert [(a["type"], a["deliveries"]["customer"]["status"]) for a in shown] == [("card_expiring", "sent")]

    # The next day: nothing new for this card.
    again = operator.post("/_local/clock", json={"now": (now + timedelta(hours=49)).isoformat()})
    assert again.status_code == 200, again.text
    assert len(outbox_to(operator, ops)) == 1 and len(outbox_to(operator, email)) == 1

    ARTIFACTS.mkdir(exist_ok=True)
    for name, sent in (("alert-mail-card-expiring", mail), ("alert-mail-digest", digest)):
        browser_page = chromium.new_page(viewport={"width": 640, "height": 720})
        try:
            browser_page.set_content(sent["html"])
            assert browser_page.title() == sent["subject"]
            assert "Optique Durand" in browser_page.inner_text("body")
            browser_page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            browser_page.close()
