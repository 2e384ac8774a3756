"""The rules of the customer's own pages (domain/self_service.py), plain values."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.domain import self_service as rules

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
MERCHANT, SESSION = "mer_01m98k64ws036z6b2qmmeg4t89", "cs_01m98k64ws036z6b2qmmeg4t8a"
SECRET = "s" * 43


def test_a_link_carries_merchant_session_and_secret_and_only_its_digest_is_kept():
    token = rules.link_token(MERCHANT, SESSION, SECRET)
    link = rules.parse_link(token, "cs_")
    assert (link.merchant_id, link.object_id, link.secret) == (MERCHANT, SESSION, SECRET)
    rules.check_secret(link, rules.secret_digest(SECRET))
    with pytest.raises(rules.LinkNotFound):
        rules.check_secret(link, rules.secret_digest("t" * 43))
    with pytest.raises(rules.LinkNotFound):
        rules.check_secret(link, None)


@pytest.mark.parametrize("token", ["", "x", f"{MERCHANT}.{SESSION}", f"{MERCHANT}.{SESSION}.short",
                                   f"{MERCHANT}.bps_01m98k64ws036z6b2qmmeg4t8a.{SECRET}", f"{MERCHANT}.{SESSION}.{SECRET}/"])
def test_anything_else_is_not_a_checkout_link(token):
    with pytest.raises(rules.LinkNotFound):
        rules.parse_link(token, "cs_")


def test_a_session_is_open_until_its_end_then_expired_and_complete_for_good():
    end = NOW + timedelta(hours=1)
    assert rules.checkout_status("open", end, NOW) == "open"
    assert rules.checkout_status("open", end, end) == "expired"
    assert rules.checkout_status("complete", end, end + timedelta(days=9)) == "complete"
    with pytest.raises(rules.LinkExpired):
        rules.check_not_expired(end, end)
    rules.check_not_expired(end, end - timedelta(seconds=1))


@pytest.mark.parametrize("url, ok", [
    ("https://shop.example/thanks", True), ("http://127.0.0.1:8000/x?a=1", True),
    ("javascript:alert(1)", False), ("/relative", False), ("https://", False),
    ("https://shop.example/a b", False), ("https://x.example/" + "a" * 2048, False),
])
def test_return_urls_are_absolute_http_addresses(url, ok):
    assert rules.is_return_url(url) is ok


def test_the_success_redirect_adds_the_session_to_the_query():
    assert rules.success_redirect("https://shop.example/ok", SESSION) == f"https://shop.example/ok?session_id={SESSION}"
    assert rules.success_redirect("https://shop.example/ok?plan=a#top", SESSION) == \
        f"https://shop.example/ok?plan=a&session_id={SESSION}#top"


def test_a_commitment_blocks_cancelling_until_the_period_that_ends_with_it():
    period_end, commitment_end = NOW + timedelta(days=10), NOW + timedelta(days=200)
    assert rules.cancel_blocked_until(commitment_end, period_end, "active") == commitment_end
    assert rules.cancel_blocked_until(commitment_end, commitment_end, "active") is None
    assert rules.cancel_blocked_until(None, period_end, "active") is None
    assert rules.cancel_blocked_until(commitment_end, period_end, "trialing") is None


def test_the_portal_offers_the_allowed_live_offers_in_the_merchants_order():
    assert rules.portal_upgrade_targets(["off_b", "off_a", "off_b", "off_c"], {"off_a", "off_b"}, "off_a") == ["off_b"]
