"""Tenant isolation: another merchant's object is 404 on every GET path, never
403 and never the object (API.md: no existence oracle).

Each resource registers a function that creates one with merchant A's Api and
returns the GET paths that show it; the one test below runs every entry."""
from collections.abc import Callable

import pytest

from tests.integration.conftest import Api
from tests.unit.test_catalog import API_EXAMPLE

# (resource name, create(api_of_merchant_a) -> GET paths of what it created)
RESOURCES: list[tuple[str, Callable[[Api], list[str]]]] = []


def resource(name: str):
    def register(create: Callable[[Api], list[str]]):
        RESOURCES.append((name, create))
        return create

    return register


@resource("offer")
def _offer(api: Api) -> list[str]:
    response = api.post("/offers", API_EXAMPLE)
    assert response.status == 201, response
    return [f"/offers/{response.json['id']}"]


@resource("customer")
def _customer(api: Api) -> list[str]:
    response = api.post("/customers", {"name": "Optique Durand", "email": "compta@durand.fr", "country": "FR"})
    assert response.status == 201, response
    return [f"/customers/{response.json['id']}"]


@resource("subscription")
def _subscription(api: Api) -> list[str]:
    customer = api.post("/customers", {"name": "Optique Durand", "email": "compta@durand.fr", "country": "FR"})
    offer = api.post("/offers", API_EXAMPLE)
    response = api.post("/subscriptions", {"customer_id": customer.json["id"], "offer_id": offer.json["id"]})
    assert response.status == 201, response
    path = f"/subscriptions/{response.json['id']}"
    return [path, f"{path}/history", f"{path}/upcoming-invoice",
            f"/subscriptions?customer_id={customer.json['id']}"]


@pytest.mark.parametrize("name, create", RESOURCES, ids=[name for name, _ in RESOURCES])
def test_another_merchant_gets_404(new_merchant, name, create):
    owner, other = new_merchant(), new_merchant()
    paths = create(owner)
    assert paths
    for path in paths:
        assert owner.get(path).status == 200, path
        response = other.get(path)
        assert response.status == 404, (path, response)
        assert response.json["error"]["code"] == "not_found"
