"""schemathesis checks of tests/e2e/test_fuzz.py, loaded by the CLI through
SCHEMATHESIS_HOOKS (a hooks module registers them)."""
from __future__ import annotations

import json

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
