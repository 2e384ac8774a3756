"""The local stage: the whole backend on one machine, no AWS or Stripe account.

    python -m infra.local.stage        (what `make run` starts)

It starts moto's server as AWS and creates the template's resources in it,
localstripe as Stripe (its webhooks pointed at the API), the API with
`chalice local`, and the driver that runs the queue consumers, the schedules
and the MQTT broker/bridge. Ctrl-C or SIGTERM stops every process it started.
Ports come from the environment, so tests can run a stage beside yours.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ADMIN_API_KEY = "local-admin-key"
STRIPE_SECRET_KEY = "sk_test_local"
STRIPE_WEBHOOK_SECRET = "whsec_local"
STRIPE_PUBLISHABLE_KEY = "pk_test_local"
TOKEN_SIGNING_KEY = "local-token-signing-key"


def stage_environment(ports: dict[str, int], state_dir: Path) -> dict[str, str]:
    """The environment every process of the stage shares."""
    return {
        **os.environ,
        "STAGE": "local",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['moto']}",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "ADMIN_API_KEY": ADMIN_API_KEY,
        "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_PUBLISHABLE_KEY": STRIPE_PUBLISHABLE_KEY,
        "TOKEN_SIGNING_KEY": TOKEN_SIGNING_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{ports['stripe']}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['api']}",
        "MQTT_PORT": str(ports["mqtt"]),
        "LOCAL_CLOCK_FILE": str(state_dir / "clock.json"),
        "POWERTOOLS_SERVICE_NAME": "billing",
        "POWERTOOLS_METRICS_NAMESPACE": "Billing",
        "PYTHONUNBUFFERED": "1",
    }


def wait_for_http(url: str, seconds: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class Stage:
    def __init__(self, ports: dict[str, int], state_dir: Path, keep_aws_state: bool = False):
        self.ports = ports
        self.state_dir = state_dir
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.env = stage_environment(ports, state_dir)
        # moto saves its state on SIGTERM and loads it when started again
        # (infra/local/moto_state.py): what a restart of AWS's stand-in needs.
        self.keep_aws_state = keep_aws_state

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        # Appended to: a process started again (`restart`) keeps its history.
        log = open(self.state_dir / f"{name}.log", "ab")
        # Each child leads its own process group, so stopping it also stops
        # whatever it started (chalice's server threads, moto's workers).
        process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append((name, process))
        return process

    def start(self) -> None:
        python = sys.executable
        state = ["--state-file", str(self.state_dir / "aws-state.pickle")] if self.keep_aws_state else []
        moto = self.spawn("moto", [python, "-m", "infra.local.moto_server",
                                   "-H", "127.0.0.1", "-p", str(self.ports["moto"]), *state])
        wait_for_http(f"http://127.0.0.1:{self.ports['moto']}/moto-api/", 30, moto)
        self.provision()

        stripe = self.spawn(
            "localstripe", [python, "-m", "infra.local.localstripe_server", "--port", str(self.ports["stripe"])]
        )
        wait_for_http(f"http://127.0.0.1:{self.ports['stripe']}/v1/customers", 30, stripe)
        self.point_stripe_webhooks()

        # `chalice local --no-autoreload`, every HTTP method reaching the app.
        api = self.spawn(
            "api",
            [python, "-m", "infra.local.api_server", "--host", "127.0.0.1", "--port", str(self.ports["api"]),
             "--stage", "local"],
        )
        wait_for_http(f"http://127.0.0.1:{self.ports['api']}/health", 60, api)
        self.spawn("driver", [python, "-m", "infra.local.driver"])

    def provision(self) -> None:
        from infra.local.provision import provision

        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            self.env.update(provision())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def point_stripe_webhooks(self) -> None:
        from urllib.parse import urlencode

        data = urlencode(
            {"url": f"http://127.0.0.1:{self.ports['api']}/webhooks/stripe", "secret": STRIPE_WEBHOOK_SECRET}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['stripe']}/_config/webhooks/billing", data=data, method="POST"
        )
        urllib.request.urlopen(request, timeout=5).close()

    def describe(self) -> str:
        p = self.ports
        return "\n".join(
            [
                "Local stage running:",
                f"  API          http://127.0.0.1:{p['api']}   (operator key: {ADMIN_API_KEY})",
                f"  AWS (moto)   http://127.0.0.1:{p['moto']}",
                f"  Stripe       http://127.0.0.1:{p['stripe']}   (localstripe, key {STRIPE_SECRET_KEY})",
                f"  MQTT broker  127.0.0.1:{p['mqtt']}   topic billing/<merchant_id>/<device_id>/counters",
                "  driver       queue consumers and scheduled jobs (clock: POST /_local/clock)",
                f"  logs         {self.state_dir}/",
                "Ctrl-C stops everything.",
            ]
        )

    def process(self, name: str) -> subprocess.Popen:
        return next(process for named, process in self.processes if named == name)

    def restart(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30) -> subprocess.Popen:
        """Stop one of the stage's processes, its whole group, with `sig`
        (SIGKILL: a crash; SIGTERM: an orderly stop), and start it again as
        it was started, with the same arguments and environment. Returns the
        new process once it answers (moto, localstripe, the API) or has
        started (the driver)."""
        index = next(i for i, (named, _) in enumerate(self.processes) if named == name)
        old = self.processes[index][1]
        _signal_group(old, sig)
        try:
            old.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(old, signal.SIGKILL)
            old.wait()
        _signal_group(old, signal.SIGKILL)  # what the group started may outlive its leader
        del self.processes[index]
        new = self.spawn(name, list(old.args))
        self.processes.insert(index, self.processes.pop())
        urls = {"moto": f"http://127.0.0.1:{self.ports['moto']}/moto-api/",
                "localstripe": f"http://127.0.0.1:{self.ports['stripe']}/v1/customers",
                "api": f"http://127.0.0.1:{self.ports['api']}/health"}
        if name in urls:
            wait_for_http(urls[name], 60, new)
        return new

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, process in self.processes:
            # The whole group: a child's own children may outlive it.
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def ports_from_environment() -> dict[str, int]:
    env = os.environ
    return {
        "api": int(env.get("LOCAL_API_PORT", "8000")),
        "moto": int(env.get("LOCAL_AWS_PORT", "5000")),
        "stripe": int(env.get("LOCAL_STRIPE_PORT", "8420")),
        "mqtt": int(env.get("LOCAL_MQTT_PORT", "1883")),
    }


def main() -> int:
    state_dir = Path(os.environ.get("LOCAL_STATE_DIR", ROOT / ".local-stage"))
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    stage = Stage(ports_from_environment(), state_dir)

    stopping = []

    def request_stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stage.start()
        print(stage.describe(), flush=True)
        while not stopping:
            exited = stage.first_exited()
            if exited:
                print(f"{exited[0]} exited with {exited[1]}; see {state_dir}/{exited[0]}.log", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except Exception as error:  # start-up failed: say why, stop what started
        print(f"local stage failed to start: {error}", file=sys.stderr)
        return 1
    finally:
        stage.stop()
        print("Local stage stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
