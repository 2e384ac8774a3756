"""The local stage, started once per test session on free ports (so it runs
beside a developer's `make run`), and spoken to over HTTP like a merchant."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.log_secrets import scan

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "local-admin-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStage:
    def __init__(self, tmp: Path):
        self.ports = {name: free_port() for name in ("api", "moto", "stripe", "mqtt")}
        self.state_dir = tmp / "stage"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRIPE_", "ADMIN_", "STAGE"))}
        env.update(
            LOCAL_API_PORT=str(self.ports["api"]), LOCAL_AWS_PORT=str(self.ports["moto"]),
            LOCAL_STRIPE_PORT=str(self.ports["stripe"]), LOCAL_MQTT_PORT=str(self.ports["mqtt"]),
            LOCAL_STATE_DIR=str(self.state_dir),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.stage"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.ports['api']}"
        self.output: list[str] = []

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("Ctrl-C stops everything"):
                return
            if time.monotonic() > deadline:
                break
        raise RuntimeError("local stage did not start:\n" + "".join(self.output) + self.logs())

    def logs(self) -> str:
        text = []
        for log in sorted(self.state_dir.glob("*.log")):
            text.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(text)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        self.output.append(out or "")
        return self.process.returncode


class Http:
    """requests with the API's base URL and a key."""

    def __init__(self, base: str, key: str | None = None):
        self.base = base
        self.key = key
        self.session = requests.Session()

    def as_key(self, key):
        return Http(self.base, key)

    def request(self, method, path, **kw):
        headers = kw.pop("headers", {}) or {}
        if self.key:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        return self.session.request(method, self.base + path, headers=headers, timeout=30, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json if json is not None else {}, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium (`make system-deps`), driven by Playwright, which
    never downloads a browser of its own."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `make system-deps`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def stage(tmp_path_factory):
    local = LocalStage(tmp_path_factory.mktemp("local"))
    try:
        local.wait_ready()
        yield local
    finally:
        if local.process.poll() is None:
            local.stop()
    # Once every test of the session has used it: no log line holds a secret.
    leaks = scan(local.state_dir)
    assert leaks == {}, f"secrets in the local stage's logs: {leaks}"


@pytest.fixture(scope="session")
def operator(stage) -> Http:
    return Http(stage.url, ADMIN_KEY)


@pytest.fixture
def new_merchant(operator):
    def create(**fields) -> Http:
        body = {"name": "Optique Durand", "default_currency": "EUR", "invoice_prefix": "OD",
                "alert_emails": ["ops@optique-durand.fr"], "tax_rates": {"FR": "20.0"},
                "timezone": "Europe/Paris", "locale": "fr", **fields}
        response = operator.post("/admin/merchants", json=body)
        assert response.status_code == 201, response.text
        api = operator.as_key(response.json()["api_key"])
        api.merchant = response.json()
        return api

    return create
