"""The reports on the local stage: its driver reads the billing table's
stream as Lambda would, so a merchant's new subscription and usage show in
its monthly summary and usage statistics within a moment."""
import time
import uuid

import pytest

from tests.e2e.test_subscriptions import per_act_subscription


def eventually(read, check, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_a_subscription_and_its_usage_reach_the_reports(new_merchant, stage):
    merchant = new_merchant(timezone="UTC")
    subscription = per_act_subscription(merchant)
    now = subscription["current_period_start"]
    month, day = now[:7], now[:10]
    assert merchant.post("/usage", json={"events": [{
        "event_id": f"e2e-{uuid.uuid4()}", "subscription_id": subscription["id"], "meter": "montages",
        "quantity": "4", "timestamp": now}]}).json()["accepted"] == 1

    summary = eventually(lambda: merchant.get("/reports/summary", params={"month": month}).json(),
                         lambda s: s["currencies"].get("EUR", {}).get("usage", {}).get("montages") == "4")
    if "EUR" not in summary["currencies"]:
        driver = (stage.state_dir / "driver.log").read_text(errors="replace")
        pytest.fail(f"no figures for {month}: {summary}\n--- driver.log\n{driver[-6000:]}")
    eur = summary["currencies"]["EUR"]
    assert (eur["new_subscriptions"], eur["active_subscriptions"], eur["usage"]) == (1, 1, {"montages": "4"})
    usage = merchant.get("/reports/usage", params={"meter": "montages", "from": day, "to": day}).json()
    assert usage["data"] == [{"day": day, "quantity": "4",
                              "subscriptions": [{"subscription_id": subscription["id"], "quantity": "4"}]}]
