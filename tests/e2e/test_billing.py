"""A month of billing on the local stage, over HTTP: a merchant, an offer,
a customer who saves a card on the payment page (its server path: the
SetupIntent is confirmed with localstripe as Stripe.js would), a
subscription, then the clock moves a month and the invoices are paid."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import stripe


def page_config(html: str) -> dict:
    marker = '<script type="application/json" id="pay-config">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start:html.index("</script>", start)])


def confirm_card(stage, client_secret: str) -> str:
    """What Stripe.js does in the customer's browser: confirm the SetupIntent with a card, at Stripe."""
    client = stripe.StripeClient("sk_test_local", base_addresses={"api": f"http://127.0.0.1:{stage.ports['stripe']}"})
    method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034,
                                         "cvc": "123"}}
    )
    setup_intent = client_secret.split("_secret_")[0]
    client.v1.setup_intents.confirm(setup_intent, params={"payment_method": method["id"]})
    return setup_intent


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_month_later_the_invoice_is_paid(stage, operator, new_merchant):
    merchant = new_merchant(invoice_prefix="E2E")
    offer = merchant.post("/offers", json={
        "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                       {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
    })
    assert offer.status_code == 201, offer.text
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                                 "country": "FR", "locale": "fr"})
    assert customer.status_code == 201, customer.text
    customer_id = customer.json()["id"]

    link = merchant.post(f"/customers/{customer_id}/payment-link")
    assert link.status_code == 200, link.text
    token = link.json()["url"].rsplit("/pay/", 1)[1]
    public = merchant.as_key(None)
    page = public.get(f"/pay/{token}")
    assert page.status_code == 200, page.text
    setup_intent = confirm_card(stage, page_config(page.text)["clientSecret"])
    done = public.post(f"/pay/{token}/complete", json={"setup_intent": setup_intent})
    assert done.status_code == 200, done.text

    created = merchant.post("/subscriptions", json={"customer_id": customer_id, "offer_id": offer.json()["id"]})
    assert created.status_code == 201, created.text
    subscription = created.json()
    assert subscription["status"] == "active"
    montages = merchant.post("/usage", json={"events": [{
        "event_id": "e2e-montages-1", "subscription_id": subscription["id"], "meter": "montages",
        "quantity": "10", "timestamp": subscription["current_period_start"]}]})
    assert montages.status_code == 200, montages.text

    a_month_later = instant(subscription["current_period_end"]) + timedelta(hours=1)
    moved = operator.post("/_local/clock", json={"now": a_month_later.isoformat().replace("+00:00", "Z")})
    assert moved.status_code == 200, moved.text
    ran = {job["name"]: job["result"] for job in moved.json()["jobs"]}
    assert set(ran) >= {"billing_scheduler", "dunning_scheduler"}
    # What the billing job did, per subscription (the stage is shared: ours among others).
    [ours] = [p for p in ran["billing_scheduler"]["processed"] if p["subscription_id"] == subscription["id"]]

    invoices = merchant.get("/invoices", params={"subscription_id": subscription["id"]}).json()["data"]
    # The run issued the month's invoice; the first month's fees were
    # issued (and paid) with the subscription.
    assert [(i["id"], i["number"], i["status"], i["total"]) for i in ours["invoices"]] == [
        (i["id"], i["number"], i["status"], i["total"]) for i in invoices[:1]]
    # Newest first: the month's invoice, then the first one (the first month's fees).
    assert [(i["billing_reason"], i["status"]) for i in invoices] == [
        ("subscription_cycle", "paid"), ("subscription_create", "paid")]
    assert invoices[0]["number"] > invoices[1]["number"]
    latest = invoices[0]
    # 10 montages x 1.20 + the next month's 49.00, VAT 20%: 73.20.
    assert (latest["subtotal"], latest["total"], latest["amount_paid"]) == ("61.00", "73.20", "73.20")
    assert latest["payment_attempts"][0]["status"] == "succeeded"
    pdf = merchant.get(f"/invoices/{latest['id']}/pdf", headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    moved_on = merchant.get(f"/subscriptions/{subscription['id']}").json()
    assert moved_on["current_period_start"] == subscription["current_period_end"]

    # A quarter of an hour later the billing job runs again and finds nothing of ours due.
    later = a_month_later + timedelta(minutes=16)
    again = operator.post("/_local/clock", json={"now": later.isoformat().replace("+00:00", "Z")}).json()
    [billing_job] = [job for job in again["jobs"] if job["name"] == "billing_scheduler"]
    assert not [p for p in billing_job["result"]["processed"] if p["subscription_id"] == subscription["id"]]
    assert len(merchant.get("/invoices", params={"subscription_id": subscription["id"]}).json()["data"]) == 2
