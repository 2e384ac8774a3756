"""The load run (`make load`, tests/load/run.py) in short against the
session's stage: 50 machines for 20 s with duplicates, readings out of
order and resets, a billing run and API traffic beside them; every total
exact. Then the check itself is shown to catch a reading counted that no
machine sent and one sent that was never counted."""
from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from tests.e2e.conftest import ROOT
from tests.load import run as load


@pytest.mark.timeout(240)
def test_a_short_load_run_loses_nothing_and_counts_nothing_twice(stage):
    state: dict = {}
    figures = load.run(
        stage.url, stage.ports["mqtt"], f"http://127.0.0.1:{stage.ports['stripe']}",
        f"http://127.0.0.1:{stage.ports['moto']}", devices=50, seconds=20, interval=5, per_subscription=10,
        connections=10, tracers=10, api_rate=4, seed=7, state=state, reset_rate=0.04)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "load-short.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    assert figures["problems"] == [], json.dumps(figures, indent=1)[:6000] + stage.logs()
    assert figures["usage"]["lost"] == {} and figures["usage"]["double_counted"] == {}
    # What the run was made of: every kind of trouble at least once.
    assert figures["duplicates"] and figures["out_of_order_pairs"] and figures["resets"]
    assert figures["usage"]["expected"]["montages"] > 0 and figures["usage"]["expected"]["calls"] > 0
    assert figures["billing_run"]["subscriptions_billed"] == 5
    assert figures["invoices"]["invoices"] == 10 and figures["invoices"]["double_charges"] == 0
    assert figures["lag"]["samples"] > 0

    # The check fails when a reading is counted that the model does not
    # hold (a machine publishing behind the run's back)...
    merchant, machines = state["merchant"], state["machines"]
    machine = machines[0]
    newest = max(machine.published, key=lambda m: (m["ts"], m["seq"]))
    extra = {"seq": newest["seq"] + 1, "ts": load.iso_now(state["clock"]),
             "counters": {**newest["counters"], "montages": newest["counters"]["montages"] + 7}}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="load-extra")
    client.connect("127.0.0.1", stage.ports["mqtt"])
    client.loop_start()
    client.publish(f"billing/{state['merchant_id']}/{machine.device_id}/counters", json.dumps(extra),
                   qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    deadline = time.monotonic() + 60
    while (merchant.get(f"/devices/{machine.device_id}").get("last_reading") or {}).get("seq") != extra["seq"]:
        assert time.monotonic() < deadline, stage.logs()
        time.sleep(0.3)
    check = load.check_usage(merchant, state["subscriptions"], machines, state["calls"], state["clock"].now())
    assert check["double_counted"] == {"montages": 7} and check["lost"] == {}
    [mismatch] = check["mismatches"]
    assert (mismatch["subscription_id"], mismatch["meter"]) == (machine.subscription_id, "montages")
    assert int(mismatch["got"]) - mismatch["expected"] == 7

    # ... and when the model holds a reading that was never counted.
    machine.published.append(extra)
    machine.published.append({**extra, "seq": extra["seq"] + 1, "ts": load.iso_now(state["clock"]),
                              "counters": {**extra["counters"], "tracings": extra["counters"]["tracings"] + 3}})
    check = load.check_usage(merchant, state["subscriptions"], machines, state["calls"], state["clock"].now())
    assert check["lost"] == {"tracings": 3} and check["double_counted"] == {}
