"""The rules of the customer's own pages, the hosted checkout and the
customer portal: their links, a session's state, where the browser goes
back to, and what a customer may do alone.

A link is `<merchant_id>.<object_id>.<secret>`: the merchant and the session
are found by key (one GetItem), and only the SHA-256 of the secret is kept,
so a copy of the table opens no page. A wrong secret and an unknown session
answer alike (404); a genuine link past its end is a 410.

Pure: the secret, "now" and the records are given by the caller.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from chalicelib.domain.errors import BillingError, InvalidRequest, NotFound

_ID = r"[a-z]{2,4}_[a-z0-9]{1,64}"
_LINK = re.compile(rf"^(?P<merchant>{_ID})\.(?P<object>{_ID})\.(?P<secret>[A-Za-z0-9_-]{{32,64}})$")
MAX_URL_CHARS = 2048
CHECKOUT_STATUSES = ("open", "complete", "expired")


class LinkNotFound(NotFound):
    """Not a link of this platform, or not this session's (mistyped, cut, tampered, another's)."""

    code = "link_not_found"


class LinkExpired(BillingError):
    """A genuine link past its end: the merchant (or the portal's e-mail form) gives a new one."""

    status = 410
    type = "invalid_request_error"
    code = "link_expired"


@dataclass(frozen=True)
class Link:
    merchant_id: str
    object_id: str
    secret: str


def link_token(merchant_id: str, object_id: str, secret: str) -> str:
    token = f"{merchant_id}.{object_id}.{secret}"
    if not _LINK.match(token):
        raise ValueError("not a link's parts")
    return token


def parse_link(token: str | None, prefix: str) -> Link:
    """The parts of a link whose object id starts with `prefix` (`cs_`, `bps_`)."""
    match = _LINK.match(token or "")
    if match is None or not match["object"].startswith(prefix):
        raise LinkNotFound("this link leads nowhere; ask for a new one")
    return Link(match["merchant"], match["object"], match["secret"])


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_secret(link: Link, stored_digest: str | None) -> None:
    """The link's secret against the one kept: a mismatch is the same 404 as no session."""
    if not stored_digest or not hmac.compare_digest(secret_digest(link.secret), stored_digest):
        raise LinkNotFound("this link leads nowhere; ask for a new one")


def check_not_expired(expires_at: datetime, now: datetime) -> None:
    if now >= expires_at:
        raise LinkExpired("this link has expired; ask for a new one")


def checkout_status(stored: str, expires_at: datetime, now: datetime) -> str:
    """`open` until it completes or its end passes (then `expired`), `complete` for good."""
    if stored == "complete":
        return "complete"
    return "expired" if now >= expires_at else "open"


def is_return_url(value: str) -> bool:
    """An absolute http(s) address the browser may be sent back to."""
    parts = urlsplit(value)
    return (len(value) <= MAX_URL_CHARS and parts.scheme in ("https", "http") and bool(parts.netloc)
            and not any(c in value for c in " \t\r\n\\"))


def checked_url(value: str, param: str) -> str:
    if not is_return_url(value):
        raise InvalidRequest(f"{param}: an absolute http(s) URL of at most {MAX_URL_CHARS} characters", param=param)
    return value


def success_redirect(success_url: str, session_id: str) -> str:
    """`success_url` with `session_id` added to its query."""
    parts = urlsplit(success_url)
    query = "&".join(q for q in (parts.query, urlencode({"session_id": session_id})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def cancel_blocked_until(commitment_ends_at: datetime | None, period_end: datetime,
                         status: str) -> datetime | None:
    """When a cancellation at the period end is before the commitment's end,
    the end that forbids it (lifecycle's rule, shown before the customer
    tries); None when the customer may cancel."""
    if status in ("trialing", "incomplete") or commitment_ends_at is None or period_end >= commitment_ends_at:
        return None
    return commitment_ends_at


def portal_upgrade_targets(allowed: list[str], live_offer_ids: set[str], current: str) -> list[str]:
    """The offers a portal may switch a subscription to: those the merchant
    allows from its current offer, still live, in the merchant's order."""
    return [offer_id for offer_id in dict.fromkeys(allowed) if offer_id in live_offer_ids and offer_id != current]
