"""The audit trail (moto): writes made through the HTTP API and by a job,
read back with GET /audit after the billing table's stream is delivered to
`change_feed` as Lambda would (tests/integration/table_stream.py): who made
each change, when, and only what changed; a batch delivered again adds
nothing; another merchant sees nothing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import jobs
from infra.local.lambda_events import LocalContext
from tests.integration.table_stream import billing_table_stream

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def fixed_clock(aws):
    from chalicelib.clock import FixedClock, use_clock

    fixed = FixedClock(NOW)
    use_clock(fixed)
    yield fixed
    use_clock(None)


@pytest.fixture
def feed(aws):
    from app import change_feed

    stream = billing_table_stream()

    def deliver() -> list[dict]:
        """Hand the new stream records to change_feed; returns them."""
        before = len(stream.delivered)
        stream.deliver(change_feed)
        assert not stream.pending, "the audit feed keeps failing"
        return stream.delivered[before:]

    return deliver


def key_actor(api) -> str:
    return f"key:{api.key[:11]}"


def trail(api, **query) -> list[dict]:
    response = api.get("/audit?" + "&".join(f"{name}={value}" for name, value in query.items()))
    assert response.status == 200, response
    return response.json["data"]


def new_customer(api) -> str:
    response = api.post("/customers", {"name": "Labo Martin", "email": "compta@labo-martin.fr", "country": "FR"})
    assert response.status == 201, response
    return response.json["id"]


def usage_only_subscription(api, customer_id: str) -> str:
    """Nothing is due at the start (usage in arrears): active without a card."""
    offer = api.post("/offers", {"code": "per-act", "name": "Per act", "currency": "EUR",
                                 "billing_interval": "month",
                                 "components": [{"code": "montage", "type": "metered", "meter": "montages",
                                                 "unit_amount": "1.20"}]})
    assert offer.status == 201, offer
    response = api.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer.json["id"]})
    assert response.status == 201, response
    return response.json["id"]


def test_a_customer_created_then_changed_has_both_entries_newest_first(merchant, feed, fixed_clock):
    customer_id = new_customer(merchant)
    fixed_clock.set(NOW + timedelta(minutes=5))
    assert merchant.patch(f"/customers/{customer_id}", {"name": "Labo Martin & fils",
                                                        "metadata": {"crm": "881"}}).status == 200
    feed()
    updated, created = trail(merchant, entity_id=customer_id)
    assert created["object"] == "audit_entry" and created["id"].startswith("aud_")
    assert (created["entity_type"], created["entity_id"], created["customer_id"]) == (
        "customer", customer_id, customer_id)
    assert (created["action"], created["actor"], created["at"]) == (
        "created", key_actor(merchant), "2026-11-01T09:00:00.000Z")
    assert created["before"] == {}
    assert created["after"]["name"] == "Labo Martin" and created["after"]["email"] == "compta@labo-martin.fr"
    assert not {"pk", "sk", "version", "gsi1pk", "actor", "acted_at"} & set(created["after"])
    assert (updated["action"], updated["actor"], updated["at"]) == (
        "updated", key_actor(merchant), "2026-11-01T09:05:00.000Z")
    assert updated["before"] == {"name": "Labo Martin", "metadata": {}}
    assert updated["after"] == {"name": "Labo Martin & fils", "metadata": {"crm": "881"}}


def test_a_cancellation_is_in_the_subscription_history_and_the_customers_timeline(merchant, feed, fixed_clock):
    customer_id = new_customer(merchant)
    subscription_id = usage_only_subscription(merchant, customer_id)
    fixed_clock.set(NOW + timedelta(hours=1))
    canceled = merchant.post(f"/subscriptions/{subscription_id}/cancel", {"at_period_end": True})
    assert canceled.status == 200, canceled
    feed()
    entries = trail(merchant, entity_id=subscription_id)
    assert [e["action"] for e in entries][0] == "updated" and entries[-1]["action"] == "created"
    latest = entries[0]
    assert latest["actor"] == key_actor(merchant) and latest["customer_id"] == customer_id
    assert latest["before"]["cancel_at_period_end"] is False and latest["after"]["cancel_at_period_end"] is True
    # The subscription's own history names the same actor.
    history = merchant.get(f"/subscriptions/{subscription_id}/history").json["data"]
    assert history[-1]["actor"] == key_actor(merchant)
    # The customer's timeline: the customer and its subscription, newest first.
    timeline = trail(merchant, customer_id=customer_id)
    assert {e["entity_type"] for e in timeline} == {"customer", "subscription"}
    assert timeline[0] == latest and timeline[-1]["entity_type"] == "customer"
    assert [e["at"] for e in timeline] == sorted((e["at"] for e in timeline), reverse=True)
    # Both filters: the entity's entries of that customer.
    assert trail(merchant, entity_id=subscription_id, customer_id=customer_id) == entries
    assert trail(merchant, entity_id=subscription_id, customer_id="cus_someone_else") == []


def test_a_stream_batch_delivered_again_adds_no_entry(merchant, feed, fixed_clock):
    from app import change_feed

    customer_id = new_customer(merchant)
    assert merchant.patch(f"/customers/{customer_id}", {"name": "Labo M."}).status == 200
    records = feed()
    assert len(trail(merchant, entity_id=customer_id)) == 2
    assert change_feed({"Records": records}, LocalContext()) == {"batchItemFailures": []}
    assert len(trail(merchant, entity_id=customer_id)) == 2


def test_another_merchant_sees_nothing(new_merchant, feed, fixed_clock):
    owner, other = new_merchant(), new_merchant(name="Autre")
    customer_id = new_customer(owner)
    feed()
    assert len(trail(owner, entity_id=customer_id)) == 1
    assert trail(other, entity_id=customer_id) == [] and trail(other, customer_id=customer_id) == []
    assert trail(other, entity_id=owner.merchant["id"]) == []


def test_a_jobs_writes_are_the_jobs(merchant, feed, fixed_clock):
    customer_id = new_customer(merchant)
    subscription_id = usage_only_subscription(merchant, customer_id)
    # The month's end: the billing run bills the period and moves the subscription on.
    fixed_clock.set(datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc))
    jobs.billing_scheduler(fixed_clock.now(), inline=True)
    feed()
    moved = trail(merchant, entity_id=subscription_id)[0]
    assert moved["actor"] == "system:billing_scheduler" and moved["action"] == "updated"
    assert moved["before"]["current_period_start"] == "2026-11-01T09:00:00Z"
    assert moved["after"]["current_period_start"] == "2026-12-01T09:00:00Z"
    [invoice] = [e for e in trail(merchant, customer_id=customer_id) if e["entity_type"] == "invoice"]
    assert (invoice["action"], invoice["actor"]) == ("created", "system:billing_scheduler")


def test_settings_keys_and_devices_name_their_actor(fixed_clock, merchant, feed):
    merchant_id = merchant.merchant["id"]
    created_key = merchant.post("/merchant/api-keys", {})
    assert created_key.status in (200, 201), created_key
    assert merchant.patch("/merchant", {"dunning_retry_days": [2, 4]}).status == 200
    customer_id = new_customer(merchant)
    subscription_id = usage_only_subscription(merchant, customer_id)
    attached = merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": subscription_id})
    assert attached.status in (200, 201), attached
    feed()
    settings, key, created = trail(merchant, entity_id=merchant_id)
    assert (created["action"], created["actor"]) == ("created", "operator")
    assert created["after"]["api_keys"] == [merchant.key[:11]]
    assert key["actor"] == key_actor(merchant)
    assert key["after"]["api_keys"] == sorted([merchant.key[:11], created_key.json["prefix"]])
    assert merchant.key not in str(key) and created_key.json["api_key"] not in str(key)
    assert settings["before"] == {"dunning_retry_days": [1, 3, 5, 7]}
    assert settings["after"] == {"dunning_retry_days": [2, 4]}
    [device] = trail(merchant, entity_id="neksia-0042")
    assert (device["entity_type"], device["action"], device["actor"]) == ("device", "created", key_actor(merchant))
    assert device["after"]["subscription_id"] == subscription_id and "counters" not in device["after"]
    assert device in trail(merchant, customer_id=customer_id)


def test_the_trail_needs_an_entity_or_a_customer_and_pages(merchant, feed, fixed_clock):
    response = merchant.get("/audit")
    assert response.status == 400 and response.json["error"]["param"] == "entity_id"
    response = merchant.get("/audit?entity_id=" + "x" * 400)
    assert response.status == 400 and response.json["error"]["param"] == "entity_id"
    customer_id = new_customer(merchant)
    for name in ("A", "B", "C"):
        fixed_clock.set(fixed_clock.now() + timedelta(seconds=1))
        assert merchant.patch(f"/customers/{customer_id}", {"name": name}).status == 200
    feed()
    first = merchant.get(f"/audit?customer_id={customer_id}&limit=3").json
    assert first["has_more"] is True and [e["after"].get("name") for e in first["data"]] == ["C", "B", "A"]
    rest = merchant.get(f"/audit?customer_id={customer_id}&limit=3&cursor={first['next_cursor']}").json
    assert rest["has_more"] is False and [e["action"] for e in rest["data"]] == ["created"]
    stolen = merchant.get(f"/audit?entity_id={customer_id}&cursor={first['next_cursor']}")
    assert stolen.status == 400 and stolen.json["error"]["param"] == "cursor"


def test_a_staff_member_added_then_removed_names_who_did_both(fixed_clock, merchant, feed):
    email = "vendeur@optique-durand.fr"
    added = merchant.post("/merchant/users", {"email": email, "role": "staff", "password": "Vendeur-2026!"})
    assert added.status == 201, added
    fixed_clock.set(NOW + timedelta(minutes=1))
    assert merchant.delete(f"/merchant/users/{email}").status == 200
    feed()
    removed, created = trail(merchant, entity_id=email)
    assert (created["entity_type"], created["action"], created["actor"]) == ("staff_user", "created", key_actor(merchant))
    assert created["after"]["role"] == "staff" and "password" not in str(created)
    assert (removed["action"], removed["actor"], removed["at"]) == ("deleted", key_actor(merchant),
                                                                   "2026-11-01T09:01:00.000Z")
    assert removed["before"]["role"] == "staff" and removed["after"] == {}
