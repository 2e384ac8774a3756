"""The catalog on the local stage, over HTTP: API.md's example offer."""
from tests.unit.test_catalog import API_EXAMPLE


def test_api_example_offer_is_created_and_read_back(new_merchant):
    merchant = new_merchant()
    created = merchant.post("/offers", json=API_EXAMPLE)
    assert created.status_code == 201, created.text
    offer = created.json()
    assert offer["id"].startswith("off_") and offer["object"] == "offer"
    assert offer["status"] == "active" and offer["version"] == 1

    read = merchant.get(f"/offers/{offer['id']}")
    assert read.status_code == 200
    assert read.json() == offer
    assert {name: offer[name] for name in API_EXAMPLE} == API_EXAMPLE
    assert [o["id"] for o in merchant.get("/offers").json()["data"]] == [offer["id"]]
    assert new_merchant().get(f"/offers/{offer['id']}").status_code == 404
