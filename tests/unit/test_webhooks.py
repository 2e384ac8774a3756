"""Merchant webhooks, the pure part: matching, body, signature, backoff, URLs."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.domain import webhooks as rules

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def test_an_endpoint_gets_the_types_it_listens_to_or_every_one_with_a_star():
    assert rules.matches(["invoice.paid", "invoice.voided"], "invoice.paid")
    assert not rules.matches(["invoice.paid"], "invoice.payment_failed")
    assert not rules.matches(["invoice"], "invoice.paid")
    assert rules.matches(["*"], "subscription.canceled")


def test_the_body_is_the_event_in_a_fixed_shape_byte_for_byte():
    body = rules.event_body("evt_1", "invoice.paid", "2026-12-01T09:00:00Z",
                            {"merchant_id": "mer_1", "invoice": {"id": "inv_1", "total": "12.50"}})
    assert body == ('{"created":"2026-12-01T09:00:00Z","data":{"invoice":{"id":"inv_1","total":"12.50"},'
                    '"merchant_id":"mer_1"},"id":"evt_1","type":"invoice.paid"}')
    assert json.loads(body)["data"]["invoice"]["total"] == "12.50"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex():
    # A known answer: HMAC-SHA256 keyed "whsec_test" of "1700000000.{}".
    expected = "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
    assert hmac.new(b"whsec_test", b"1700000000.{}", hashlib.sha256).hexdigest() == expected
    assert rules.signature("whsec_test", 1700000000, "{}") == expected
    assert rules.signature_header("whsec_test", 1700000000, "{}") == f"t=1700000000,v1={expected}"
    # Any change of secret, time or body changes it.
    assert rules.signature("whsec_other", 1700000000, "{}") != expected
    assert rules.signature("whsec_test", 1700000001, "{}") != expected
    assert rules.signature("whsec_test", 1700000000, "{ }") != expected


def test_failed_attempts_back_off_then_stop_three_days_after_the_first():
    at, attempts, failures = T0, [T0], 0
    while True:
        failures += 1
        following = rules.next_attempt_at(T0, failures, at)
        if following is None:
            break
        at = following
        attempts.append(at)
    waits = [b - a for a, b in zip(attempts, attempts[1:])]
    assert waits[:6] == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
                         timedelta(hours=5), timedelta(hours=10)]
    assert set(waits[6:-1]) == {timedelta(hours=10)}
    # The last attempt is at the end of the window, never after it.
    assert attempts[-1] == T0 + timedelta(days=3)
    assert len(attempts) == 13


def test_a_retry_never_goes_past_the_window_and_none_after_it():
    assert rules.next_attempt_at(T0, 9, T0 + timedelta(hours=70)) == T0 + timedelta(days=3)
    assert rules.next_attempt_at(T0, 13, T0 + timedelta(days=3)) is None
    assert rules.next_attempt_at(T0, 1, T0 + timedelta(days=4)) is None
    with pytest.raises(ValueError):
        rules.next_attempt_at(T0, 0, T0)


def test_any_2xx_is_a_success():
    assert [rules.is_success(c) for c in (200, 201, 204, 299)] == [True] * 4
    assert [rules.is_success(c) for c in (None, 199, 301, 400, 500)] == [False] * 5


@pytest.mark.parametrize("url", ["https://erp.example.com/hooks/billing", "https://erp.example.com:8443/h?x=1",
                                 "https://8.8.8.8/hook"])
def test_public_https_urls_are_accepted_everywhere(url):
    assert rules.url_problem(url, deployed=True) is None
    assert rules.url_problem(url, deployed=False) is None


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost:9000/", "http://[::1]:9000/h"])
def test_a_loopback_receiver_is_allowed_off_aws_only(url):
    assert rules.url_problem(url, deployed=False) is None
    assert rules.url_problem(url, deployed=True) is not None


@pytest.mark.parametrize("url, problem", [
    ("http://erp.example.com/hook", "https"),
    ("ftp://erp.example.com/hook", "https"),
    ("erp.example.com/hook", "https"),
    ("https://", "https"),
    ("https://user:pass@erp.example.com/", "credentials"),
    ("https://erp.example.com/#x", "fragment"),
    ("https://10.0.0.5/hook", "public"),
    ("https://192.168.1.10/hook", "public"),
    ("https://169.254.169.254/latest/meta-data", "public"),
    ("https://[fd00::1]/hook", "public"),
    ("https://[::ffff:10.0.0.1]/hook", "public"),
    ("https://metadata.google.internal/", "public"),
    ("https://intranet/", "public"),
    ("https://printer.local/", "public"),
    ("https://erp.example.com:99999/", "valid"),
    ("https://erp.example.com/" + "a" * 2048, "2048"),
    ("https://erp.exämple.com/hook", "ASCII"),
    ("https://erp.example.com/a hook", "ASCII"),
    ("https://erp.example.com/\x00", "ASCII"),
])
def test_urls_a_deployed_stage_refuses(url, problem):
    found = rules.url_problem(url, deployed=True)
    assert found is not None and problem in found, found


def test_public_addresses():
    public = [ipaddress.ip_address(a) for a in ("8.8.8.8", "2606:4700::1111")]
    private = [ipaddress.ip_address(a) for a in ("10.1.2.3", "172.16.0.1", "192.168.0.1", "127.0.0.1",
                                                  "169.254.169.254", "0.0.0.0", "224.0.0.1", "100.64.0.1",
                                                  "::1", "fe80::1", "::ffff:127.0.0.1")]
    assert all(rules.is_public_address(a) for a in public)
    assert not any(rules.is_public_address(a) for a in private)
