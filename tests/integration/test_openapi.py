"""The OpenAPI document: generated from the routes, valid, served, current."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.api import openapi
from chalicelib.api.http import route_table

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def app():
    from app import app

    return app


def test_the_checked_in_document_is_current(app):
    assert CHECKED_IN.read_text(encoding="utf-8") == openapi.render(app), (
        "docs/openapi.json is stale: run `make openapi`"
    )


def test_the_document_is_valid_openapi_3_1(app):
    from openapi_spec_validator import validate

    document = openapi.document(app)
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_is_in_the_document_with_its_auth_and_status(app):
    document = openapi.document(app)
    routes = route_table(app)
    assert len(routes) >= 30
    for route in routes:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"], route
        assert bool(operation["security"]) == (route.auth != "public"), route
        # A console page without a session answers the sign-in page (303), not a 401.
        # A key refused, or (the sign-in page) an e-mail and password refused.
        signing_in = (route.path, route.method) == ("/console/login", "POST")
        assert ("401" in operation["responses"]) == (route.auth not in ("public", "staff") or signing_in), route


def test_every_route_names_its_answer_and_every_body_its_model(app):
    """A new route cannot slip into the document without a schema: every
    route names its answer (a model of api/responses.py or a media type),
    and every body read with call.body() resolves to a pydantic model."""
    for route in route_table(app):
        assert route.response, f"{route.method} {route.path}: give endpoint() a response= model"
        answer = openapi.response_model(route)
        assert answer is not None
        body = openapi.request_model(route)
        if route.method in ("PATCH", "PUT"):
            assert body is not None, route


def test_bodies_and_query_parameters_come_from_the_views(app):
    document = openapi.document(app)
    customers = document["paths"]["/customers"]
    assert customers["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewCustomer"
    }
    names = [p["name"] for p in customers["get"]["parameters"]]
    assert names == ["email", "external_id", "limit", "cursor"]
    # A model imported inside the view (cold-start saving) is found as well.
    offers = document["paths"]["/offers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert offers == {"$ref": "#/components/schemas/Offer"}
    assert "requestBody" not in document["paths"]["/invoices/{invoice_id}/pay"]["post"]
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False


def test_the_document_and_the_reference_page_are_served_without_a_key(client, app):
    from tests.integration.conftest import Api

    public = Api(client)
    served = public.get("/openapi.json")
    assert served.status == 200
    assert served.json == json.loads(openapi.render(app))
    page = client.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    for route in route_table(app):
        assert route.path in html, route.path
    # Self-contained: nothing fetched from another origin.
    assert "src=" not in html and "https://" not in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
