"""Where HTTP meets the services: authentication, JSON bodies, idempotency,
pagination and the one mapping of errors to API.md's error object.

Chalice turns any exception raised by a view into its own 500 body, so views
are registered through `endpoint()`, which catches the domain's errors and
answers with `{"error": {"type", "code", "message", "param", "request_id"}}`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, TypeVar

from chalice import Blueprint, Response
from pydantic import BaseModel, ValidationError

from chalicelib import actor as actor_names
from chalicelib.actor import acting_as
from chalicelib.config import settings
from chalicelib.domain.errors import (
    BillingError,
    Conflict,
    Forbidden,
    InvalidRequest,
    RateLimited,
    invalid_request_from_validation_error,
)
from chalicelib.observability import logger

Model = TypeVar("Model", bound=BaseModel)

JSON_TYPES = ["application/json"]
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600


@dataclass
class Call:
    """One request as a view sees it: who calls, what they sent."""

    request: Any
    request_id: str
    merchant_id: str | None = None
    # Set when the key is a reseller's (a route with `resellers=True`):
    # the view limits what it reads and writes to that reseller's customers.
    reseller_id: str | None = None

    def body(self, model: type[Model]) -> Model:
        """The JSON body validated by `model`; any problem is a 400 naming the field."""
        raw = self.request.raw_body or b""
        if len(raw) > settings().max_body_bytes:
            raise InvalidRequest(
                f"request body is larger than {settings().max_body_bytes} bytes", code="body_too_large"
            )
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("the body is not valid JSON", code="invalid_json") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise invalid_request_from_validation_error(error) from None

    def query(self, name: str, default: str | None = None) -> str | None:
        params = self.request.query_params or {}
        return params.get(name, default)

    def limit(self) -> int:
        text = self.query("limit", "20")
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise InvalidRequest("limit must be a whole number from 1 to 100", param="limit")
        return int(text)


def listing(items: list, next_cursor: str | None) -> dict:
    return {"data": items, "has_more": next_cursor is not None, "next_cursor": next_cursor}


PDF = "application/pdf"


def require_accept(call: "Call", media_type: str, what: str) -> None:
    """API Gateway returns a binary body only to a client that accepts it
    (chalice checks the same): a client that does not is told so in our
    error format, naming the header."""
    accept = (call.request.headers or {}).get("accept", "")
    if media_type not in accept and "*/*" not in accept:
        raise InvalidRequest(f"send Accept: {media_type} to receive {what}", param="Accept")


def pdf_response(call: "Call", what: str, render: Callable[[], tuple[bytes, str]]) -> Response:
    """A document as a PDF (`render` gives its bytes and file name), to a
    client that accepts one."""
    require_accept(call, PDF, what)
    document, filename = render()
    return Response(body=document, status_code=200,
                    headers={"Content-Type": PDF, "Content-Disposition": f'inline; filename="{filename}"'})


XML = "application/xml"


def xml_response(call: "Call", what: str, render: Callable[[], tuple[bytes, str]]) -> Response:
    """A document as XML (`render` gives its UTF-8 bytes and file name), to a
    client that accepts it (`application/xml`, `text/xml` or anything)."""
    accept = (call.request.headers or {}).get("accept", "")
    if "text/xml" not in accept:
        require_accept(call, XML, what)
    document, filename = render()
    return Response(body=document.decode("utf-8"), status_code=200,
                    headers={"Content-Type": f"{XML}; charset=utf-8",
                             "Content-Disposition": f'inline; filename="{filename}"'})


def to_json(body: Any) -> str:
    return json.dumps(body, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(status: int, body: Any, headers: dict | None = None) -> Response:
    return Response(
        body=to_json(body), status_code=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def error_body(error: BillingError, request_id: str) -> dict:
    return {
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "request_id": request_id,
        }
    }


def error_response(error: BillingError, request_id: str) -> Response:
    return json_response(error.status, error_body(error, request_id))


def internal_error_response(request_id: str) -> Response:
    return json_response(
        500,
        {
            "error": {
                "type": "api_error",
                "code": "api_error",
                "message": "an internal error occurred; quote the request id to support",
                "param": None,
                "request_id": request_id,
            }
        },
    )


def bearer_key(request) -> str | None:
    header = (request.headers or {}).get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


# The deployed operator API takes AWS signatures (docs/deploy.md), which
# fill the Authorization header: the operator key then travels here.
OPERATOR_KEY_HEADER = "x-operator-key"


def operator_key(request) -> str | None:
    """The operator key: `X-Operator-Key` (beside an AWS signature), else
    the Bearer key of the Authorization header."""
    key = ((request.headers or {}).get(OPERATOR_KEY_HEADER) or "").strip()
    return key or bearer_key(request)


@dataclass(frozen=True)
class Route:
    """One method of one path, as `endpoint()` registered it: the route table
    that the OpenAPI document and the security sweeps are generated from."""

    path: str
    method: str
    auth: str
    status: int
    view: Callable
    # The name of a model of chalicelib/api/responses.py (imported only when
    # the document is built), or the media type of a non-JSON answer.
    response: str | None
    content_types: tuple[str, ...]
    # Whether a reseller's key may call it (limited to its own customers).
    resellers: bool = False


def route_table(app) -> list[Route]:
    """Every route the app serves (blueprints registered on it), in path order."""
    table = []
    for path, entries in app.routes.items():
        for method, entry in entries.items():
            route = getattr(entry.view_function, "routes", {}).get(method)
            if route is not None:
                table.append(route)
    return sorted(table, key=lambda route: (route.path, route.method))


def endpoint(
    blueprint: Blueprint,
    path: str,
    *,
    methods: tuple[str, ...] = ("GET",),
    auth: str = "merchant",
    status: int = 200,
    content_types: list[str] | None = None,
    response: str | None = None,
    actor: str = actor_names.CUSTOMER,
    resellers: bool = False,
) -> Callable:
    """Register `view(call, **path_params)` as a route.

    `auth` is "merchant" (a merchant API key), "operator" (the platform key,
    /admin/*) or "public". What the request writes is attributed
    (chalicelib.actor) to the key (`key:<prefix>`), to `operator`, or for a
    public route to `actor` (the payment page's `customer`, the Stripe
    webhook's `stripe`). A view returns a JSON-able body (sent with
    `status`) or a chalice Response of its own (HTML, PDF). `response` names
    the answer's model in chalicelib/api/responses.py (or a media type such
    as "application/pdf"); the request's model is the one the view passes to
    `call.body()`, found by chalicelib/api/openapi.py. `resellers`: a
    reseller's key may call it too (`call.reseller_id` set); on any other
    merchant route such a key is 403."""
    if auth not in ("merchant", "operator", "public"):
        raise ValueError(auth)

    def register(view: Callable) -> Callable:
        @functools.wraps(view)
        def handle(**path_params: str) -> Response:
            request = blueprint.current_request
            request_id = (request.context or {}).get("requestId") or str(uuid.uuid4())
            logger.append_keys(request_id=request_id)
            call = Call(request=request, request_id=request_id)
            try:
                with acting_as(_authenticate(call, auth, resellers) or actor):
                    idempotency_key = (request.headers or {}).get("idempotency-key")
                    if request.method == "POST" and idempotency_key is not None and auth != "public":
                        return _idempotent(call, idempotency_key, lambda: _run(view, call, path_params, status))
                    return _run(view, call, path_params, status)
            except BillingError as error:  # authentication, idempotency
                return error_response(error, request_id)
            except Exception as error:
                if _throttled(error):
                    # DynamoDB is over its rate even after the retries: the
                    # client's retry (same Idempotency-Key) will go through.
                    logger.warning("throttled by DynamoDB", extra={"path": request.path})
                    return error_response(RateLimited("too many requests at the moment; retry shortly"),
                                          request_id)
                logger.exception("unhandled error", extra={"path": request.path, "method": request.method})
                return internal_error_response(request_id)

        handle.routes = {
            method: Route(path, method, auth, status, view, response, tuple(content_types or JSON_TYPES), resellers)
            for method in methods
        }
        blueprint.route(path, methods=list(methods), content_types=content_types or JSON_TYPES)(handle)
        return view

    return register


def _throttled(error: Exception) -> bool:
    from chalicelib.store.errors import is_throttled

    return is_throttled(error)


def _authenticate(call: Call, auth: str, resellers: bool = False) -> str | None:
    """Check the caller's key; returns who the request acts for (the key by
    its public prefix, never the key), or None for a public route. A
    reseller's key is refused (403) where `resellers` is not set."""
    from chalicelib.services import merchants

    if auth == "merchant":
        key = bearer_key(call.request)
        call.merchant_id, call.reseller_id = merchants.authenticate_key(key)
        if call.reseller_id is not None and not resellers:
            raise Forbidden("a reseller's key reads and creates only its customers and their subscriptions",
                            code="reseller_key")
        actor = actor_names.key_actor(merchants.key_prefix(key))
        logger.append_keys(merchant_id=call.merchant_id, actor=actor)
        return actor
    if auth == "operator":
        merchants.authenticate_operator(operator_key(call.request))
        return actor_names.OPERATOR
    return None


def _run(view: Callable, call: Call, path_params: dict, status: int) -> Response:
    try:
        result = view(call, **path_params)
    except BillingError as error:
        return error_response(error, call.request_id)
    if isinstance(result, Response):
        return result
    return json_response(status, result)


def _idempotent(call: Call, key: str, run: Callable[[], Response]) -> Response:
    """Replay the first answer to a POST with the same `Idempotency-Key`.

    The key is scoped to the caller (merchant, or the operator); the stored
    fingerprint covers method, path and body, so the same key sent with
    anything else is `409 idempotency_mismatch`. Answers below 500 are kept
    for 24 h (a 400 stays a 400); a 500 is not kept, so the client's retry
    runs again."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    if not key.strip() or len(key) > 255:
        # An empty key is a client bug: ignoring it would silently drop the
        # protection against a double create that the client asked for.
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters", param="Idempotency-Key")
    request = call.request
    fingerprint = hashlib.sha256(
        b"\n".join(
            [
                request.method.encode(),
                request.path.encode(),
                json.dumps(request.uri_params or {}, sort_keys=True).encode(),
                request.raw_body or b"",
            ]
        )
    ).hexdigest()
    executed = []

    def first_answer(request: dict) -> dict:
        response = run()
        if response.status_code >= 500:
            raise _NotKept(response)
        executed.append(True)
        return {"status": response.status_code, "body": response.body, "headers": dict(response.headers)}

    scope = call.merchant_id or "operator"
    if getattr(call, "reseller_id", None):
        scope = f"{scope}#{call.reseller_id}"
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="fingerprint",
        expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
    )
    if request.lambda_context is not None:
        config.register_lambda_context(request.lambda_context)
    remember = idempotent_function(
        first_answer,
        data_keyword_argument="request",
        persistence_store=_persistence_layer(),
        config=config,
        key_prefix=f"{scope}#idempotency",
    )
    try:
        answer = remember(request={"key": key, "fingerprint": fingerprint})
    except _NotKept as not_kept:
        return not_kept.response
    except IdempotencyValidationError:
        raise Conflict(
            "this Idempotency-Key was used with another request", code="idempotency_mismatch"
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise KeyInProgress("a request with this Idempotency-Key is still in progress; retry shortly") from None
    headers = dict(answer["headers"])
    if not executed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=answer["body"], status_code=answer["status"], headers=headers)


class KeyInProgress(Conflict):
    """A request with the same Idempotency-Key has not answered yet."""


def once_per_key(call, key: str, run: Callable[[], Response], *, wait_seconds: float = 0.0) -> Response:
    """The Idempotency-Key mechanism for another face of the API (the
    console's one-time form tokens): `run` once per key and caller, its
    answer replayed to the same request sent again. `call` has `request`
    and `merchant_id` (an api Call, a console Visit). A request that finds
    the first one still running waits for its answer up to `wait_seconds`."""
    import time

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return _idempotent(call, key, run)
        except KeyInProgress:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class _NotKept(Exception):
    def __init__(self, response: Response):
        self.response = response


def _persistence_layer():
    """A persistence layer per request (Powertools keeps per-call state on
    it), over the container's DynamoDB client."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from chalicelib import aws

    return DynamoDBPersistenceLayer(table_name=settings().idempotency_table_name, boto3_client=aws.client("dynamodb"))
