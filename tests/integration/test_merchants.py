"""Merchants, API keys, authentication, idempotency and the error object,
through the HTTP API (moto in-process)."""
import pytest

from tests.integration.conftest import Api


def test_operator_creates_a_merchant_whose_key_reads_it(operator, merchant):
    assert merchant.merchant["api_key"].startswith("sk_")
    response = merchant.get("/merchant")
    assert response.status == 200
    body = response.json
    assert body["id"] == merchant.merchant["id"] and body["id"].startswith("mer_")
    assert body["tax_rates"] == {"FR": "20.0", "DE": "19.0"}
    assert body["dunning_retry_days"] == [1, 3, 5, 7]
    assert body["timezone"] == "Europe/Paris"
    assert "api_key" not in body  # shown only once, at creation


def test_keys_are_stored_hashed(merchant):
    from chalicelib.store.merchants import ApiKeyRecord

    key = merchant.merchant["api_key"]
    stored = [record.attribute_values for record in ApiKeyRecord.scan()]
    assert stored and all(key not in str(values) for values in stored)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer sk_wrong", "Basic abc", "test-admin-key"])
def test_missing_or_wrong_key_is_401(client, merchant, header):
    api = Api(client)
    headers = {"Authorization": header} if header else {}
    response = api.get("/merchant", headers=headers)
    assert response.status == 401
    assert response.json["error"]["type"] == "authentication_error"
    assert response.json["error"]["request_id"]


def test_operator_key_is_refused_on_merchant_routes_and_merchant_key_on_admin(operator, merchant):
    assert operator.get("/merchant").status == 401
    response = merchant.post("/admin/merchants", {"name": "X", "default_currency": "EUR", "invoice_prefix": "X"})
    assert response.status == 401


def test_beside_an_aws_signature_the_operator_key_is_in_its_own_header(client):
    from tests.integration.conftest import ADMIN_KEY

    signed = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/eu-west-1/execute-api/aws4_request, Signature=0f"
    body = {"name": "Signée", "default_currency": "EUR", "invoice_prefix": "SG"}
    made = Api(client).post("/admin/merchants", body, headers={"Authorization": signed, "X-Operator-Key": ADMIN_KEY})
    assert made.status == 201, made
    for headers in ({"Authorization": signed}, {"Authorization": signed, "X-Operator-Key": "wrong"},
                    {"X-Operator-Key": " "}):
        assert Api(client).post("/admin/merchants", body, headers=headers).status == 401, headers
    # A merchant route ignores the header: a merchant speaks with its own key.
    assert Api(client).get("/merchant", headers={"X-Operator-Key": ADMIN_KEY}).status == 401


def test_health_is_public(client):
    response = Api(client).get("/health")
    assert response.status == 200
    assert response.json["status"] == "ok" and response.json["stage"] == "test"


def test_patch_merchant_changes_only_given_fields(merchant):
    response = merchant.patch("/merchant", {"alert_emails": ["a@b.fr", "c@d.fr"], "dunning_retry_days": [2, 4]})
    assert response.status == 200
    assert response.json["alert_emails"] == ["a@b.fr", "c@d.fr"]
    assert response.json["dunning_retry_days"] == [2, 4]
    assert response.json["name"] == "Optique Durand"
    assert merchant.get("/merchant").json["dunning_retry_days"] == [2, 4]


def test_key_rotation(merchant):
    old_key = merchant.key
    created = merchant.post("/merchant/api-keys")
    assert created.status == 201
    new = merchant.as_key(created.json["api_key"])
    assert new.get("/merchant").status == 200
    assert merchant.get("/merchant").status == 200  # the old key keeps working
    prefixes = [k["prefix"] for k in new.get("/merchant").json["api_keys"]]
    assert len(prefixes) == 2 and created.json["prefix"] in prefixes
    old_prefix = next(p for p in prefixes if old_key.startswith(p))
    assert new.delete(f"/merchant/api-keys/{old_prefix}").status == 200
    assert merchant.get("/merchant").status == 401
    assert new.get("/merchant").status == 200
    # The last key cannot be revoked (the merchant would be locked out).
    assert new.delete(f"/merchant/api-keys/{created.json['prefix']}").status == 400
    assert new.delete("/merchant/api-keys/sk_nothere").status == 404


@pytest.mark.parametrize(
    "body, param",
    [
        ({"default_currency": "EUR", "invoice_prefix": "OD"}, "name"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "colour": "red"}, "colour"),
        ({"name": "X", "default_currency": "EURO", "invoice_prefix": "OD"}, "default_currency"),
        ({"name": "X", "default_currency": "XYZ", "invoice_prefix": "OD"}, "default_currency"),
        ({"name": 12, "default_currency": "EUR", "invoice_prefix": "OD"}, "name"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "alert_emails": ["nope"]}, "alert_emails[0]"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "tax_rates": {"FR": 20}}, "tax_rates.FR"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "dunning_retry_days": [1.0]}, "dunning_retry_days[0]"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "dunning_retry_days": [3, 1]}, None),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "OD", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "X", "default_currency": "EUR", "invoice_prefix": "od-2026"}, "invoice_prefix"),
    ],
)
def test_bad_merchant_is_400_naming_the_field(operator, body, param):
    response = operator.post("/admin/merchants", body)
    assert response.status == 400, response
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize("raw", ['{"name": ', "[1, 2]", "null", "\x00\xff", '"text"'])
def test_malformed_json_is_400(operator, raw):
    response = operator.request("POST", "/admin/merchants", raw=raw)
    assert response.status == 400
    assert response.json["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_400(operator):
    response = operator.post("/admin/merchants", {"name": "x" * 300_000, "default_currency": "EUR", "invoice_prefix": "A"})
    assert response.status == 400
    assert response.json["error"]["code"] == "body_too_large"


def test_same_idempotency_key_replays_the_first_answer(operator):
    body = {"name": "Laboratoire Martin", "default_currency": "EUR", "invoice_prefix": "LM"}
    first = operator.post("/admin/merchants", body, headers={"Idempotency-Key": "create-lm-1"})
    again = operator.post("/admin/merchants", body, headers={"Idempotency-Key": "create-lm-1"})
    assert first.status == again.status == 201
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = operator.post("/admin/merchants", {**body, "name": "Autre"}, headers={"Idempotency-Key": "create-lm-1"})
    assert other.status == 409
    assert other.json["error"]["code"] == "idempotency_mismatch"
    fresh = operator.post("/admin/merchants", body, headers={"Idempotency-Key": "create-lm-2"})
    assert fresh.status == 201 and fresh.json["id"] != first.json["id"]


def test_idempotency_keys_are_scoped_per_merchant(new_merchant):
    first, second = new_merchant(), new_merchant()
    a = first.post("/merchant/api-keys", headers={"Idempotency-Key": "k"})
    b = second.post("/merchant/api-keys", headers={"Idempotency-Key": "k"})
    assert a.status == b.status == 201
    assert a.json["api_key"] != b.json["api_key"]


def test_a_refused_request_is_replayed_as_refused(operator):
    bad = {"name": "X", "default_currency": "ZZZ", "invoice_prefix": "X"}
    first = operator.post("/admin/merchants", bad, headers={"Idempotency-Key": "bad-1"})
    again = operator.post("/admin/merchants", bad, headers={"Idempotency-Key": "bad-1"})
    assert first.status == again.status == 400
    assert again.json == first.json
