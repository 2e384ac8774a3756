"""Payment-link tokens: signed, expiring, for one customer of one merchant."""
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.domain.payment_links import ExpiredLink, InvalidLink, sign_link, verify_link

KEY = b"signing-key"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
EXPIRES = NOW + timedelta(days=7)
MERCHANT = "mer_01jd3k8v6q2x9m4t7w1z5c0b8n"
CUSTOMER = "cus_01jd3k9a1b2c3d4e5f6g7h8j9k"


def test_a_token_names_its_merchant_customer_and_expiry():
    token = sign_link(MERCHANT, CUSTOMER, EXPIRES, KEY)
    link = verify_link(token, KEY, NOW)
    assert (link.merchant_id, link.customer_id, link.expires_at) == (MERCHANT, CUSTOMER, EXPIRES)


def test_a_token_is_compact_and_url_safe():
    token = sign_link(MERCHANT, CUSTOMER, EXPIRES, KEY)
    assert len(token) < 100
    assert all(c.isalnum() or c in "._-" for c in token)


def test_it_expires_at_its_expiry_second():
    token = sign_link(MERCHANT, CUSTOMER, EXPIRES, KEY)
    assert verify_link(token, KEY, EXPIRES - timedelta(seconds=1)).customer_id == CUSTOMER
    with pytest.raises(ExpiredLink) as expired:
        verify_link(token, KEY, EXPIRES)
    assert expired.value.status == 410


@pytest.mark.parametrize("change", [
    lambda t: t.replace(CUSTOMER, "cus_01jd3k9a1b2c3d4e5f6g7h8j9m"),  # another customer
    lambda t: t.replace(MERCHANT, "mer_01jd3k8v6q2x9m4t7w1z5c0b8p"),  # another merchant
    lambda t: ".".join(t.split(".")[:2] + ["zzzzzzz"] + t.split(".")[3:]),  # a later expiry
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # the signature
    lambda t: t[:-1],  # cut short
    lambda t: t + "x",
    lambda t: "",
    lambda t: "a.b.c.d",
])
def test_a_changed_token_is_refused(change):
    token = sign_link(MERCHANT, CUSTOMER, EXPIRES, KEY)
    with pytest.raises(InvalidLink) as invalid:
        verify_link(change(token), KEY, NOW)
    assert invalid.value.status == 400 and invalid.value.code == "invalid_payment_link"


def test_a_token_signed_with_another_key_is_refused():
    with pytest.raises(InvalidLink):
        verify_link(sign_link(MERCHANT, CUSTOMER, EXPIRES, b"other-key"), KEY, NOW)


def test_an_expired_token_that_was_tampered_with_is_invalid_not_expired():
    token = sign_link(MERCHANT, CUSTOMER, EXPIRES, b"other-key")
    with pytest.raises(InvalidLink):
        verify_link(token, KEY, EXPIRES + timedelta(days=30))
