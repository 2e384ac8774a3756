"""Payment-link tokens: who may enter a card, for whom, until when.

A token is the whole authority of the public payment page (no API key, no
login): it names one merchant and one customer and an expiry, signed with
HMAC-SHA256 under the platform's token signing key. Nothing is stored, so a
link costs no write and cannot be looked up; it dies by its expiry.

    <merchant_id>.<customer_id>.<expiry, epoch seconds in base 36>.<signature>

Ids are `[a-z0-9_]` (ids.py), so `.` separates safely and the token is
URL-safe as it is. The signature is the HMAC truncated to 128 bits
(base64url, 22 characters), ample for a MAC that cannot be tried offline,
and it covers a purpose label so that no other HMAC made with the same key
can pass for a link.

Pure: the key and "now" are given by the caller.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from chalicelib.domain.errors import BillingError, InvalidRequest

PURPOSE = b"payment-link/v1\n"
SIGNATURE_BYTES = 16
_ID = r"[a-z]{3}_[a-z0-9]{1,64}"
_TOKEN = re.compile(
    rf"^(?P<merchant>{_ID})\.(?P<customer>{_ID})\.(?P<expiry>[0-9a-z]{{1,13}})\.(?P<signature>[A-Za-z0-9_-]{{22}})$"
)


class InvalidLink(InvalidRequest):
    """Not a link this platform made (mistyped, cut, or tampered with)."""

    code = "invalid_payment_link"


class ExpiredLink(BillingError):
    """A genuine link past its expiry: the merchant can send a fresh one."""

    status = 410
    type = "invalid_request_error"
    code = "payment_link_expired"


@dataclass(frozen=True)
class PaymentLink:
    merchant_id: str
    customer_id: str
    expires_at: datetime


def sign_link(merchant_id: str, customer_id: str, expires_at: datetime, key: bytes) -> str:
    """The token for `customer_id` of `merchant_id`, valid until `expires_at` (whole seconds)."""
    for value in (merchant_id, customer_id):
        if not re.fullmatch(_ID, value):
            raise ValueError(f"{value!r} is not an id")
    body = f"{merchant_id}.{customer_id}.{_base36(int(expires_at.timestamp()))}"
    return f"{body}.{_signature(body, key)}"


def verify_link(token: str, key: bytes, now: datetime) -> PaymentLink:
    """The link a token stands for; `InvalidLink` if it was not signed with
    `key`, `ExpiredLink` if it is genuine but past its expiry."""
    match = _TOKEN.match(token or "")
    if match is None:
        raise InvalidLink("this payment link is not valid", param="token")
    body = token.rsplit(".", 1)[0]
    if not hmac.compare_digest(match["signature"], _signature(body, key)):
        raise InvalidLink("this payment link is not valid", param="token")
    expires_at = datetime.fromtimestamp(int(match["expiry"], 36), timezone.utc)
    if now >= expires_at:
        raise ExpiredLink("this payment link has expired; ask for a new one", param="token")
    return PaymentLink(merchant_id=match["merchant"], customer_id=match["customer"], expires_at=expires_at)


def _signature(body: str, key: bytes) -> str:
    digest = hmac.new(key, PURPOSE + body.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("expiry before 1970")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text
