"""Merchant webhooks on the local stage, over HTTP: a merchant's receiver on
127.0.0.1 (tests/webhook_receiver.py, checking the signature as docs/api.md
says) gets `customer.created` after `POST /customers`, through the stream,
the bus, WebhookRule and the driver; it answers 500 first, the clock moves
past the first retry (`POST /_local/clock` runs the retry job), and the
event comes again, once, with both attempts in the delivery log."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from tests.webhook_receiver import Receiver


def wait_for(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("not within the time allowed")


def test_an_event_comes_signed_to_the_merchants_receiver_and_a_500_is_retried(stage, operator, new_merchant):
    merchant = new_merchant()
    with Receiver() as receiver:
        receiver.answers = [500]
        created = merchant.post("/webhook-endpoints", json={"url": receiver.url, "events": ["customer.created"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        receiver.secret = endpoint["secret"]

        email = f"compta-{uuid.uuid4().hex[:8]}@labo-martin.fr"
        customer = merchant.post("/customers", json={"name": "Labo Martin", "email": email, "country": "FR"})
        assert customer.status_code == 201, customer.text
        wait_for(lambda: receiver.received)
        [first] = receiver.received
        assert first.verified, first.headers
        assert first.event["type"] == "customer.created"
        assert first.event["data"]["customer"]["id"] == customer.json()["id"]

        deliveries = f"/webhook-endpoints/{endpoint['id']}/deliveries"
        [delivery] = wait_for(lambda: [d for d in merchant.get(deliveries).json()["data"] if d["attempts"]])
        assert delivery["status"] == "pending" and delivery["attempts"][0]["status_code"] == 500

        now = datetime.fromisoformat(operator.get("/_local/clock").json()["now"].replace("Z", "+00:00"))
        moved = operator.post("/_local/clock", json={"now": (now + timedelta(minutes=6)).isoformat()})
        assert moved.status_code == 200, moved.text
        assert "webhook_scheduler" in [job["name"] for job in moved.json()["jobs"]]
        wait_for(lambda: len(receiver.received) == 2)
        operator.post("/_local/clock", json={"now": (now + timedelta(hours=3)).isoformat()})
        time.sleep(1)

        assert len(receiver.received) == 2 and receiver.received[1].verified
        assert receiver.received[1].event["id"] == first.event["id"]
        [delivery] = merchant.get(deliveries).json()["data"]
        assert delivery["status"] == "succeeded"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
