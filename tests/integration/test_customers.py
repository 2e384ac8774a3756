"""Customers through the HTTP API (moto): creation, the one-page relationship,
lookups by e-mail and external id, edits, and the store functions the
payments code uses (default card, Stripe customer id, credit)."""
from decimal import Decimal

import pytest

from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.store import customers as store
from chalicelib.store.base import transaction
from tests.integration.domain_events import published  # noqa: F401  (fixture)

DURAND = {"name": "Optique Durand", "email": "Compta@Optique-Durand.fr", "country": "FR"}


def created(api, **fields):
    response = api.post("/customers", {**DURAND, **fields})
    assert response.status == 201, response
    return response.json


def refused(response, status, param=None, code=None):
    assert response.status == status, response
    error = response.json["error"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert error["message"]
    return error


def test_create_returns_the_customer(merchant, published):
    body = created(merchant, external_id="ERP-0042", locale="fr", metadata={"siret": "123"})
    assert body["id"].startswith("cus_") and body["object"] == "customer"
    assert body["email"] == "Compta@Optique-Durand.fr" and body["country"] == "FR"
    assert body["external_id"] == "ERP-0042" and body["locale"] == "fr"
    assert body["tax_exempt"] is False and body["metadata"] == {"siret": "123"}
    assert body["default_payment_method"] is None
    assert published.of_type("customer.created")[0]["customer"] == body
    assert published.of_type("customer.created")[0]["merchant_id"] == merchant.merchant["id"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"email": "a@b.fr", "country": "FR"}, "name"),
        ({**DURAND, "email": "not-an-email"}, "email"),
        ({**DURAND, "country": "XX"}, "country"),
        ({**DURAND, "country": "fr"}, "country"),
        ({**DURAND, "tax_exempt": "yes"}, "tax_exempt"),
        ({**DURAND, "metadata": {"k": 1}}, "metadata.k"),
        ({**DURAND, "metadata": {"": "x"}}, "metadata"),
        ({**DURAND, "colour": "blue"}, "colour"),
        ({**DURAND, "external_id": ""}, "external_id"),
    ],
)
def test_bad_input_is_400_naming_the_field(merchant, body, param):
    refused(merchant.post("/customers", body), 400, param=param)


def test_external_id_is_unique_per_merchant(merchant, new_merchant):
    first = created(merchant, external_id="ERP-1")
    error = refused(merchant.post("/customers", {**DURAND, "external_id": "ERP-1"}), 409,
                    param="external_id", code="duplicate_external_id")
    assert first["id"] in error["message"]
    # Another merchant has its own external ids.
    created(new_merchant(), external_id="ERP-1")


def test_lookup_by_email_is_case_insensitive_and_by_external_id(merchant):
    a = created(merchant, external_id="ERP-A")
    b = created(merchant, external_id="ERP-B")
    other = created(merchant, email="someone@else.fr")
    by_email = merchant.get("/customers?email=compta@optique-durand.FR").json
    assert [c["id"] for c in by_email["data"]] == [b["id"], a["id"]]  # newest first
    assert merchant.get("/customers?external_id=ERP-A").json["data"] == [a]
    assert merchant.get("/customers?external_id=nope").json["data"] == []
    assert merchant.get("/customers?external_id=ERP-A&email=someone@else.fr").json["data"] == []
    assert merchant.get("/customers?external_id=ERP-A&email=COMPTA@optique-durand.fr").json["data"] == [a]
    assert merchant.get("/customers?email=someone@else.fr").json["data"] == [other]


def test_plain_list_pages_newest_first(merchant):
    ids = [created(merchant, email=f"c{i}@d.fr")["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        path = "/customers?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = merchant.get(path).json
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))


def test_a_cursor_of_another_merchant_or_listing_is_refused(merchant, new_merchant):
    for i in range(3):
        created(merchant, email=f"c{i}@d.fr")
    cursor = merchant.get("/customers?limit=1").json["next_cursor"]
    assert cursor
    refused(new_merchant().get(f"/customers?limit=1&cursor={cursor}"), 400, param="cursor")
    refused(merchant.get(f"/customers?limit=1&email=c1@d.fr&cursor={cursor}"), 400, param="cursor")


def test_patch_changes_the_given_fields_and_moves_the_lookups(merchant, published):
    customer = created(merchant, external_id="ERP-1", locale="fr")
    response = merchant.patch(f"/customers/{customer['id']}",
                              {"email": "new@durand.fr", "external_id": "ERP-2", "tax_exempt": True})
    assert response.status == 200, response
    assert response.json["email"] == "new@durand.fr" and response.json["external_id"] == "ERP-2"
    assert response.json["tax_exempt"] is True and response.json["name"] == "Optique Durand"
    assert merchant.get("/customers?email=compta@optique-durand.fr").json["data"] == []
    assert [c["id"] for c in merchant.get("/customers?email=NEW@durand.fr").json["data"]] == [customer["id"]]
    assert merchant.get("/customers?external_id=ERP-1").json["data"] == []
    assert merchant.get("/customers?external_id=ERP-2").json["data"][0]["id"] == customer["id"]
    # The released external id can be taken by another customer.
    created(merchant, external_id="ERP-1")
    # null clears an external id or a locale, and nothing else.
    cleared = merchant.patch(f"/customers/{customer['id']}", {"external_id": None, "locale": None}).json
    assert cleared["external_id"] is None and cleared["locale"] is None
    created(merchant, external_id="ERP-2")
    refused(merchant.patch(f"/customers/{customer['id']}", {"name": None}), 400, param="name")
    updated = published.of_type("customer.updated")
    assert updated[0]["previous"]["email"] == "Compta@Optique-Durand.fr"


