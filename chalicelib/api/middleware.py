"""Chalice middleware for every handler: Powertools' structured logging with
the Lambda context, metrics published once per invocation, and API.md's
error object on the answers chalice makes itself."""
import json
import uuid

from chalice import ConvertToMiddleware

from chalicelib.observability import logger, metrics


def publish_metrics(event, get_response):
    try:
        return get_response(event)
    finally:
        # Only when something was counted: Powertools warns on an empty flush.
        if metrics.metric_set:
            metrics.flush_metrics()


# Answers chalice gives before any view runs, by its error code: a method the
# path does not serve (405, with `Allow`), a body of a media type the route
# does not take (415), an Accept header that rules out a binary answer (400).
CHALICE_ERRORS = {
    "MethodNotAllowedError": ("method_not_allowed", "this path does not serve the {method} method; see Allow"),
    "UnsupportedMediaType": ("unsupported_media_type", "the body's Content-Type is not one this route takes"),
    "BadRequest": ("not_acceptable", "the Accept header does not allow this route's media type"),
}


def api_error_bodies(request, get_response):
    """Chalice's own error answers (`{"Code", "Message"}`) as API.md's error
    object, keeping their status and headers (`Allow` of a 405)."""
    response = get_response(request)
    if response.status_code < 400 or not isinstance(response.body, dict):
        return response
    known = CHALICE_ERRORS.get(response.body.get("Code"))
    if known is None:
        return response
    from chalicelib.api.http import error_body
    from chalicelib.domain.errors import InvalidRequest, MethodNotAllowed

    code, message = known
    kind = MethodNotAllowed if response.status_code == 405 else InvalidRequest
    error = kind(message.format(method=request.method), code=code)
    error.status = response.status_code
    request_id = (request.context or {}).get("requestId") or str(uuid.uuid4())
    response.body = json.dumps(error_body(error, request_id), separators=(",", ":"))
    response.headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return response


def register(app) -> None:
    app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context(clear_state=True)), "all")
    app.register_middleware(publish_metrics, "all")
    app.register_middleware(api_error_bodies, "http")
