"""A merchant's subscription lifecycle on the local stage, over HTTP."""
from tests.unit.test_catalog import API_EXAMPLE


def test_an_unpaid_subscription_is_canceled_immediately(new_merchant):
    merchant = new_merchant()
    offer = merchant.post("/offers", json=API_EXAMPLE)
    assert offer.status_code == 201, offer.text
    customer = merchant.post("/customers", json={"name": "Optique Durand", "email": "compta@durand.fr",
                                                 "country": "FR", "external_id": "ERP-42"})
    assert customer.status_code == 201, customer.text
    customer_id = customer.json()["id"]
    assert merchant.get("/customers", params={"external_id": "ERP-42"}).json()["data"][0]["id"] == customer_id

    created = merchant.post("/subscriptions", json={"customer_id": customer_id, "offer_id": offer.json()["id"],
                                                    "options": ["express"]})
    assert created.status_code == 201, created.text
    subscription = created.json()
    # No card yet and 79.00 due at the start.
    assert subscription["status"] == "incomplete"
    assert subscription["commitment_ends_at"] > subscription["current_period_end"]

    path = f"/subscriptions/{subscription['id']}"
    # Never paid for: it cannot run to a period end, it is canceled now (and
    # its 48-month commitment, which starts with the first paid period, does not bind it).
    refused = merchant.post(f"{path}/cancel", json={"at_period_end": True})
    assert refused.status_code == 409 and "immediately" in refused.json()["error"]["message"]
    canceled = merchant.post(f"{path}/cancel", json={"at_period_end": False})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"

    history = merchant.get(f"{path}/history").json()["data"]
    actor = f"key:{merchant.key[:11]}"
    # The first invoice was issued with the subscription; its cancellation voided it.
    assert [(h["type"], h["actor"]) for h in history] == [("created", actor), ("invoiced", "system"),
                                                          ("canceled", actor)]
    assert history[2]["before"]["status"] == "incomplete" and history[2]["after"]["status"] == "canceled"
    [first] = merchant.get("/invoices", params={"subscription_id": subscription["id"]}).json()["data"]
    assert (first["billing_reason"], first["status"], first["amount_paid"]) == ("subscription_create", "void", "0.00")
    page = merchant.get(f"/customers/{customer_id}").json()
    assert [s["id"] for s in page["subscriptions"]] == [subscription["id"]]
    assert page["subscriptions"][0]["status"] == "canceled"


def per_act_subscription(merchant) -> dict:
    """A customer subscribed over HTTP to a per-act offer (usage only, no
    commitment): the subscription as answered."""
    offer = dict(API_EXAMPLE, code="per-act", commitment_months=0,
                 components=[c for c in API_EXAMPLE["components"] if c["type"] == "metered"][:1], options=[])
    offer_id = merchant.post("/offers", json=offer).json()["id"]
    customer_id = merchant.post("/customers", json={"name": "Durand", "email": "d@durand.fr",
                                                    "country": "FR"}).json()["id"]
    return merchant.post("/subscriptions", json={"customer_id": customer_id, "offer_id": offer_id}).json()


def test_subscribe_cancel_at_period_end_and_read_the_history(new_merchant):
    merchant = new_merchant()
    subscription = per_act_subscription(merchant)
    assert subscription["status"] == "active"  # usage only: nothing due at the start
    path = f"/subscriptions/{subscription['id']}"
    scheduled = merchant.post(f"{path}/cancel", json={"reason": "moving away"}).json()
    assert scheduled["status"] == "active" and scheduled["cancel_at_period_end"] is True
    assert scheduled["cancel_at"] == subscription["current_period_end"]
    upcoming = merchant.get(f"{path}/upcoming-invoice").json()
    assert upcoming["billing_at"] == subscription["current_period_end"]
    assert [line["kind"] for line in upcoming["lines"]] == ["usage"]  # the last period's usage, no new fees
    history = merchant.get(f"{path}/history").json()["data"]
    assert [h["type"] for h in history] == ["created", "cancellation_scheduled"]
    assert history[1]["after"] == {"cancel_at_period_end": True, "cancel_at": subscription["current_period_end"],
                                   "cancellation_reason": "customer", "cancellation_comment": "moving away"}
