"""schemathesis against the local stage: every route a merchant key opens,
requests generated from the served OpenAPI document (valid and invalid
bodies, parameters and ids), each answer checked:
- never a 500;
- every 4xx is API.md's error object (the `Error` schema, no other field);
- the status is one the document lists, the answer matches its schema and
  its media type;
- a request the document calls invalid is refused with a 4xx.

The examples are bounded (hypothesis, derandomized so a failure replays);
the figures (requests sent, 500s) are printed and written to
test-artifacts/fuzz.json for docs/reliability.md."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import ROOT
from tests.unit.test_catalog import API_EXAMPLE

# Requests per operation, drawn from valid and invalid data with random or
# real ids (the local stage answers ~10 a second); FUZZ_EXAMPLES=200 for a
# deeper run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "14"))


@pytest.fixture(scope="module")
def fuzzed(stage, operator):
    """A merchant with one of each object, so that generated requests also
    reach real offers, customers, subscriptions and devices."""
    merchant = operator.post("/admin/merchants", json={
        "name": "Fuzz", "default_currency": "EUR", "invoice_prefix": "FZ", "tax_rates": {"FR": "20.0"}})
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
    return api, real


def _error_object(ctx, response, case):
    """API.md's Conventions: every 4xx body is `{"error": {type, code, message, param}}`."""
    if 400 <= response.status_code < 500:
        body = json.loads(response.content)
        assert set(body) == {"error"}, body
        assert {"type", "code", "message", "param"} <= set(body["error"]), body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return None


def _failure_names(error) -> str:
    """The failure's kinds and messages, without schemathesis' long report."""
    found = getattr(error, "exceptions", None) or [error]
    return "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0]} {getattr(e, 'message', '')[:300]}"
                     for e in found)


def test_generated_requests_never_break_the_api(stage, fuzzed):
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    api, real = fuzzed
    # Every request carries the merchant's key: requests without one, or with
    # a wrong one, are the security sweeps' (tests/integration/test_security.py).
    config = schemathesis.Config.from_dict({
        "auth": {"openapi": {"merchantKey": {"bearer": api.key}}},
        "generation": {"with-security-parameters": False},
    })
    schema = schemathesis.openapi.from_url(f"{stage.url}/openapi.json", config=config)
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("security") == [{"merchantKey": []}]:
            operations.append(operation)
    assert len(operations) >= 25

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection]
    statuses: Counter = Counter()
    failures: list[str] = []
    headers = {"Accept": "application/json, application/pdf, text/csv"}

    for operation in operations:
        names = [p.name for p in operation.path_parameters]
        known = {name: real[name] for name in names if name in real}
        modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        strategies = [operation.as_strategy(mode, headers=headers) for mode in modes]
        if known:
            strategies += [operation.as_strategy(mode, headers=headers, path_parameters=known) for mode in modes]

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(strategies))
        def exercise(case):
            response = case.call(base_url=stage.url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks, additional_checks=[_error_object], headers=headers)
            except (Exception, BaseExceptionGroup) as error:  # collected: one report of all failures
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{_failure_names(error)}\n  {case.as_curl_command(headers)[:600]}")

        exercise()

    total = sum(statuses.values())
    report = {"operations": len(operations), "requests": total, "server_errors": statuses.get(500, 0),
              "statuses": dict(sorted(statuses.items()))}
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nschemathesis: {report}")
    assert not failures, f"{len(failures)} failing answers of {total}:\n" + "\n".join(dict.fromkeys(failures))
    assert statuses.get(500, 0) == 0
    assert total >= len(operations) * EXAMPLES // 2
