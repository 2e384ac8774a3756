"""The OpenAPI 3.1 document of the API, generated from the code that serves it.

Nothing here is written twice:
- paths, methods, authentication and success status: the route table that
  `endpoint()` keeps (`http.route_table(app)`);
- request bodies: the pydantic model each view passes to `call.body(...)`,
  found in the view's source (a model imported at module level or inside the
  view, as the offers views do to keep cold starts short);
- query parameters: the names each view reads with `call.query("...")`, and
  `limit`/`cursor` where it calls `call.limit()`;
- answers: the model the route names (`response=`) in `api/responses.py`,
  and the one error object for every 4xx/5xx.

`make openapi` writes docs/openapi.json; a test fails when it is stale.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.api.http import Route, route_table

REF = "#/components/schemas/{model}"
ERRORS = {
    400: "Invalid request: `param` names the field",
    401: "No key, an unknown key or a key of the wrong kind",
    404: "No such object for this key (also another merchant's object)",
    409: "The state does not allow it, a version conflict or an idempotency mismatch",
    429: "Rate limited",
    500: "Internal error: quote `request_id`",
}
QUERY_DESCRIPTIONS = {
    "limit": "1..100, default 20",
    "cursor": "`next_cursor` of the previous page",
}
AUTH = {
    "merchant": [{"merchantKey": []}],
    "operator": [{"operatorKey": []}],
    "public": [],
    "staff": [{"consoleSession": []}],
}
# A console page's form (chalicelib/web/pages.py): inputs named by the API's
# paths, validated by the API's own models once rebuilt. A session's form
# carries its CSRF token, which `page()` checks on every POST; the sign-in
# and password forms check their own double-submit token (console_auth.py).
# A console POST's refusal as a page (besides the errors of ERRORS).
PAGE_FORBIDDEN = "The form's token is missing or wrong, or the member's role does not allow it"
# A body that is not a form, refused by the router as the API's error object.
NOT_A_FORM = "The body is not a form (application/x-www-form-urlencoded)"


def _form_body(auth: str) -> dict:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
    if auth == "staff":
        schema.update(required=["csrf_token"], properties={"csrf_token": {"type": "string", "minLength": 1}})
    return {"application/x-www-form-urlencoded": {"schema": schema}}


def document(app, *, server: str | None = None) -> dict:
    routes = route_table(app)
    bodies = {route: request_model(route) for route in routes}
    answers = {route: _documented_answer(route) for route in routes}
    models = {model for model in bodies.values() if model} | {m for m in answers.values() if isinstance(m, type)}
    from chalicelib.api import responses

    models.add(responses.Error)
    keyed = [(model, "validation" if model in bodies.values() else "serialization") for model in models]
    keyed.sort(key=lambda pair: (pair[0].__module__, pair[0].__qualname__))
    refs, definitions = models_json_schema(keyed, ref_template=REF)
    schemas = definitions.get("$defs", {})

    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, bodies[route], answers[route], refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Billing API",
            "version": _version(),
            "description": "Subscription billing: merchants, offers, customers, subscriptions, devices, "
            "usage and invoices. Money is a decimal string in major units with an ISO 4217 currency; "
            "times are ISO 8601 in UTC with `Z`. Every POST takes an `Idempotency-Key` header.",
        },
        "servers": [{"url": server or "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {
                str(status): {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
                }
                for status, description in ERRORS.items()
            },
            "securitySchemes": {
                "merchantKey": {"type": "http", "scheme": "bearer", "description": "a merchant API key (sk_...)"},
                "operatorKey": {"type": "http", "scheme": "bearer", "description": "the platform operator key"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": "console_session",
                                   "description": "a staff member's console session (sign in at /console/login)"},
            },
        },
    }


def request_model(route: Route) -> type[BaseModel] | None:
    """The model the view passes to `call.body(...)`, or None when it reads no body."""
    node = _body_call(route.view)
    if node is None:
        return None
    name = node.args[0].id if node.args and isinstance(node.args[0], ast.Name) else None
    if name is None:
        raise ValueError(f"{route.method} {route.path}: call.body() must be given a model by name")
    namespace = dict(route.view.__globals__)
    namespace.update(_local_imports(route.view))
    model = namespace.get(name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"{route.method} {route.path}: {name} is not a pydantic model")
    return model


def response_model(route: Route) -> type[BaseModel] | str | None:
    """The route's answer model (defined beside the view, or in
    api/responses.py), or its media type when the answer is not JSON."""
    if route.response is None or "/" in route.response:
        return route.response
    from chalicelib.api import responses

    model = route.view.__globals__.get(route.response) or getattr(responses, route.response, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise LookupError(f"{route.method} {route.path}: no response model {route.response!r}")
    return model


def _documented_answer(route: Route):
    """The answer's model; a name that resolves to nothing is documented as
    an object (the tests refuse it; serving the document never fails)."""
    try:
        return response_model(route)
    except LookupError:
        return None


def query_parameters(route: Route) -> list[str]:
    names: list[str] = []
    for node in ast.walk(_view_tree(route.view)):
        if isinstance(node, ast.Call) and _is_call_method(node, "limit"):
            names += ["limit", "cursor"]
        elif isinstance(node, ast.Call) and _is_call_method(node, "query"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return list(dict.fromkeys(names))


def _operation(route: Route, body, answer, refs) -> dict:
    operation: dict[str, Any] = {
        "operationId": route.view.__name__,
        "summary": _summary(route),
        "tags": [_tag(route.path)],
        "security": AUTH[route.auth],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    for name in query_parameters(route):
        schema = {"type": "integer", "minimum": 1, "maximum": 100} if name == "limit" else {"type": "string"}
        parameter = {"name": name, "in": "query", "required": False, "schema": schema}
        if name in QUERY_DESCRIPTIONS:
            parameter["description"] = QUERY_DESCRIPTIONS[name]
        parameters.append(parameter)
    if route.method == "POST" and route.auth not in ("public", "staff") and not _is_page(route):
        parameters.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "the same key with the same body within 24 h replays the first answer",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        })
    if parameters:
        operation["parameters"] = parameters
    if _is_page(route) and route.method == "POST":
        operation["requestBody"] = {"required": route.auth == "staff", "content": _form_body(route.auth)}
    elif body is not None:
        operation["requestBody"] = {
            # No body is read as `{}` (http.Call.body): needed only when a field is.
            "required": any(field.is_required() for field in body.model_fields.values()),
            "content": {"application/json": {"schema": refs[(body, "validation")]}},
        }
    operation["responses"] = _responses(route, answer, refs)
    return operation


def _responses(route: Route, answer, refs) -> dict:
    if isinstance(answer, str):
        success = {answer: {"schema": {"type": "string"}}}
    elif answer is not None:
        success = {"application/json": {"schema": refs[(answer, "serialization")]}}
    else:
        success = {"application/json": {"schema": {"type": "object"}}}
    responses: dict[str, Any] = {str(route.status): {"description": "OK", "content": success}}
    if route.status != 200 and _answers_200_too(route.view):
        responses["200"] = {"description": "The same object, already there", "content": success}
    # The payment page and the console answer their errors as pages a person
    # reads, a console download (a PDF, a CSV) too.
    page = {"text/html": {"schema": {"type": "string"}}} if answer == "text/html" or _is_page(route) else None
    for status, description in ERRORS.items():
        if status == 401 and route.auth in ("public", "staff"):
            continue
        if page:
            responses[str(status)] = {"description": description, "content": page}
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    if _is_page(route):
        responses["303"] = {"description": "Elsewhere: the sign-in page, or the page after a form"}
        if route.method == "POST":
            responses["403"] = {"description": PAGE_FORBIDDEN, "content": page}
            responses["415"] = {"description": NOT_A_FORM, "content": {
                "application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
            if route.path == "/console/login":
                responses["401"] = {"description": "The e-mail and password were refused", "content": page}
    if answer == "text/html" and not route.path.startswith("/console"):
        responses["410"] = {"description": "The link has expired", "content": success}
        responses["503"] = {"description": "The payment service is unavailable", "content": success}
    elif "{token}" in route.path:
        # A customer's link (checkout, portal) past its end.
        responses["410"] = {"description": "The link has expired", "content": page or {
            "application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    return responses


def _is_page(route: Route) -> bool:
    """A web page (chalicelib/web: the console, the customer portal): HTML for a person, forms in
    (the portal's card form posts JSON from its script, as the payment page does)."""
    if route.path.startswith("/console"):
        return True
    return route.path.startswith("/portal") and (route.method == "GET" or "application/x-www-form-urlencoded"
                                                 in route.content_types)


def _summary(route: Route) -> str:
    doc = inspect.getdoc(route.view)
    if doc:
        return doc.split("\n\n")[0].replace("\n", " ")
    return route.view.__name__.replace("_", " ").capitalize()


def _tag(path: str) -> str:
    first = path.strip("/").split("/")[0]
    return first if first not in ("admin", "") else "operator"


# -- reading the views ---------------------------------------------------------------------


def _view_tree(view) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(view)))


