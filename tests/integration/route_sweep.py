"""The route table as the security and tenancy sweeps see it.

Every sweep is generated from `http.route_table(app)` (what `endpoint()`
registered), so a route added tomorrow is swept without anyone listing it.
What a sweep cannot invent is a real object behind a path parameter: each
parameter name has a maker here, and a route whose parameter has none fails
the sweep until one is added."""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from chalicelib.api.http import Route, route_table
from tests.unit.test_catalog import API_EXAMPLE

# Every media type a route answers with, so that no route refuses the
# request for its Accept header before it looks at the key or the object.
ACCEPT = "application/json, application/pdf, application/xml, text/csv, text/html"

# What a merchant's e-invoices need of it (docs/api.md, "Legal invoices"), so
# that the owner of the swept objects can read every one of them.
LEGAL_IDENTITY = {
    "legal_name": "Optique Durand SAS", "siren": "732829320", "vat_number": "FR44732829320",
    "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"},
}

# API.md: "Public, no key: GET /health, the payment page GET /pay/{token}
# and its form posts, POST /webhooks/stripe"; and the API's own reference.
PUBLIC = {
    ("GET", "/health"), ("GET", "/pay/{token}"), ("POST", "/pay/{token}/complete"),
    ("POST", "/webhooks/stripe"), ("GET", "/openapi.json"), ("GET", "/docs"),
    # The console's sign-in, its forgotten password and its language
    # ("Back office": staff sign in with e-mail and password).
    ("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console/password-reset"),
    ("POST", "/console/password-reset"), ("POST", "/console/password-reset/confirm"),
    ("POST", "/console/language"),
    # The customer's own pages ("Checkout and customer portal"): a link's
    # token is their credential, and the portal's e-mail form needs none.
    ("GET", "/checkout/{token}"), ("POST", "/checkout/{token}/intent"), ("POST", "/checkout/{token}/complete"),
    ("GET", "/portal"), ("POST", "/portal"), ("GET", "/portal/{token}"), ("GET", "/portal/{token}/card"),
    ("POST", "/portal/{token}/card/complete"), ("GET", "/portal/{token}/invoices/{invoice_id}/pdf"),
    ("POST", "/portal/{token}/subscriptions/{subscription_id}/cancel"),
    ("POST", "/portal/{token}/subscriptions/{subscription_id}/keep"),
    ("POST", "/portal/{token}/subscriptions/{subscription_id}/change"),
}


def app_routes() -> list[Route]:
    from app import app

    return route_table(app)


def routes_with(auth: str) -> list[Route]:
    return [route for route in app_routes() if route.auth == auth]


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def path_parameters(route: Route) -> list[str]:
    return re.findall(r"{(\w+)}", route.path)


def fill(route: Route, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda match: values[match.group(1)], route.path)


def query_filters(route: Route) -> list[str]:
    """The query parameters of a list that name one of the merchant's objects."""
    from chalicelib.api import openapi

    return [name for name in openapi.query_parameters(route) if name in MAKERS and name not in NOT_OBJECTS]


# Path parameters that name no object of a merchant (a statement's month):
# as a list's query they filter nothing another merchant owns.
NOT_OBJECTS = {"month"}


# -- real objects of one merchant, one of each kind ----------------------------------------


class Owner:
    """A merchant and, made on first use, one object of each kind it owns."""

    def __init__(self, api):
        self.api = api
        self._made: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._made:
            self._made[name] = MAKERS[name](self)
        return self._made[name]

    def post(self, path: str, body: dict) -> dict:
        response = self.api.post(path, body)
        assert response.status in (200, 201), (path, response)
        return response.json


def _offer(owner: Owner) -> str:
    return owner.post("/offers", API_EXAMPLE)["id"]


def _free_offer(owner: Owner) -> str:
    return owner.post("/offers", {"code": "free", "name": "Free", "currency": "EUR", "billing_interval": "month",
                                  "components": [{"code": "base", "type": "flat", "amount": "0.00"}]})["id"]


def _customer(owner: Owner) -> str:
    return owner.post("/customers", {"name": "Labo Martin", "email": "compta@labo-martin.fr", "country": "FR"})["id"]


def _subscription(owner: Owner) -> str:
    return owner.post("/subscriptions", {"customer_id": owner["customer_id"], "offer_id": owner["offer_id"]})["id"]


def _device(owner: Owner) -> str:
    return owner.post("/devices", {"device_id": "neksia-0042", "subscription_id": owner["subscription_id"]})["id"]


def _invoice(owner: Owner) -> str:
    """A paid invoice: a free offer bills at once, without Stripe."""
    from chalicelib.services import issuing

    merchant_id = owner.api.merchant["id"]
    subscription = owner.post("/subscriptions", {"customer_id": owner["customer_id"], "offer_id": _free_offer(owner)})
    issuing.bill_subscription(merchant_id, subscription["id"])
    response = owner.api.get(f"/invoices?subscription_id={subscription['id']}")
    assert response.status == 200 and response.json["data"], response
    return response.json["data"][0]["id"]


def _credit_note(owner: Owner) -> str:
    """A credit note of 1.00 on an open invoice (a customer with no card: its first invoice stays open)."""
    customer = owner.post("/customers", {"name": "Labo Credit", "email": "credit@labo.fr", "country": "FR"})
    subscription = owner.post("/subscriptions", {"customer_id": customer["id"], "offer_id": owner["offer_id"]})
    response = owner.api.get(f"/invoices?subscription_id={subscription['id']}")
    assert response.status == 200 and response.json["data"], response
    note = owner.post(f"/invoices/{response.json['data'][0]['id']}/credit-notes",
                      {"amount": "1.00", "reason": "goodwill", "refund": "none"})
    return note["id"]


