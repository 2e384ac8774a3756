"""A reseller's API key, swept over the route table (route_sweep.py): every
merchant route that does not take reseller keys refuses it (403
`reseller_key`, before any object is looked at), and every route that does
answers another reseller's customer or subscription as one that does not
exist (404), leaving it as it was."""
from __future__ import annotations

from tests.integration.route_sweep import (
    ACCEPT, Owner, fill, path_parameters, route_id, routes_with, valid_body,
)

MERCHANT_ROUTES = routes_with("merchant")
RESELLER_ROUTES = [route for route in MERCHANT_ROUTES if route.resellers]
# What a reseller's key may do (docs/api.md, "Resellers, commissions and royalties").
EXPECTED = {("POST", "/customers"), ("GET", "/customers"), ("GET", "/customers/{customer_id}"),
            ("POST", "/subscriptions"), ("GET", "/subscriptions"), ("GET", "/subscriptions/{subscription_id}")}


def reseller_key(owner_api, name: str) -> str:
    payee = owner_api.post("/payees", {"kind": "reseller", "name": name, "email": "r@reseller.fr",
                                       "rules": [{"percent": "10"}]}).json
    return owner_api.post(f"/payees/{payee['id']}/api-keys", {}).json["api_key"]


def test_only_the_customer_and_subscription_routes_take_a_reseller_key():
    assert {(route.method, route.path) for route in RESELLER_ROUTES} == EXPECTED


def test_every_other_merchant_route_refuses_a_reseller_key(merchant):
    key = merchant.as_key(reseller_key(merchant, "Réseau Vision"))
    failures = []
    for route in MERCHANT_ROUTES:
        if route.resellers:
            continue
        path = fill(route, {name: f"{name}_x" for name in path_parameters(route)})
        response = key.request(route.method, path, valid_body(route), headers={"Accept": ACCEPT})
        if (response.status, (response.json or {}).get("error", {}).get("code")) != (403, "reseller_key"):
            failures.append((route_id(route), response))
    assert not failures, "\n".join(map(str, failures))


def test_another_resellers_objects_are_404_and_untouched(merchant):
    owner = Owner(merchant.as_key(reseller_key(merchant, "Réseau Vision")))
    owner.api.merchant = merchant.merchant
    offer_id = merchant.post("/offers", {"code": "free", "name": "Free", "currency": "EUR",
                                         "billing_interval": "month",
                                         "components": [{"code": "base", "type": "flat", "amount": "0.00"}]}).json["id"]
    owner._made["offer_id"] = offer_id
    other = merchant.as_key(reseller_key(merchant, "Optic Partners"))
    failures = []
    for route in RESELLER_ROUTES:
        names = path_parameters(route)
        if not names:
            continue
        path = fill(route, {name: owner[name] for name in names})
        before = owner.api.get(path).json
        response = other.request(route.method, path, valid_body(route), headers={"Accept": ACCEPT})
        if (response.status, response.json["error"]["code"]) != (404, "not_found"):
            failures.append((route_id(route), response))
        if owner.api.get(path).json != before:
            failures.append((route_id(route), "changed"))
    customer = owner["customer_id"]
    for body in ({"customer_id": customer, "offer_id": offer_id},):
        response = other.post("/subscriptions", body)
        if response.status != 404:
            failures.append(("POST /subscriptions", response))
    listed = other.get(f"/subscriptions?customer_id={customer}")
    if listed.status != 404:
        failures.append(("GET /subscriptions", listed))
    assert [c["id"] for c in other.get("/customers").json["data"]] == []
    assert not failures, "\n".join(map(str, failures))
