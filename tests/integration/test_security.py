"""Security, swept over the route table (tests/integration/route_sweep.py):
keys, public routes, body sizes and string bounds of every request model,
and no secret or card number in the logs of a payment.

Forged and replayed Stripe webhooks: test_payments.py::
test_only_events_signed_by_stripe_within_the_tolerance_are_read. Tampered
and expired payment links: test_payments.py::
test_a_tampered_or_expired_link_is_a_readable_page and
test_the_page_never_completes_another_customers_card. Another merchant's
objects: test_tenancy.py."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sre_parse

import pytest

from chalicelib.api import openapi
from chalicelib.config import settings
from tests.integration.conftest import ADMIN_KEY
from tests.integration.route_sweep import (
    ACCEPT,
    PUBLIC,
    app_routes,
    fill,
    path_parameters,
    route_id,
    routes_with,
)

BAD_KEYS = {
    "no key": None,
    "an unknown key": "sk_0000000000000000000000000000000000000000000",
    "a malformed header": "Basic dXNlcjpwYXNz",
}


def _placeholder(route) -> str:
    return fill(route, {name: f"{name}_x" for name in path_parameters(route)})


def _refused(api, route, headers=None):
    response = api.request(route.method, _placeholder(route), {}, headers={"Accept": ACCEPT, **(headers or {})})
    ok = response.status == 401 and response.json["error"]["code"] == "authentication_error"
    return ok, response


def test_only_the_routes_api_md_makes_public_are_public():
    public = {(route.method, route.path) for route in routes_with("public")}
    assert public == PUBLIC, "a new public route is a decision: add it to route_sweep.PUBLIC and API.md"


def test_every_merchant_route_refuses_a_missing_wrong_or_operator_key(client):
    from tests.integration.conftest import Api

    routes = routes_with("merchant")
    assert len(routes) >= 30
    failures = _not_refused(Api, client, routes, {**BAD_KEYS, "the operator key": ADMIN_KEY})
    assert not failures, "\n".join(map(str, failures))


def test_every_operator_route_refuses_merchant_keys(client, merchant):
    from tests.integration.conftest import Api

    routes = routes_with("operator")
    assert routes
    failures = _not_refused(Api, client, routes, {**BAD_KEYS, "a merchant key": merchant.key})
    assert not failures, "\n".join(map(str, failures))


def _not_refused(Api, client, routes, keys: dict) -> list:
    """(route, key, response) of every route that did not refuse a key
    (a `Basic ...` one sent as the whole Authorization header)."""
    failures = []
    for route in routes:
        for what, key in keys.items():
            if key and key.startswith("Basic "):
                ok, response = _refused(Api(client), route, {"Authorization": key})
            else:
                ok, response = _refused(Api(client, key), route)
            if not ok:
                failures.append((route_id(route), what, response))
    return failures


def test_every_body_over_the_limit_is_refused(client, merchant, operator):
    """Every route that reads a JSON body refuses one over MAX_BODY_BYTES
    (256 KiB) before parsing it."""
    from tests.integration.conftest import Api

    limit = settings().max_body_bytes
    big = json.dumps({"name": "x" * limit}).encode()
    keys = {"merchant": merchant, "operator": operator, "public": Api(operator._client)}
    routes = [route for route in app_routes() if openapi.request_model(route) is not None]
    assert len(routes) >= 10
    failures = []
    for route in routes:
        response = keys[route.auth].request(route.method, _placeholder(route), raw=big)
        if (response.status, response.json["error"]["code"]) != (400, "body_too_large"):
            failures.append((route_id(route), response))
    assert not failures, "\n".join(map(str, failures))


# -- strings are bounded in every request model ------------------------------------------


def _unbounded(schema: dict, where: str, found: list) -> None:
    """Every string of a request has a maximum length (maxLength, or a
    pattern whose longest match is bounded), every list and map a maximum
    size, and no value is free-form."""
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            _unbounded(option, where, found)
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema and "const" not in schema:
        pattern = schema.get("pattern")
        bounded_pattern = pattern and sre_parse.parse(pattern).getwidth()[1] < sre_parse.MAXREPEAT
        if "maxLength" not in schema and not bounded_pattern:
            found.append(f"{where}: a string with no maximum length")
    elif kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: a list with no maximum size")
        _unbounded(schema.get("items", {}), f"{where}[]", found)
    elif kind == "object":
        for name, field in schema.get("properties", {}).items():
            _unbounded(field, f"{where}.{name}", found)
        values = [schema.get("additionalProperties")] + list(schema.get("patternProperties", {}).values())
        values = [value for value in values if value not in (None, False)]
        if values and "maxProperties" not in schema:
            found.append(f"{where}: a map with no maximum size")
        for pattern in schema.get("patternProperties", {}):
            if sre_parse.parse(pattern).getwidth()[1] >= sre_parse.MAXREPEAT:
                found.append(f"{where}: map keys with no maximum length")
        if "propertyNames" in schema:
            _unbounded({"type": "string", **schema["propertyNames"]}, f"{where}{{key}}", found)
        elif schema.get("additionalProperties") not in (None, False):
            found.append(f"{where}: map keys with no maximum length")
        for value in values:
            if value is True or value == {}:
                found.append(f"{where}{{}}: free-form values")
            else:
                _unbounded(value, f"{where}{{}}", found)
    elif not kind and "$ref" not in schema and not any(key in schema for key in ("anyOf", "oneOf", "allOf")):
        found.append(f"{where}: a value of any type")


# Values checked by another model after the request model: the catalog's
# component models, once a price override is merged into its component
# (catalog.apply_price_overrides; see the test below).
CHECKED_DOWNSTREAM = {"NewSubscription.price_overrides{}{}", "PhaseBody.price_overrides{}{}",
                      "SubscriptionChange.price_overrides{}{}"}


def test_every_string_of_every_request_model_is_bounded():
    from pydantic.json_schema import models_json_schema

    models = {openapi.request_model(route) for route in app_routes()} - {None}
    assert len(models) >= 10
    _, definitions = models_json_schema([(model, "validation") for model in models])
    found: list[str] = []
    for name, schema in definitions["$defs"].items():
        _unbounded(schema, name, found)
    assert [problem for problem in found if problem.split(":")[0] not in CHECKED_DOWNSTREAM] == []


def test_a_huge_value_anywhere_is_a_400_naming_the_field(merchant):
    from tests.unit.test_catalog import API_EXAMPLE

    customer = merchant.post("/customers", {"name": "Jeanne", "email": "j@example.fr", "country": "FR"}).json
    offer = merchant.post("/offers", API_EXAMPLE).json
    huge = "1" * 5000
    cases = [
        ("/customers", {"name": "x" * 5000, "email": "j@example.fr", "country": "FR"}, "name"),
        ("/customers", {"name": "J", "email": "j@example.fr", "country": "FR", "metadata": {"k" * 500: "v"}},
         "metadata"),
        ("/offers", {**API_EXAMPLE, "code": "big", "components": [
            {"code": "base", "type": "flat", "amount": huge}]}, "components[0].amount"),
        ("/subscriptions", {"customer_id": customer["id"], "offer_id": offer["id"], "start_at": huge}, "start_at"),
        ("/subscriptions", {"customer_id": customer["id"], "offer_id": offer["id"],
                            "price_overrides": {"montage": {"unit_amount": huge}}}, "price_overrides.montage"),
        ("/usage", {"events": [{"event_id": "e1", "subscription_id": "sub_x", "meter": "calls", "quantity": huge,
                                "timestamp": "2026-11-01T00:00:00Z"}]}, "events[0].quantity"),
    ]
    for path, body, param in cases:
        response = merchant.post(path, body)
        assert response.status == 400, (path, param, response)
        assert response.json["error"]["param"].startswith(param), (path, param, response)


# -- no secret and no card number in the logs ------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for index, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


CARD_NUMBER = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
SECRET_SHAPES = re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{8,}|_secret_[A-Za-z0-9]{8,}")


def leaks(text: str, secrets: list[str]) -> list[str]:
    found = [match.group() for match in CARD_NUMBER.finditer(text)
             if _luhn(re.sub(r"\D", "", match.group()))]
    found += [match.group() for match in SECRET_SHAPES.finditer(text)]
    found += [f"secret {secret[:6]}…" for secret in secrets if secret and secret in text]
    return found


def test_the_leak_scanner_finds_what_it_looks_for():
    assert leaks("card 4242 4242 4242 4242 ok", []) == ["4242 4242 4242 4242"]
    assert leaks("pm_1234567890123 ts 1732000000000", []) == []  # not Luhn-valid, or not a card
    assert leaks("key=sk_test_abcdefgh123", []) and leaks("whsec_abcdefgh1", []) and leaks("x", ["x"])


@pytest.fixture
def captured_logs():
    """Every line the Powertools logger writes (at DEBUG, more than Lambda
    is configured to write), and the stripe library's own log lines."""
    from chalicelib.observability import logger

    stream = io.StringIO()
    ours = logging.StreamHandler(stream)
    ours.setFormatter(logger.registered_formatter)
    theirs = logging.StreamHandler(stream)
    stripe_logger = logging.getLogger("stripe")
    saved = (logger.log_level, stripe_logger.level)
    logger._logger.addHandler(ours)
    logger.setLevel("DEBUG")
    stripe_logger.addHandler(theirs)
    stripe_logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger._logger.removeHandler(ours)
        logger.setLevel(saved[0])
        stripe_logger.removeHandler(theirs)
        stripe_logger.setLevel(saved[1])