def _key_prefix(owner: Owner) -> str:
    """A second key (the last one cannot be revoked)."""
    return owner.post("/merchant/api-keys", {})["prefix"]


def _staff_email(owner: Owner) -> str:
    return owner.post("/merchant/users", {"email": "vendeur@labo-martin.fr", "role": "staff",
                                          "password": "Staff-pass-2026"})["email"]


def _webhook_endpoint(owner: Owner) -> str:
    # Port 9 of the loopback: nothing listens, an attempt fails at once.
    return owner.post("/webhook-endpoints", {"url": "http://127.0.0.1:9/hook", "events": ["*"]})["id"]


def _webhook_delivery(owner: Owner) -> str:
    """One event of the owner on the bus, dispatched to its endpoint."""
    import os

    import boto3

    import app
    from infra.local.lambda_events import drain_once

    endpoint_id = owner["endpoint_id"]
    boto3.client("events").put_events(Entries=[{
        "Source": "billing", "DetailType": "customer.created", "EventBusName": os.environ["EVENT_BUS_NAME"],
        "Detail": json.dumps({"merchant_id": owner.api.merchant["id"], "customer": {"id": "cus_sweep"}})}])
    url = boto3.client("sqs").get_queue_url(QueueName="WebhookQueue")["QueueUrl"]
    while drain_once(url, app.app.handler_map["webhook_dispatch"]):
        pass
    response = owner.api.get(f"/webhook-endpoints/{endpoint_id}/deliveries")
    assert response.status == 200 and response.json["data"], response
    return response.json["data"][0]["id"]


def _checkout_session(owner: Owner) -> str:
    return owner.post("/checkout-sessions", {
        "offer_id": owner["offer_id"], "customer_id": owner["customer_id"],
        "success_url": "https://shop.example/thanks", "cancel_url": "https://shop.example/"})["id"]


def _payee(owner: Owner) -> str:
    return owner.post("/payees", {"kind": "reseller", "name": "Réseau Vision", "email": "compta@reseau-vision.fr",
                                  "rules": [{"percent": "10"}]})["id"]


def _price_change(owner: Owner) -> str:
    return owner.post(f"/offers/{owner['offer_id']}/price-changes", {
        "version": {"components": API_EXAMPLE["components"], "options": API_EXAMPLE["options"]},
        "effective_at": "2099-01-01T00:00:00Z", "existing": "grandfather"})["id"]


def _month(owner: Owner) -> str:
    """A month that is over (a statement is issued once its month has ended)."""
    return "2020-01"


MAKERS: dict[str, Callable[[Owner], str]] = {
    "offer_id": _offer,
    "session_id": _checkout_session,
    "customer_id": _customer,
    "subscription_id": _subscription,
    "device_id": _device,
    "invoice_id": _invoice,
    "credit_note_id": _credit_note,
    "prefix": _key_prefix,
    "email": _staff_email,
    "endpoint_id": _webhook_endpoint,
    "delivery_id": _webhook_delivery,
    "payee_id": _payee,
    "month": _month,
    "price_change_id": _price_change,
}

# Where the owner reads the object a parameter names (its state before and
# after another merchant's attempt).
READ_PATHS = {
    "offer_id": "/offers/{offer_id}",
    "session_id": "/checkout-sessions/{session_id}",
    "customer_id": "/customers/{customer_id}",
    "subscription_id": "/subscriptions/{subscription_id}",
    "device_id": "/devices/{device_id}",
    "invoice_id": "/invoices/{invoice_id}",
    "credit_note_id": "/credit-notes/{credit_note_id}",
    "prefix": "/merchant",
    "email": "/merchant/users",
    "endpoint_id": "/webhook-endpoints/{endpoint_id}",
    "delivery_id": "/webhook-endpoints/{endpoint_id}/deliveries",
    "payee_id": "/payees/{payee_id}",
    "month": "/merchant",
    "price_change_id": "/offers/{offer_id}/price-changes",
}

# Bodies that pass validation, for the models that require fields (the
# sweep must reach the object lookup, not stop at a 400).
VALID_BODIES = {
    "NewWebhookEndpoint": {"url": "http://127.0.0.1:9/hook", "events": ["*"]},
    "SubscriptionChange": {"effective": "period_end"},
    "NewCreditNote": {"amount": "1.00", "reason": "goodwill", "refund": "none"},
    "OfflinePayment": {"method": "cash", "amount": "1.00"},
    "Payout": {"reference": "VIR-1"},
    "OfferVersion": {"effective_from": "2099-01-01T00:00:00Z", "components": API_EXAMPLE["components"],
                     "options": API_EXAMPLE["options"]},
    "PriceChange": {"version": {"components": API_EXAMPLE["components"], "options": API_EXAMPLE["options"]},
                    "effective_at": "2099-06-01T00:00:00Z", "existing": "grandfather"},
}


def valid_body(route: Route) -> dict | None:
    from chalicelib.api import openapi

    if route.method not in ("POST", "PATCH", "PUT", "DELETE"):
        return None
    model = openapi.request_model(route)
    return VALID_BODIES.get(model.__name__, {}) if model else {}
