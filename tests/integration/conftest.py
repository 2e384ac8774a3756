"""Integration fixtures: moto in-process, provisioned from the infra template,
and the Chalice app driven through chalice.test.Client."""
from __future__ import annotations

import json
import os

import pytest
from moto import mock_aws

import tests.integration.table_stream  # noqa: F401  (moto copies stream records cheaply)
from tests.integration.console_client import NOW, OWNER, Browser

ADMIN_KEY = os.environ["ADMIN_API_KEY"]


@pytest.fixture
def aws():
    """A fresh, empty AWS (moto) with every resource of infra/aws/resources.yaml."""
    from infra.local.provision import provision

    with mock_aws():
        env = provision()
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        from chalicelib import config

        config.settings.cache_clear()
        try:
            yield env
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            config.settings.cache_clear()


class Api:
    """The HTTP API as a merchant's code sees it: JSON in, (status, JSON) out."""

    def __init__(self, client, key: str | None = None):
        self._client = client
        self.key = key

    def as_key(self, key: str | None) -> "Api":
        return Api(self._client, key)

    def request(self, method: str, path: str, body=None, *, headers: dict | None = None, raw: bytes | str | None = None):
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.key is not None:
            all_headers["Authorization"] = f"Bearer {self.key}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = self._client.http.request(method, path, headers=all_headers, body=payload or b"")
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body
        return Response(response.status_code, data, response.headers)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


class Response:
    def __init__(self, status: int, json_body, headers):
        self.status = status
        self.json = json_body
        self.headers = headers

    def __repr__(self):
        return f"<Response {self.status} {self.json!r}>"


@pytest.fixture
def client(aws):
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="test") as test_client:
        yield test_client


@pytest.fixture
def operator(client) -> Api:
    return Api(client, ADMIN_KEY)


@pytest.fixture
def new_merchant(operator):
    """Create a merchant and return an Api speaking with its key."""

    def create(**fields) -> Api:
        body = {"name": "Optique Durand", "default_currency": "EUR", "invoice_prefix": "OD",
                "alert_emails": ["ops@optique-durand.fr"], "tax_rates": {"FR": "20.0", "DE": "19.0"},
                "timezone": "Europe/Paris", "locale": "fr", **fields}
        response = operator.post("/admin/merchants", body)
        assert response.status == 201, response
        api = operator.as_key(response.json["api_key"])
        api.merchant = response.json
        return api

    return create


@pytest.fixture
def merchant(new_merchant) -> Api:
    return new_merchant()


@pytest.fixture(scope="session")
def localstripe():
    """localstripe (Stripe's stand-in) on a free port for the whole session,
    with the settings pointing the Stripe client at it. Its state is shared
    by the session's tests: each test makes its own customers."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    from chalicelib import config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local.localstripe_server", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/v1/customers", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # it answers (401 without a key)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("localstripe did not start:\n" + log.read().decode(errors="replace"))
            time.sleep(0.1)
    saved = os.environ.get("STRIPE_API_BASE")
    os.environ["STRIPE_API_BASE"] = url
    config.settings.cache_clear()
    try:
        yield url
    finally:
        if saved is None:
            os.environ.pop("STRIPE_API_BASE", None)
        else:
            os.environ["STRIPE_API_BASE"] = saved
        config.settings.cache_clear()
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def clock(aws, localstripe, clock_start):
    """The platform's clock, fixed at the module's `clock_start` for the
    test to move; the real clock again afterwards."""
    from chalicelib.clock import FixedClock, use_clock

    fixed = FixedClock(clock_start)
    use_clock(fixed)
    yield fixed
    use_clock(None)


@pytest.fixture
def console_clock():
    """The platform's clock fixed at console_client.NOW; the console test
    modules opt in with `pytestmark = pytest.mark.usefixtures("console_clock")`."""
    from chalicelib.clock import FixedClock, use_clock

    fixed = FixedClock(NOW)
    use_clock(fixed)
    yield fixed
    use_clock(None)


@pytest.fixture
def shop(new_merchant):
    """A merchant whose owner signs in to the console as OWNER."""
    return new_merchant(owner_email=OWNER[0], owner_password=OWNER[1])


@pytest.fixture
def browser(client, shop):
    """The console, signed in as the shop's owner."""
    browser = Browser(client)
    assert browser.sign_in(*OWNER).status_code == 303
    return browser


@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    """The dev stage as `make package` builds it (chalice package, the packager,
    cfn-lint): once per session, read by the template tests of several modules."""
    import yaml

    from infra.aws.package import build

    out = tmp_path_factory.mktemp("package")
    template_path = build("dev", out)  # cfn-lint errors fail here
    return yaml.safe_load(template_path.read_text()), out / "deployment.zip"


@pytest.fixture(scope="session")
def deployed(packaged):
    """The template as CloudFormation runs it: after the SAM transform."""
    from samtranslator.translator.transform import transform

    from infra.aws import deploy

    class NoManagedPolicies:
        def load(self):
            return {}

    template = deploy.with_code_at(packaged[0], "artifacts", "billing/dev/code.zip")
    parameters = {"PublicBaseUrl": "https://billing.example.com", "AlertSender": "billing@example.com",
                  "SesIdentity": "example.com", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
                  "AWS::Partition": "aws", "AWS::StackName": "billing-dev"}
    return transform(template, parameters, NoManagedPolicies())["Resources"]