def test_a_payment_logs_no_card_number_secret_or_key(merchant, localstripe, captured_logs):
    """A customer saves a card on the page, is billed and charged (once
    declined), Stripe's webhooks arrive; a request fails on our side: the
    log lines carry ids, never a card number, a Stripe secret, a client
    secret, a webhook secret, a payment-link token or an API key."""
    from chalicelib.services import issuing
    from tests.integration.test_payments import (
        CARD_DECLINED_ON_CHARGE,
        CARD_OK,
        confirm_in_browser,
        deliver,
        event,
        open_page,
        page_config,
        token_of,
    )

    offer = merchant.post("/offers", {"code": "base", "name": "Base", "currency": "EUR", "billing_interval": "month",
                                      "components": [{"code": "base", "type": "flat", "amount": "49.00"}]}).json
    public = merchant.as_key(None)
    tokens, client_secrets, customers = [], [], []
    for number in (CARD_OK, CARD_DECLINED_ON_CHARGE):
        customer = merchant.post("/customers", {"name": "Jeanne", "email": "j@example.fr", "country": "FR"}).json
        customers.append(customer["id"])
        token = token_of(merchant.post(f"/customers/{customer['id']}/payment-link").json)
        client_secret = page_config(open_page(merchant, token).html)["clientSecret"]
        setup_intent = confirm_in_browser(client_secret, number)
        assert public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent}).status == 200
        subscription = merchant.post("/subscriptions", {"customer_id": customer["id"], "offer_id": offer["id"]}).json
        issuing.bill_subscription(merchant.merchant["id"], subscription["id"])
        tokens.append(token)
        client_secrets.append(client_secret)
    statuses = {invoice["status"] for invoice in merchant.get("/invoices").json["data"]}
    assert statuses == {"paid", "open"}
    payload = event("payment_intent.succeeded", {"id": "pi_unknown", "object": "payment_intent", "status": "succeeded",
                                                 "amount": 4900, "currency": "eur", "metadata": {}})
    deliver(merchant, payload)
    deliver(merchant, payload, "t=1,v1=forged")
    merchant.post("/customers", raw=b'{"name": "card 4242424242424242"')  # malformed JSON, echoed nowhere
    merchant.as_key(merchant.key + "x").get("/merchant")  # a wrong key

    text = captured_logs.getvalue()
    # Not vacuous: the scenario's own lines are there, with their ids.
    assert text.count('"service":"billing"') >= 3 and "default card set" in text, text[:2000]
    assert all(customer_id in text for customer_id in customers) and "payment_intent.succeeded" in text
    secrets = [merchant.key, ADMIN_KEY, os.environ["STRIPE_SECRET_KEY"], os.environ["STRIPE_WEBHOOK_SECRET"],
               os.environ["TOKEN_SIGNING_KEY"], *tokens, *client_secrets]
    assert leaks(text, secrets) == [], text[:4000]
