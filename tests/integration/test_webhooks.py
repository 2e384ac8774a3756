"""Merchant webhooks against moto and a real receiver: domain events on the
bus go through WebhookRule and WebhookQueue to webhook_dispatch, which
POSTs them, signed, to a merchant's HTTP server on 127.0.0.1; the retry job
(webhook_scheduler) makes the attempts owed; the API shows the deliveries
and retries one on demand."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from tests.webhook_receiver import Receiver, verify

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def now(aws):
    from chalicelib.clock import FixedClock, use_clock

    fixed = FixedClock(NOW)
    use_clock(fixed)
    yield fixed
    use_clock(None)


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def add_endpoint(api, receiver: Receiver, events=("*",), **fields) -> dict:
    response = api.post("/webhook-endpoints", {"url": receiver.url, "events": list(events), **fields})
    assert response.status == 201, response
    receiver.secret = response.json["secret"]
    return response.json


def publish(merchant_id: str, detail_type: str = "invoice.paid", event_id: str | None = "evt_01jdf9a2b3c4d5e6f7g8h9j0k2",
            **detail) -> None:
    """A domain event on the billing bus, as the platform puts it there."""
    body = {"invoice": {"id": "inv_1", "status": "paid", "total": "58.80"}, **detail, "merchant_id": merchant_id}
    if event_id:
        body["event_id"] = event_id
    answer = boto3.client("events", region_name="eu-west-1").put_events(Entries=[{
        "Source": "billing", "DetailType": detail_type, "Detail": json.dumps(body),
        "EventBusName": os.environ["EVENT_BUS_NAME"]}])
    assert answer["FailedEntryCount"] == 0


def drain() -> int:
    """What is on the webhook queue, handed to webhook_dispatch as Lambda
    would; how many messages it handled."""
    import app
    from infra.local.lambda_events import drain_once

    url = boto3.client("sqs", region_name="eu-west-1").get_queue_url(QueueName="WebhookQueue")["QueueUrl"]
    handled = 0
    while n := drain_once(url, app.app.handler_map["webhook_dispatch"]):
        handled += n
    return handled


def retry_job(clock, at: datetime) -> dict:
    """The clock at `at`, the retry job run as EventBridge runs it, and its
    queued attempts made."""
    from chalicelib import jobs

    clock.set(at)
    result = jobs.webhook_scheduler(at)
    drain()
    return result


def deliveries(api, endpoint_id: str, **query) -> dict:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    response = api.get(f"/webhook-endpoints/{endpoint_id}/deliveries{suffix}")
    assert response.status == 200, response
    return response.json


def test_an_event_reaches_the_endpoint_signed_and_its_delivery_is_logged(merchant, receiver, now):
    endpoint = add_endpoint(merchant, receiver, events=["invoice.paid"], description="ERP")
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    publish(merchant.merchant["id"])
    assert drain() == 1

    [got] = receiver.received
    assert got.verified and got.path == "/hooks/billing"
    assert got.headers["Content-Type"].startswith("application/json")
    event = got.event
    assert (event["id"], event["type"]) == ("evt_01jdf9a2b3c4d5e6f7g8h9j0k2", "invoice.paid")
    assert event["data"]["invoice"] == {"id": "inv_1", "status": "paid", "total": "58.80"}
    assert event["data"]["merchant_id"] == merchant.merchant["id"] and event["created"].endswith("Z")
    # The receiver's check is a real one: another secret, or a changed body, fails it.
    header = got.headers["Billing-Signature"]
    assert not verify("whsec_" + "x" * 43, header, got.body)
    assert not verify(receiver.secret, header, got.body + b" ")

    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert (delivery["status"], delivery["event_id"], delivery["event_type"]) == (
        "succeeded", "evt_01jdf9a2b3c4d5e6f7g8h9j0k2", "invoice.paid")
    assert delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert (attempt["status_code"], attempt["error"], attempt["manual"], attempt["at"]) == (
        200, None, False, "2026-12-01T09:00:00Z")
    assert attempt["duration_ms"] >= 0


def test_a_receiver_answering_500_then_200_gets_the_event_twice_and_the_log_shows_both(merchant, receiver, now):
    endpoint = add_endpoint(merchant, receiver)
    receiver.answers = [500, 200]
    publish(merchant.merchant["id"])
    drain()
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["status"] == "pending" and delivery["next_attempt_at"] == "2026-12-01T09:01:00Z"

    assert retry_job(now, NOW + timedelta(seconds=30))["due"] == 0  # not yet
    assert len(receiver.received) == 1
    assert retry_job(now, NOW + timedelta(minutes=5))["due"] == 1
    for later in (10, 60, 600, 6000):  # nothing more is owed
        retry_job(now, NOW + timedelta(minutes=later))

    assert len(receiver.received) == 2 and all(r.verified for r in receiver.received)
    assert receiver.received[0].body == receiver.received[1].body  # the same event, signed anew
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["status"] == "succeeded" and delivery["next_attempt_at"] is None
    assert [(a["status_code"], a["at"]) for a in delivery["attempts"]] == [
        (500, "2026-12-01T09:00:00Z"), (200, "2026-12-01T09:05:00Z")]


def test_a_redelivered_event_makes_no_second_delivery(merchant, receiver, now):
    endpoint = add_endpoint(merchant, receiver)
    # Published twice with the same id (the bus gives each its own envelope id).
    publish(merchant.merchant["id"])
    publish(merchant.merchant["id"])
    assert drain() == 2
    # Without detail.event_id, the envelope's id: the same queue message handed twice.
    import app
    from infra.local.lambda_events import LocalContext

    message = {"version": "0", "id": "3f1c9a52-7d4e-4b8a-9c21-5e6f7a8b9c0d", "detail-type": "customer.created",
               "source": "billing", "time": "2026-12-01T08:59:00Z",
               "detail": {"merchant_id": merchant.merchant["id"], "customer": {"id": "cus_1"}}}
    record = {"messageId": "m1", "receiptHandle": "r1", "body": json.dumps(message), "attributes": {},
              "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:WebhookQueue", "awsRegion": "eu-west-1"}
    for _ in range(2):
        assert app.webhook_dispatch({"Records": [record]}, LocalContext())["batchItemFailures"] == []

    assert [e["id"] for e in receiver.events()] == ["evt_01jdf9a2b3c4d5e6f7g8h9j0k2",
                                                    "3f1c9a52-7d4e-4b8a-9c21-5e6f7a8b9c0d"]
    assert receiver.events()[1]["created"] == "2026-12-01T08:59:00Z"
    assert len(deliveries(merchant, endpoint["id"])["data"]) == 2


def test_each_event_goes_to_the_endpoints_listening_to_it_of_its_merchant_only(merchant, new_merchant, now):
    other = new_merchant(name="Autre Optique")
    with Receiver() as paid, Receiver() as everything, Receiver() as customers, Receiver() as theirs:
        add_endpoint(merchant, paid, events=["invoice.paid", "invoice.voided"])
        add_endpoint(merchant, everything, events=["*"])
        add_endpoint(merchant, customers, events=["customer.created"])
        add_endpoint(other, theirs, events=["*"])
        publish(merchant.merchant["id"], "invoice.paid", event_id="evt_a")
        publish(merchant.merchant["id"], "subscription.canceled", event_id="evt_b")
        drain()
        assert [e["id"] for e in paid.events()] == ["evt_a"]
        assert sorted(e["id"] for e in everything.events()) == ["evt_a", "evt_b"]
        assert customers.received == [] and theirs.received == []


def test_a_receiver_that_never_answers_2xx_is_retried_with_backoff_for_three_days(merchant, receiver, now):
    endpoint = add_endpoint(merchant, receiver)
    receiver.default = 503
    publish(merchant.merchant["id"])
    drain()
    at = NOW
    while True:
        [delivery] = deliveries(merchant, endpoint["id"])["data"]
        if delivery["next_attempt_at"] is None:
            break
        at = datetime.fromisoformat(delivery["next_attempt_at"].replace("Z", "+00:00"))
        retry_job(now, at + timedelta(minutes=4))  # the job runs every 5 minutes
    assert delivery["status"] == "failed"
    times = [datetime.fromisoformat(a["at"].replace("Z", "+00:00")) for a in delivery["attempts"]]
    assert len(times) == len(receiver.received) == 13
    assert times[-1] - times[0] <= timedelta(days=3, minutes=4) and times[-1] - times[0] >= timedelta(days=3)
    assert [t - s for s, t in zip(times[:3], times[1:4])] == [timedelta(minutes=5), timedelta(minutes=9),
                                                               timedelta(minutes=34)]
    retry_job(now, at + timedelta(days=1))
    assert len(receiver.received) == 13  # failed: no more attempts

    # A manual retry is an attempt now, even after `failed`.
    receiver.default = 200
    retried = merchant.post(f"/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry")
    assert retried.status == 200, retried
    assert retried.json["status"] == "succeeded" and retried.json["attempts"][-1]["manual"] is True
    assert retried.json["attempts"][-1]["status_code"] == 200 and len(receiver.received) == 14


def test_a_manual_retry_of_a_pending_delivery_and_the_errors_an_attempt_records(merchant, receiver, now,
                                                                               monkeypatch):
    from chalicelib import webhook_sender

    endpoint = add_endpoint(merchant, receiver)
    monkeypatch.setattr(webhook_sender, "TIMEOUT_SECONDS", 0.3)
    receiver.delay_seconds = 1.0
    publish(merchant.merchant["id"])
    drain()
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["attempts"][0]["error"] == "timeout" and delivery["attempts"][0]["status_code"] is None
    assert delivery["status"] == "pending"

    receiver.delay_seconds = 0
    retried = merchant.post(f"/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry")
    assert retried.status == 200 and retried.json["status"] == "succeeded"
    assert [a["manual"] for a in retried.json["attempts"]] == [False, True]
    retry_job(now, NOW + timedelta(hours=1))
    assert len(receiver.received) == 2  # succeeded: the retry job leaves it alone


def test_an_unreachable_receiver_is_a_failed_attempt_not_a_failed_message(merchant, now):
    with Receiver() as gone:
        pass  # its port is closed now
    endpoint = add_endpoint(merchant, gone)
    publish(merchant.merchant["id"])
    assert drain() == 1
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["attempts"][0]["error"] == "connection_refused" and delivery["status"] == "pending"


def test_endpoints_are_listed_read_and_deleted_and_the_secret_is_shown_once(merchant, receiver, now):
    first = add_endpoint(merchant, receiver, events=["invoice.paid"])
    second = add_endpoint(merchant, receiver, events=["*"])
    assert first["secret"] != second["secret"]
    page = merchant.get("/webhook-endpoints?limit=1").json
    assert [e["id"] for e in page["data"]] == [second["id"]] and page["has_more"] is True
    rest = merchant.get(f"/webhook-endpoints?limit=1&cursor={page['next_cursor']}").json
    assert [e["id"] for e in rest["data"]] == [first["id"]] and rest["has_more"] is False
    shown = merchant.get(f"/webhook-endpoints/{first['id']}")
    assert shown.status == 200 and "secret" not in shown.json
    assert {k: v for k, v in first.items() if k != "secret"} == shown.json
    assert all("secret" not in e for e in page["data"] + rest["data"])

    deleted = merchant.delete(f"/webhook-endpoints/{first['id']}")
    assert deleted.status == 200 and deleted.json == {"object": "webhook_endpoint", "id": first["id"],
                                                      "deleted": True}
    assert merchant.get(f"/webhook-endpoints/{first['id']}").status == 404
    assert merchant.delete(f"/webhook-endpoints/{first['id']}").status == 404
    publish(merchant.merchant["id"])
    drain()
    assert len(receiver.received) == 1  # the remaining endpoint only


def test_deliveries_are_listed_newest_first_page_by_page(merchant, receiver, now):
    endpoint = add_endpoint(merchant, receiver)
    for n in range(3):
        now.set(NOW + timedelta(minutes=n))
        publish(merchant.merchant["id"], event_id=f"evt_{n}")
        drain()
    first = deliveries(merchant, endpoint["id"], limit=2)
    assert [d["event_id"] for d in first["data"]] == ["evt_2", "evt_1"] and first["has_more"]
    rest = deliveries(merchant, endpoint["id"], limit=2, cursor=first["next_cursor"])
    assert [d["event_id"] for d in rest["data"]] == ["evt_0"] and rest["next_cursor"] is None


@pytest.mark.parametrize("body, param", [
    ({"events": ["*"]}, "url"),
    ({"url": "http://erp.example.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://user:pw@erp.example.com/hook", "events": ["*"]}, "url"),
    ({"url": "not a url", "events": ["*"]}, "url"),
    ({"url": 42, "events": ["*"]}, "url"),
    ({"url": "https://erp.example.com/hook"}, "events"),
    ({"url": "https://erp.example.com/hook", "events": []}, "events"),
    ({"url": "https://erp.example.com/hook", "events": "invoice.paid"}, "events"),
    ({"url": "https://erp.example.com/hook", "events": ["invoice.paid", "Invoice Paid"]}, "events[1]"),
    ({"url": "https://erp.example.com/hook", "events": ["*"], "secret": "mine"}, "secret"),
])
def test_a_bad_endpoint_is_400_naming_the_field(merchant, body, param):
    response = merchant.post("/webhook-endpoints", body)
    assert response.status == 400, response
    assert response.json["error"]["param"] == param, response.json


def test_a_deployed_stage_sends_to_public_https_receivers_only(merchant, monkeypatch):
    from chalicelib import config, webhook_sender

    monkeypatch.setenv("STAGE", "dev")
    config.settings.cache_clear()
    try:
        for url in ("http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://10.0.0.8/hook",
                    "https://169.254.169.254/latest", "https://localhost/hook"):
            response = merchant.post("/webhook-endpoints", {"url": url, "events": ["*"]})
            assert (response.status, response.json["error"]["param"]) == (400, "url"), url
    finally:
        config.settings.cache_clear()
    # A name that resolves to a private address is refused when sending.
    outcome = webhook_sender.post("https://localhost:9/hook", "{}", secret="whsec_x", public_only=True)
    assert outcome.status_code is None and outcome.error.startswith("refused_destination")


def test_another_merchants_endpoints_and_deliveries_are_404(merchant, new_merchant, receiver, now):
    other = new_merchant(name="Autre Optique")
    endpoint = add_endpoint(merchant, receiver)
    publish(merchant.merchant["id"])
    drain()
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    mine = add_endpoint(other, receiver)
    base = f"/webhook-endpoints/{endpoint['id']}"
    for response in (other.get(base), other.delete(base), other.get(f"{base}/deliveries"),
                     other.post(f"{base}/deliveries/{delivery['id']}/retry"),
                     # the delivery named under the other merchant's own endpoint
                     other.post(f"/webhook-endpoints/{mine['id']}/deliveries/{delivery['id']}/retry"),
                     merchant.post(f"{base}/deliveries/whd_unknown/retry")):
        assert response.status == 404, response
        assert response.json["error"]["code"] == "not_found", response
    assert [e["id"] for e in other.get("/webhook-endpoints").json["data"]] == [mine["id"]]
    # A cursor of one endpoint's list is refused for another's.
    cursor = merchant.get("/webhook-endpoints?limit=1").json["next_cursor"]
    assert cursor is None
    assert other.get(f"/webhook-endpoints/{mine['id']}/deliveries?cursor=bm9wZQ").status == 400
    assert len(receiver.received) == 1


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.now(timezone.utc) - timedelta(days=1)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(start)
                   .not_valid_after(start + timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_https_receivers_are_verified_against_their_name(tmp_path, monkeypatch):
    import ssl

    from chalicelib import webhook_sender

    cert, key = _self_signed(tmp_path)
    with Receiver(secret="whsec_tls") as receiver:
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        receiver.server.socket = server_context.wrap_socket(receiver.server.socket, server_side=True)
        url = receiver.url.replace("http://", "https://")
        # A certificate nobody vouches for: no attempt reaches the receiver.
        refused = webhook_sender.post(url, "{}", secret="whsec_tls", public_only=False)
        assert refused.status_code is None and refused.error.startswith("tls_error"), refused
        # Trusted, the same pinned connection speaks TLS to it, signed.
        trusting = ssl.create_default_context(cafile=cert)
        monkeypatch.setattr(webhook_sender.ssl, "create_default_context", lambda: trusting)
        sent = webhook_sender.post(url, '{"id":"evt_tls"}', secret="whsec_tls", public_only=False)
        assert (sent.status_code, sent.error) == (200, None)
        assert [r.verified for r in receiver.received] == [True]


def test_a_sender_that_dies_mid_attempt_is_replaced_after_its_lease(merchant, receiver, now, monkeypatch):
    from chalicelib import webhook_sender

    endpoint = add_endpoint(merchant, receiver)
    real_post = webhook_sender.post

    def dies(*args, **kwargs):
        raise SystemError("the function timed out")

    monkeypatch.setattr(webhook_sender, "post", dies)
    publish(merchant.merchant["id"])
    drain()  # the record failed: it comes back later, and makes no second delivery then
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["status"] == "pending" and delivery["attempts"] == []

    monkeypatch.setattr(webhook_sender, "post", real_post)
    assert retry_job(now, NOW + timedelta(seconds=30))["due"] == 0  # its lease still runs
    assert receiver.received == []
    assert retry_job(now, NOW + timedelta(minutes=5))["due"] == 1
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["status"] == "succeeded" and len(receiver.received) == 1


def test_the_local_clock_makes_the_attempts_owed_itself(merchant, receiver, now):
    from chalicelib import jobs

    endpoint = add_endpoint(merchant, receiver)
    receiver.answers = [500]
    publish(merchant.merchant["id"])
    drain()
    ran = jobs.run_jobs_fallen_due(NOW, NOW + timedelta(minutes=6))
    [webhook_job] = [job for job in ran if job["name"] == "webhook_scheduler"]
    assert webhook_job["result"] == {"due": 1, "attempted": 1}
    [delivery] = deliveries(merchant, endpoint["id"])["data"]
    assert delivery["status"] == "succeeded" and [a["status_code"] for a in delivery["attempts"]] == [500, 200]
