"""The local stage as a merchant meets it: over HTTP, on the ports it prints."""
import os
import signal
import time
from datetime import datetime, timedelta

import requests

from tests.e2e.conftest import LocalStage


def test_health_answers(stage):
    response = requests.get(stage.url + "/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["stage"] == "local"


def test_start_up_prints_what_runs_where(stage):
    text = "".join(stage.output)
    for port in stage.ports.values():
        assert f":{port}" in text
    assert "local-admin-key" in text


def test_merchant_lifecycle_over_http(operator, new_merchant):
    merchant = new_merchant()
    me = merchant.get("/merchant")
    assert me.status_code == 200 and me.json()["id"] == merchant.merchant["id"]
    assert merchant.as_key("sk_nope").get("/merchant").status_code == 401
    assert merchant.as_key(None).get("/merchant").status_code == 401


def test_idempotency_over_http(operator):
    body = {"name": "Centre d'appels Nord", "default_currency": "EUR", "invoice_prefix": "CAN"}
    first = operator.post("/admin/merchants", json=body, headers={"Idempotency-Key": "can-1"})
    again = operator.post("/admin/merchants", json=body, headers={"Idempotency-Key": "can-1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = operator.post("/admin/merchants", json={**body, "name": "Sud"}, headers={"Idempotency-Key": "can-1"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_mismatch"


def test_bad_input_is_400_naming_the_field(operator):
    response = operator.post("/admin/merchants", json={"name": "X", "default_currency": "EUR", "invoice_prefix": 3})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "invoice_prefix"
    response = operator.request("POST", "/admin/merchants", data=b"{not json",
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_local_clock_moves_forward_only(operator):
    now = operator.get("/_local/clock").json()["now"]
    # A day ahead, not years: every subscription of the shared stage is billed
    # for every period the clock passes.
    ahead = (datetime.fromisoformat(now.replace("Z", "+00:00")) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    moved = operator.post("/_local/clock", json={"now": ahead}).json()
    assert moved["now"] >= ahead
    back = operator.post("/_local/clock", json={"now": now}).json()
    assert back["now"] >= ahead


def _descendants(pid: int) -> set[int]:
    """Every process whose ancestry leads to `pid` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_every_process(tmp_path):
    local = LocalStage(tmp_path)
    local.wait_ready()
    children = _descendants(local.process.pid)
    assert len(children) >= 4  # moto, localstripe, the API, the driver (and their own children)
    assert local.stop(signal.SIGTERM) == 0
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)]
    assert "Local stage stopped." in "".join(local.output)
