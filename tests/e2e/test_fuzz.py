"""schemathesis against the local stage, as its CLI runs: every operation of
the served OpenAPI document, every HTTP method (no `--exclude`), and every
phase of the installed schemathesis (4.x):
- examples: the document's examples;
- coverage: boundary values and every kind of invalid one for each field,
  missing and unknown fields, and the methods a path does not declare
  (TRACE, PUT, DELETE, OPTIONS...: `405` with `Allow`);
- fuzzing: hypothesis-generated valid and invalid requests;
- stateful: chains of calls following the links it infers (an id a POST
  returns used by the operations that take it).
Each answer is checked: never a 500; the status is one the document lists,
the answer matches its schema and media type; a request the document calls
invalid is refused with a 4xx; an undeclared method is `405` with a right
`Allow`; every JSON 4xx is API.md's error object (tests/e2e/fuzz_checks.py).

The console's pages are fuzzed signed in: the fuzz merchant's owner signs
in over HTTP, and schemathesis sends the session cookie (the
`consoleSession` scheme) and the session's CSRF token in every form. One
exception: `POST /console/logout` gets a token that is not the session's,
or its first valid request would end the session for every page after it
(signing out is tested in tests/integration/test_console_auth.py). A page
refuses a request without that session by sending the browser to the
sign-in page (303): `negative_data_rejection_or_sign_in` of
tests/e2e/fuzz_checks.py runs schemathesis's `negative_data_rejection` with
that one difference (the sign-in redirect when the session cookie is
missing or mangled, a 4xx for any other invalid request).

Not run: `positive_data_acceptance` (a request the schema allows must be
accepted): the schema cannot say that an id must exist or that a tier's
`up_to` ascends, so it would report every such 400 and 404; and the checks
of authentication and authorization, which tests/integration/test_security.py
and the tenancy sweeps make over every route with real objects. Every
request carries one merchant's key (the operator's routes answer it 401).

The run is derandomized (`--seed`), so a failure replays; the figures
(requests, statuses, 500s) are written to test-artifacts/fuzz.json for
docs/reliability.md. FUZZ_EXAMPLES (default 10) sets the examples per
operation of the fuzzing phase; 200 for a deeper run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.e2e.conftest import ROOT
from tests.load.population import console_sign_in
from tests.unit.test_catalog import API_EXAMPLE

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
PHASES = "examples,coverage,fuzzing,stateful"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection_or_sign_in,unsupported_method,allow_header_conformance,api_error_object")


@pytest.fixture(scope="module")
def fuzzed(stage, operator):
    """A merchant with one of each object, so that generated requests also
    reach real offers, customers, subscriptions and devices."""
    merchant = operator.post("/admin/merchants", json={
        "name": "Fuzz", "default_currency": "EUR", "invoice_prefix": "FZ", "tax_rates": {"FR": "20.0"},
        "owner_email": OWNER[0], "owner_password": OWNER[1]})
    assert merchant.status_code == 201, merchant.text
    api = operator.as_key(merchant.json()["api_key"])
    offer = api.post("/offers", json=API_EXAMPLE).json()
    customer = api.post("/customers", json={"name": "Jeanne", "email": "j@example.fr", "country": "FR"}).json()
    subscription = api.post("/subscriptions", json={"customer_id": customer["id"], "offer_id": offer["id"]}).json()
    device = api.post("/devices", json={"device_id": "fuzz-1", "subscription_id": subscription["id"]}).json()
    invoices = api.get("/invoices").json()["data"]
    real = {
        "offer_id": offer["id"], "customer_id": customer["id"], "subscription_id": subscription["id"],
        "device_id": device["device_id"], "invoice_id": invoices[0]["id"] if invoices else "inv_none",
        # Not the key's prefix: once the fuzzer has made a second key, it
        # would revoke the one it speaks with.
    }
    return api, real, console_sign_in(stage.url, *OWNER)


OWNER = ("owner@fuzz.example", "Fuzz-owner-2026!")


# Every phase takes about three minutes on two busy cores: more than the
# suite's default per-test limit.
@pytest.mark.timeout(900)
def test_generated_requests_never_break_the_api(stage, fuzzed, tmp_path):
    api, real, (session, csrf) = fuzzed
    config = tmp_path / "schemathesis.toml"
    # The real objects' ids, wherever a path names one; the console session.
    config.write_text(
        "[parameters]\n" + "".join(f'"path.{name}" = "{value}"\n' for name, value in sorted(real.items()))
        + f'"body.csrf_token" = "{csrf}"\n'
        + f'[auth.openapi.consoleSession]\napi_key = "{session}"\n'
        + '[[operations]]\ninclude-path-regex = "^/console/logout$"\n'
        + 'parameters = { "body.csrf_token" = "not-the-sessions-token" }\n')
    junit = tmp_path / "junit.xml"
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
        f"{stage.url}/openapi.json", "--phases", PHASES, "--checks", CHECKS,
        "--max-examples", str(EXAMPLES), "--seed", "24", "--workers", "1",
        "--header", f"Authorization: Bearer {api.key}", "--request-timeout", "30",
        "--report", "junit,ndjson", "--report-junit-path", str(junit),
        "--report-ndjson-path", str(tmp_path / "events.ndjson"), "--output-truncate", "true",
    ]
    # Run from the scratch directory: the CLI leaves its cache (.schemathesis/) where it runs.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(ROOT / "tests" / "e2e" / "fuzz_checks.py"),
           "FUZZ_CONSOLE_SESSION": session}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    summary = run.stdout[run.stdout.find("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-4000:]

    statuses = _statuses(tmp_path / "events.ndjson")
    total = sum(statuses.values())
    report = {"phases": PHASES.split(","), "requests": total, "server_errors": sum(
        n for status, n in statuses.items() if status >= 500), "statuses": dict(sorted(statuses.items()))}
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nschemathesis: {report}\n{summary}")
    failures = _failures(junit) if junit.exists() else []
    assert run.returncode == 0 and not failures, (
        f"{len(failures)} failing operations:\n" + "\n".join(failures) + "\n" + summary + run.stderr[-2000:])
    assert report["server_errors"] == 0
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    assert total >= 1000


def _statuses(events: Path) -> Counter:
    """The status of every answer the run recorded (its NDJSON events)."""
    found: Counter = Counter()
    if not events.exists():
        return found
    for line in events.read_text().splitlines():
        for status in _walk_statuses(json.loads(line)):
            found[status] += 1
    return found


def _walk_statuses(node):
    if isinstance(node, dict):
        response = node.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            yield response["status_code"]
        for key, value in node.items():
            if key != "response":
                yield from _walk_statuses(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_statuses(value)


def _failures(junit: Path) -> list[str]:
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    return [f"{case.get('name')}: {(problem.get('message') or problem.text or '')[:800]}"
            for case in cases for problem in list(case) if problem.tag in ("failure", "error")]
