"""Usage on the local stage: a machine publishes its counters over MQTT, the
merchant reads them back over HTTP; a call-centre system posts events."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt

from tests.e2e.conftest import ROOT

OFFER = {
    "code": "clico-neksia",
    "name": "Clic&O Neksia",
    "currency": "EUR",
    "billing_interval": "month",
    "interval_count": 1,
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {"code": "calls", "type": "metered", "meter": "calls", "unit_amount": "0.50"},
    ],
}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def stage_now(operator) -> datetime:
    return datetime.fromisoformat(operator.get("/_local/clock").json()["now"].replace("Z", "+00:00"))


def subscribed_machine(merchant, device_id: str) -> str:
    offer = merchant.post("/offers", json=OFFER)
    assert offer.status_code == 201, offer.text
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "labo@martin.fr", "country": "FR"})
    assert customer.status_code == 201, customer.text
    subscription = merchant.post(
        "/subscriptions", json={"customer_id": customer.json()["id"], "offer_id": offer.json()["id"]}
    )
    assert subscription.status_code == 201, subscription.text
    subscription_id = subscription.json()["id"]
    attached = merchant.post("/devices", json={"device_id": device_id, "subscription_id": subscription_id})
    assert attached.status_code == 201, attached.text
    return subscription_id


def publish(port: int, topic: str, payloads: list[dict]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-neksia")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(topic, json.dumps(payload), qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(check, seconds: float = 45):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_a_machine_publishes_over_mqtt_and_the_usage_appears(stage, operator, new_merchant):
    merchant = new_merchant()
    merchant_id = merchant.merchant["id"]
    subscription_id = subscribed_machine(merchant, "neksia-0042")
    now = stage_now(operator)
    topic = f"billing/{merchant_id}/neksia-0042/counters"
    readings = [
        {"seq": 1041, "ts": iso(now + timedelta(minutes=1)), "counters": {"montages": 12345, "tracings": 210}},
        {"seq": 1042, "ts": iso(now + timedelta(minutes=2)), "counters": {"montages": 12360, "tracings": 211}},
        {"seq": 1042, "ts": iso(now + timedelta(minutes=2)), "counters": {"montages": 12360, "tracings": 211}},
    ]
    publish(stage.ports["mqtt"], topic, readings)

    def device_caught_up():
        device = merchant.get("/devices/neksia-0042").json()
        return device if (device.get("last_reading") or {}).get("seq") == 1042 else None

    device = wait_for(device_caught_up)
    assert device, merchant.get("/devices/neksia-0042").text + stage.logs()
    assert device["counters"]["montages"] == {"value": "12360", "seq": 1042, "ts": readings[1]["ts"]}
    usage = merchant.get(f"/subscriptions/{subscription_id}/usage").json()
    assert usage["meters"]["montages"]["total"] == "15"
    assert usage["meters"]["tracings"]["total"] == "1"


def test_post_usage_over_http(stage, operator, new_merchant):
    merchant = new_merchant()
    subscription_id = subscribed_machine(merchant, "neksia-0100")
    now = stage_now(operator)
    body = {"events": [{"event_id": f"call-{i}", "subscription_id": subscription_id, "meter": "calls",
                        "quantity": "1", "timestamp": iso(now)} for i in range(3)]}
    first = merchant.post("/usage", json=body)
    assert first.status_code == 200 and first.json() == {"accepted": 3, "duplicates": 0}
    again = merchant.post("/usage", json=body)
    assert again.json() == {"accepted": 0, "duplicates": 3}
    usage = merchant.get(f"/subscriptions/{subscription_id}/usage").json()
    assert usage["meters"]["calls"]["total"] == "3"


def test_the_simulator_feeds_the_stage(stage, operator, new_merchant):
    """What `make simulate` runs, against the running stage: two machines,
    the first one's counters reset half-way, one message published twice."""
    import subprocess
    import sys

    from infra.local.simulator import plan

    merchant = new_merchant()
    merchant_id = merchant.merchant["id"]
    subscription_id = subscribed_machine(merchant, "neksia-0001")
    attached = merchant.post("/devices", json={"device_id": "neksia-0002", "subscription_id": subscription_id})
    assert attached.status_code == 201, attached.text
    start = stage_now(operator) + timedelta(seconds=30)
    args = ["--devices", "2", "--merchant", merchant_id, "--readings", "4", "--step-minutes", "1",
            "--start", iso(start), "--port", str(stage.ports["mqtt"])]
    done = subprocess.run([sys.executable, "-m", "infra.local.simulator", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "published 9 messages for 2 machine(s)" in done.stdout

    # The same plan, computed here: the usage each machine must add up to.
    messages = plan(2, 4, start, timedelta(minutes=1), 42)
    expected = {"montages": 0, "tracings": 0}
    last_seq = {}
    for device in ("neksia-0001", "neksia-0002"):
        mine = [m for d, m in messages if d == device]
        last_seq[device] = mine[-1]["seq"]
        for before, after in zip(mine, mine[1:]):
            if before["seq"] == after["seq"]:
                continue  # the duplicate
            for meter in expected:
                delta = after["counters"][meter] - before["counters"][meter]
                expected[meter] += delta if delta >= 0 else after["counters"][meter]

    def caught_up():
        devices = [merchant.get(f"/devices/{d}").json() for d in last_seq]
        return all((d.get("last_reading") or {}).get("seq") == last_seq[d["id"]] for d in devices) and devices

    devices = wait_for(caught_up)
    assert devices, stage.logs()
    # The first machine's two counters were reset (one board for both): each flagged.
    assert devices[0]["counter_resets"] == 2 and devices[1]["counter_resets"] == 0
    meters = merchant.get(f"/subscriptions/{subscription_id}/usage").json()["meters"]
    assert {m: meters[m]["total"] for m in expected} == {m: str(v) for m, v in expected.items()}
