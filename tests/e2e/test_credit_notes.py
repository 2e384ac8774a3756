"""On the local stage, over HTTP: a paid invoice credited with a card refund
(made once at localstripe, whatever is retried), and an unpaid one paid in
cash at the counter."""
from __future__ import annotations

import stripe

from tests.e2e.test_billing import confirm_card, page_config


def test_a_credit_note_refunds_the_card_and_a_cash_payment_pays_an_invoice(stage, new_merchant):
    merchant = new_merchant(invoice_prefix="CNE")
    offer = merchant.post("/offers", json={
        "code": "simple", "name": "Simple", "currency": "EUR", "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": "49.00"}]})
    assert offer.status_code == 201, offer.text

    # A customer who saves a card: the first invoice (49.00 + VAT 9.80) is paid at once.
    customer_id = merchant.post("/customers", json={"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                                    "country": "FR"}).json()["id"]
    token = merchant.post(f"/customers/{customer_id}/payment-link").json()["url"].rsplit("/pay/", 1)[1]
    public = merchant.as_key(None)
    setup_intent = confirm_card(stage, page_config(public.get(f"/pay/{token}").text)["clientSecret"])
    assert public.post(f"/pay/{token}/complete", json={"setup_intent": setup_intent}).status_code == 200
    subscription = merchant.post("/subscriptions", json={"customer_id": customer_id,
                                                         "offer_id": offer.json()["id"]}).json()
    [invoice] = merchant.get("/invoices", params={"subscription_id": subscription["id"]}).json()["data"]
    assert (invoice["status"], invoice["total"]) == ("paid", "58.80")

    # 20.00 of the base, before tax: 24.00 back on the card; sent twice, one credit note and one refund.
    body = {"lines": [{"invoice_line_id": invoice["lines"][0]["id"], "amount": "20.00"}],
            "reason": "product_unsatisfactory", "refund": "card"}
    answers = [merchant.post(f"/invoices/{invoice['id']}/credit-notes", json=body,
                             headers={"Idempotency-Key": "e2e-credit-1"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201], answers[0].text
    note = answers[0].json()
    assert answers[1].json()["id"] == note["id"]
    assert note["number"].startswith("CNECN") and note["number"].endswith("-000001")
    assert note["total"] == "24.00" and note["refund_status"] == "succeeded"
    client = stripe.StripeClient("sk_test_local",
                                 base_addresses={"api": f"http://127.0.0.1:{stage.ports['stripe']}"})
    intent = invoice["payment_attempts"][0]["payment_intent"]
    refunds = client.v1.refunds.list(params={"payment_intent": intent}).data
    assert [(r["id"], r["amount"]) for r in refunds] == [(note["stripe_refund_id"], 2400)]
    shown = merchant.get(f"/invoices/{invoice['id']}").json()
    assert shown["amount_credited"] == "24.00" and [c["id"] for c in shown["credit_notes"]] == [note["id"]]
    pdf = merchant.get(f"/credit-notes/{note['id']}/pdf", headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # A customer with no card: its invoice waits; paid in cash at the counter.
    walk_in = merchant.post("/customers", json={"name": "Optique du Port", "email": "port@example.fr",
                                                "country": "FR"}).json()["id"]
    unpaid = merchant.post("/subscriptions", json={"customer_id": walk_in, "offer_id": offer.json()["id"]}).json()
    [due] = merchant.get("/invoices", params={"subscription_id": unpaid["id"]}).json()["data"]
    assert (due["status"], due["amount_due"]) == ("open", "58.80")
    cash = merchant.post(f"/invoices/{due['id']}/payments", json={"method": "cash", "amount": "60.00"},
                         headers={"Idempotency-Key": "e2e-cash-1"})
    assert cash.status_code == 201, cash.text
    assert (cash.json()["invoice"]["status"], cash.json()["to_credit_balance"]) == ("paid", "1.20")
    page = merchant.get(f"/customers/{walk_in}").json()
    assert page["credit_balance"] == "1.20" and [p["method"] for p in page["payments"]] == ["cash"]
    assert merchant.get(f"/subscriptions/{unpaid['id']}").json()["status"] == "active"
