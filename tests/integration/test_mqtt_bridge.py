"""The local stand-in for IoT Core: the embedded broker, the bridge applying
the topic rule, and the simulator, feeding the usage queue's handler (moto)."""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest

from infra.local.mqtt import rule_output, start_mqtt
from infra.local.simulator import plan

UTC = timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_rule_takes_merchant_and_device_from_the_topic():
    out = rule_output("billing/mer_a/neksia-1/counters", b'{"seq": 1, "ts": "t", "counters": {"m": 1.50}}')
    assert json.loads(out) == {"seq": 1, "ts": "t", "counters": {"m": "1.50"}, "merchant_id": "mer_a",
                               "device_id": "neksia-1"}  # decimals stay as the device wrote them
    # A payload naming another merchant or device is overruled by its topic;
    # what the rule does not select is left behind.
    forged = rule_output("billing/mer_a/neksia-1/counters",
                         b'{"merchant_id": "mer_b", "device_id": "x", "seq": 2, "extra": true}')
    assert json.loads(forged) == {"seq": 2, "merchant_id": "mer_a", "device_id": "neksia-1"}
    assert json.loads(rule_output("billing/mer_a/d/counters", b"{}")) == {"merchant_id": "mer_a", "device_id": "d"}
    # Anything but a JSON object goes as it is (the handler parks it, saying why).
    assert rule_output("billing/mer_a/d/counters", b"\x00garbage") == "\x00garbage"
    assert rule_output("billing/mer_a/d/other", b"{}") is None


def test_the_simulator_plans_a_reset_and_a_duplicate():
    start = datetime(2026, 11, 1, tzinfo=UTC)
    messages = plan(3, 6, start, timedelta(days=1), seed=7)
    assert len(messages) == 3 * 6 + 1
    keys = [(device, m["seq"]) for device, m in messages]
    assert len(set(keys)) == len(keys) - 1
    first = [m for device, m in messages if device == "neksia-0001"]
    values = [m["counters"]["montages"] for m in first]
    assert any(b < a for a, b in zip(values, values[1:]))
    others = [m["counters"]["montages"] for device, m in messages if device == "neksia-0002"]
    assert others == sorted(others)


@pytest.mark.timeout(60)
def test_a_paho_client_publishes_and_the_usage_appears(aws):
    """A real MQTT client -> the broker -> the bridge -> UsageQueue -> the handler."""
    import paho.mqtt.client as mqtt

    from app import app
    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.domain.periods import Interval
    from chalicelib.domain.usage import UsageCalendar
    from chalicelib.store import devices as device_store
    from chalicelib.store import usage as usage_store
    from infra.local.lambda_events import drain_once

    merchant_id, subscription_id = "mer_" + "0" * 26, "sub_" + "0" * 26
    start = datetime(2026, 11, 1, tzinfo=UTC)
    use_clock(FixedClock(datetime(2026, 11, 25, tzinfo=UTC)))
    device_store.attach_device(
        merchant_id, "neksia-0042",
        device_store.AttachedSubscription(subscription_id, "cus_x", UsageCalendar(start, start, Interval("month"))),
        start,
    )
    port = free_port()
    broker, bridge = start_mqtt(port, os.environ["USAGE_QUEUE_URL"], os.environ["USAGE_DEAD_LETTER_QUEUE_URL"])
    try:
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="neksia-0042")
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        for seq, day, montages in ((1, 2, 100), (2, 3, 112), (2, 3, 112)):
            payload = {"seq": seq, "ts": f"2026-11-{day:02d}T10:00:00Z", "counters": {"montages": montages}}
            publisher.publish(f"billing/{merchant_id}/neksia-0042/counters", json.dumps(payload), qos=1).wait_for_publish(5)
        publisher.disconnect()
        publisher.loop_stop()
        deadline = time.monotonic() + 20
        while bridge.forwarded < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bridge.forwarded == 3
        handler = app.handler_map["ingest_usage"]
        while drain_once(os.environ["USAGE_QUEUE_URL"], handler):
            pass
    finally:
        bridge.stop()
        broker.stop()
        use_clock(None)
    usage = usage_store.usage_for(merchant_id, subscription_id, start)
    assert usage["montages"].total == 12
    assert device_store.get_device(merchant_id, "neksia-0042").counters.last_seq == 2