def test_patch_to_an_external_id_held_by_another_customer_is_409(merchant):
    created(merchant, external_id="ERP-1")
    second = created(merchant, external_id="ERP-2")
    refused(merchant.patch(f"/customers/{second['id']}", {"external_id": "ERP-1"}), 409,
            param="external_id", code="duplicate_external_id")
    assert merchant.get(f"/customers/{second['id']}").json["external_id"] == "ERP-2"


def test_a_stale_edit_loses_with_version_conflict(merchant):
    customer = created(merchant)
    record = store.get_customer(merchant.merchant["id"], customer["id"], consistent=True)
    assert merchant.patch(f"/customers/{customer['id']}", {"name": "Durand & fils"}).status == 200
    with pytest.raises(Conflict) as conflict:
        store.update_customer(record, {"name": "stale"}, "2026-01-01T00:00:00Z")
    assert conflict.value.code == "version_conflict"
    assert merchant.get(f"/customers/{customer['id']}").json["name"] == "Durand & fils"


def test_the_page_shows_the_whole_relationship(merchant):
    customer = created(merchant)
    page = merchant.get(f"/customers/{customer['id']}").json
    assert {k: page[k] for k in customer} == customer
    assert page["subscriptions"] == [] and page["latest_invoices"] == []
    assert page["devices"] == [] and page["open_alerts"] == []


def test_unknown_or_malformed_ids_are_404(merchant):
    for path in ("/customers/cus_00000000000000000000000000", "/customers/nope", "/customers/cus_x%23customer"):
        refused(merchant.get(path), 404, code="not_found")
    refused(merchant.patch("/customers/cus_00000000000000000000000000", {"name": "x"}), 404)


# ---------------------------------------------------------------------------
# What the payments code writes


VISA = {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2027, "payment_method_id": "pm_1"}


def test_default_card_shows_on_the_page_and_in_the_expiry_index(merchant):
    customer = created(merchant)
    merchant_id = merchant.merchant["id"]
    store.set_default_card(merchant_id, customer["id"], VISA)
    store.set_default_card(merchant_id, customer["id"], VISA)  # idempotent
    page = merchant.get(f"/customers/{customer['id']}").json
    assert page["default_payment_method"] == {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2027}
    record = store.get_customer(merchant_id, customer["id"], consistent=True)
    assert record.card_expiry == "2027-03" and record.card()["payment_method_id"] == "pm_1"
    expiring = [r.customer_id for r in store.CustomerRecord.scan(store.CustomerRecord.card_expiry == "2027-03")]
    assert expiring == [customer["id"]]
    # A card change does not make a merchant's concurrent edit fail (no version bump).
    assert merchant.patch(f"/customers/{customer['id']}", {"name": "x"}).status == 200
    store.set_default_card(merchant_id, customer["id"], None)
    record = store.get_customer(merchant_id, customer["id"], consistent=True)
    assert record.default_card is None and record.card_expiry is None
    with pytest.raises(NotFound):
        store.set_default_card(merchant_id, "cus_00000000000000000000000000", VISA)
    with pytest.raises(ValueError):
        store.set_default_card(merchant_id, customer["id"], {**VISA, "exp_month": 13})


def test_stripe_customer_id_is_set_once(merchant):
    customer = created(merchant)
    merchant_id = merchant.merchant["id"]
    store.set_stripe_customer_id(merchant_id, customer["id"], "cus_stripe_1")
    store.set_stripe_customer_id(merchant_id, customer["id"], "cus_stripe_1")
    with pytest.raises(Conflict) as conflict:
        store.set_stripe_customer_id(merchant_id, customer["id"], "cus_stripe_2")
    assert conflict.value.code == "stripe_customer_exists"
    assert store.get_customer(merchant_id, customer["id"]).stripe_customer_id == "cus_stripe_1"
    with pytest.raises(NotFound):  # no customer: nothing created
        store.set_stripe_customer_id(merchant_id, "cus_00000000000000000000000000", "cus_stripe_3")


def test_credit_balance_moves_only_from_the_balance_read(merchant):
    customer = created(merchant)
    merchant_id = merchant.merchant["id"]
    with transaction() as write:
        store.credit_balance_update(write, merchant_id, customer["id"], "EUR", Decimal(0), Decimal("12.5"))
    assert store.get_customer(merchant_id, customer["id"]).credit_balance("EUR") == Decimal("12.50")
    assert merchant.get(f"/customers/{customer['id']}").json["credit_balances"] == {"EUR": "12.50"}
    with pytest.raises(Exception):  # a stale balance: the transaction fails, nothing moves
        with transaction() as write:
            store.credit_balance_update(write, merchant_id, customer["id"], "EUR", Decimal(0), Decimal("1"))
    with transaction() as write:
        store.credit_balance_update(write, merchant_id, customer["id"], "EUR", Decimal("12.50"), Decimal(0))
    assert store.get_customer(merchant_id, customer["id"]).credit_balance("EUR") == 0


def test_patch_replaces_metadata_and_keeps_the_card(merchant):
    customer = created(merchant, metadata={"a": "1", "b": "2"})
    store.set_default_card(merchant.merchant["id"], customer["id"], VISA)
    patched = merchant.patch(f"/customers/{customer['id']}", {"metadata": {"c": "3"}, "country": "DE"}).json
    assert patched["metadata"] == {"c": "3"} and patched["country"] == "DE"
    assert patched["default_payment_method"]["last4"] == "4242"
    assert merchant.patch(f"/customers/{customer['id']}", {}).json == patched
