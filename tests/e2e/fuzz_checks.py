"""schemathesis checks of tests/e2e/test_fuzz.py, loaded by the CLI through
SCHEMATHESIS_HOOKS (a hooks module registers them)."""
from __future__ import annotations

import json
import os

import schemathesis


@schemathesis.check
def api_error_object(ctx, response, case):
    """API.md's Conventions: every 4xx body is `{"error": {type, code, message, param}}`."""
    # The payment page's answers are HTML pages, by design; a HEAD has no body.
    json_answer = response.headers.get("content-type", [""])[0].startswith("application/json")
    if 400 <= response.status_code < 500 and json_answer and case.method.upper() != "HEAD":
        body = json.loads(response.content)
        assert set(body) == {"error"}, body
        assert {"type", "code", "message", "param"} <= set(body["error"]), body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return None


@schemathesis.check
def negative_data_rejection_or_sign_in(ctx, response, case):
    """schemathesis's `negative_data_rejection` (an invalid request gets a
    4xx, allowing for the values that form encoding makes valid), run in its
    place, with the console's one difference: a page that needs a session
    answers a request without the fuzzer's session (the cookie missing or
    mangled) by sending the browser to the sign-in page, coming back after,
    a 303 to /console/login."""
    from schemathesis.specs.openapi.checks import _openapi_negative_data_rejection

    if not case.path.startswith("/console") or case.meta is None or not case.meta.generation.mode.is_negative:
        return _openapi_negative_data_rejection(ctx, response, case)
    staff_page = any("consoleSession" in requirement for requirement in case.operation.definition.raw.get(
        "security", []))
    cookies = response.request.headers.get("Cookie", "")
    if staff_page and f"console_session={os.environ['FUZZ_CONSOLE_SESSION']}" not in cookies.split("; "):
        location = response.headers.get("location", [""])[0]
        assert response.status_code == 303 and location.startswith("/console/login"), (
            f"without the session: {response.status_code} {location!r}, not the sign-in page")
        return None
    return _openapi_negative_data_rejection(ctx, response, case)