def _is_call_method(node: ast.Call, name: str) -> bool:
    func = node.func
    return (
        isinstance(func, ast.Attribute) and func.attr == name
        and isinstance(func.value, ast.Name) and func.value.id in ("call", "visit")
    )


def _body_call(view) -> ast.Call | None:
    for node in ast.walk(_view_tree(view)):
        if isinstance(node, ast.Call) and _is_call_method(node, "body"):
            return node
    return None


def _answers_200_too(view) -> bool:
    """A view that also answers `json_response(200, ...)` (e.g. an attach
    that found the device already there)."""
    for node in ast.walk(_view_tree(view)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "json_response"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == 200):
            return True
    return False


def _local_imports(view) -> dict:
    """Names a view imports inside its body (`from x import Model`)."""
    found = {}
    for node in ast.walk(_view_tree(view)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    found[alias.asname or alias.name] = getattr(module, alias.name)
    return found


def _version() -> str:
    from chalicelib.config import settings

    return settings().version


def render(app) -> str:
    """The document as checked in at docs/openapi.json (stable, readable diffs)."""
    import json

    return json.dumps(document(app), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    # `make openapi`: the document of a deployed stage (no local-only routes).
    import os
    import sys

    os.environ["STAGE"] = "dev"
    from app import app as billing_app

    with open(sys.argv[1], "w", encoding="utf-8") as out:
        out.write(render(billing_app))
