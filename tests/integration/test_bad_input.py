"""Issue 24, "no server error anywhere": methods a path does not serve,
instants out of range, and the defaults and number forms the API takes
(an event's time, a merchant's invoice prefix, whole numbers as JSON
integers)."""
from __future__ import annotations

import json

import pytest

from chalicelib.api.http import route_table
from chalicelib.services.merchants import invoice_prefix_from
from tests.integration.test_usage import OFFER, clico, clock_start, dead_letters, deliver, message, sqs_event  # noqa: F401
from tests.integration.test_usage import usage_of, utc

OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T00:00:00Z"]
UNSERVED = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "HEAD")


def unserved_methods() -> list[tuple[str, str, str]]:
    """(path, method, allowed) for every path of the app and a method it does not serve."""
    from app import app

    served: dict[str, set[str]] = {}
    for route in route_table(app):
        served.setdefault(route.path, set()).add(route.method)
    return [(path, method, ", ".join(sorted(methods))) for path, methods in sorted(served.items())
            for method in UNSERVED if method not in methods]


def test_a_method_a_path_does_not_serve_is_405_with_allow(merchant):
    cases = unserved_methods()
    assert len(cases) > 100
    for path, method, allowed in cases:
        concrete = path.replace("{", "x").replace("}", "")
        response = merchant.request(method, concrete)
        assert response.status == 405, (method, path, response)
        assert set(response.headers["Allow"].split(", ")) == set(allowed.split(", ")), (method, path)
        if method != "HEAD":
            error = response.json["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "method_not_allowed", error
            assert method in error["message"] and error["param"] is None and error["request_id"]


def test_405_comes_before_the_key_is_looked_at(operator):
    response = operator.as_key(None).request("DELETE", "/customers")
    assert response.status == 405 and response.json["error"]["code"] == "method_not_allowed"


def test_chalice_s_own_refusals_carry_the_error_object(merchant):
    response = merchant.request("POST", "/customers", raw="name=x", headers={"Content-Type": "text/plain"})
    assert response.status == 415, response
    assert response.json["error"]["code"] == "unsupported_media_type"


# -- instants out of range --------------------------------------------------------------


@pytest.mark.parametrize("instant", OUT_OF_RANGE)
def test_an_instant_out_of_range_is_400_naming_the_field(clico, instant):
    good = {"event_id": "e1", "subscription_id": clico.subscription_id, "meter": "calls", "quantity": "1"}
    response = clico.post("/usage", {"events": [{**good, "timestamp": instant}]})
    assert response.status == 400 and response.json["error"]["param"] == "events[0].timestamp", response
    assert "1970" in response.json["error"]["message"]
    response = clico.get(f"/subscriptions/{clico.subscription_id}/usage?period_start={instant.replace('+', '%2B')}")
    assert response.status == 400 and response.json["error"]["param"] == "period_start", response


def test_a_device_message_out_of_range_is_parked_alone(clico, client):
    good = message(clico, 1, utc(2026, 11, 2), montages=100)
    later = message(clico, 4, utc(2026, 11, 3), montages=107)
    bad = [json.dumps({"seq": 2 + i, "ts": instant, "counters": {"montages": 1},
                       "merchant_id": clico.merchant_id, "device_id": "neksia-0042"})
           for i, instant in enumerate(OUT_OF_RANGE)]
    assert deliver(client, sqs_event([good, *bad, later])) == []
    assert usage_of(clico)["montages"]["total"] == "7"
    parked = dead_letters()
    assert [p["body"]["original"] for p in parked] == bad
    assert all(p["body"]["reason"].startswith("ts: must be from 1970") for p in parked), parked


# -- defaults ----------------------------------------------------------------------------


def test_an_event_without_timestamp_counts_when_received(clico):
    now = utc(2026, 11, 25)  # the clico fixture's clock
    response = clico.post("/usage", {"events": [
        {"event_id": "call-1", "subscription_id": clico.subscription_id, "meter": "calls", "quantity": 2}]})
    assert response.status == 200 and response.json == {"accepted": 1, "duplicates": 0}, response
    calls = usage_of(clico)["calls"]
    assert calls["total"] == "2" and calls["last_at"] == now.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("name, prefix", [
    ("Optique Durand", "OD"), ("Fuzz", "FU"), ("Clic&O Neksia SAS Grand Est Ouest Nord", "CONSGE"),
    ("Élodie Çà", "EC"), ("Labo 2 Martin", "L2M"), ("日本", "INV"), ("A", "INV"),
])
def test_an_invoice_prefix_from_the_name(name, prefix):
    assert invoice_prefix_from(name) == prefix


def test_a_merchant_without_invoice_prefix_gets_one_from_its_name(operator):
    response = operator.post("/admin/merchants", {"name": "Optique Durand", "default_currency": "EUR"})
    assert response.status == 201, response
    merchant = response.json
    assert merchant["invoice_prefix"] == "OD"
    assert (merchant["locale"], merchant["timezone"], merchant["dunning_retry_days"]) == ("en", "UTC", [1, 3, 5, 7])
    assert merchant["alert_emails"] == [] and merchant["tax_rates"] == {}


# -- whole numbers -------------------------------------------------------------------


def test_counts_are_json_integers_or_decimal_strings(clico):
    offer = json.loads(json.dumps(OFFER))
    offer.update(code="counts", interval_count="1", trial_days=0)
    metered = next(c for c in offer["components"] if c["type"] == "metered" and "tiers" not in c)
    metered.update(package_size=10, included_units=5)
    offer.pop("ladder", None), offer.pop("tier_rank", None)
    response = clico.post("/offers", offer)
    assert response.status == 201, response
    assert response.json["interval_count"] == 1
    component = next(c for c in response.json["components"] if c["code"] == metered["code"])
    assert (component["package_size"], component["included_units"]) == ("10", "5")
    floats = clico.post("/offers", {**offer, "code": "floats", "interval_count": 1.0})
    assert floats.status == 400 and floats.json["error"]["param"] == "interval_count"
