"""moto's server keeping its state across a restart (infra/local/moto_state.py):
what it acknowledged before it stopped is there when it starts again."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config

from infra.local.moto_state import _Gate
from tests.e2e.conftest import ROOT


def slow_app(release: threading.Event):
    def app(environ, start_response):
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    return app


def test_the_gate_waits_for_requests_in_flight_and_refuses_new_ones():
    release = threading.Event()
    gate = _Gate(slow_app(release))
    answers = []
    in_flight = threading.Thread(target=lambda: answers.append(gate({}, lambda status, headers: answers.append(status))))
    in_flight.start()
    time.sleep(0.2)
    assert gate.close(timeout=0.2) is False  # one request is still running
    refused = []
    assert gate({}, lambda status, headers: refused.append((status, dict(headers)))) == [b"moto is restarting\n"]
    assert refused == [("503 Service Unavailable", refused[0][1])] and refused[0][1]["Connection"] == "close"
    release.set()
    in_flight.join(5)
    assert answers == ["200 OK", [b"done"]]
    assert gate.close(timeout=1) is True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int, state_file) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local.moto_server", "-H", "127.0.0.1", "-p", str(port), "--state-file",
         str(state_file)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto did not start")


@pytest.mark.timeout(120)
def test_every_message_acknowledged_before_a_restart_is_kept(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    port, state = free_port(), tmp_path / "moto.state"
    moto = start_moto(port, state)
    sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
                       config=Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=8))
    url = sqs.create_queue(QueueName="readings")["QueueUrl"]
    acknowledged: list[str] = []
    stop = threading.Event()

    def send(sender: int) -> None:
        n = 0
        while not stop.is_set():
            body = f"{sender}-{n}"
            n += 1
            try:
                sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "0", "MessageBody": body}])
            except Exception:  # refused or unreachable: not acknowledged
                time.sleep(0.01)
                continue
            acknowledged.append(body)

    senders = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for sender in senders:
        sender.start()
    time.sleep(1.5)
    moto.send_signal(signal.SIGTERM)
    assert moto.wait(60) == 0
    stop.set()
    for sender in senders:
        sender.join(10)
    assert state.exists() and len(acknowledged) > 50

    moto = start_moto(port, state)
    try:
        kept: set[str] = set()
        while True:
            answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300)
            if not answer.get("Messages"):
                break
            kept.update(m["Body"] for m in answer["Messages"])
        assert set(acknowledged) - kept == set()
    finally:
        moto.terminate()
        moto.wait(30)
