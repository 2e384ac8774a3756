"""Merchant webhooks, the pure part: which endpoints an event goes to, the
body and signature of a delivery, when a failed one is tried again, and
which URLs an endpoint may have (docs/api.md, "Webhook endpoints").

No clock, no network: times and the stage's rule come in as arguments.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

# Every event type (`"*"` in an endpoint's `events`).
ALL_EVENTS = "*"
EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")

# The waits after each failed attempt, then the last one again and again,
# until RETRY_WINDOW after the first attempt: 13 attempts over 3 days when
# the receiver never answers 2xx.
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
           timedelta(hours=5), timedelta(hours=10))
RETRY_WINDOW = timedelta(days=3)

SIGNATURE_HEADER = "Billing-Signature"
MAX_URL_LENGTH = 2048
# Host names that only mean something inside a network, never a merchant's
# public receiver.
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def matches(subscribed: list[str] | tuple[str, ...], event_type: str) -> bool:
    """Whether an endpoint listening to `subscribed` gets `event_type`."""
    return ALL_EVENTS in subscribed or event_type in subscribed


def event_body(event_id: str, event_type: str, created: str, data: dict) -> str:
    """The JSON body every attempt of a delivery sends, byte for byte."""
    return json.dumps({"id": event_id, "type": event_type, "created": created, "data": data},
                      separators=(",", ":"), sort_keys=True, default=str)


def signature(secret: str, timestamp: int, body: str) -> str:
    """Hex HMAC-SHA256, keyed by the endpoint's secret, of `"{timestamp}.{body}"`."""
    return hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str) -> str:
    """The `Billing-Signature` header's value: `t=<unix>,v1=<hex>`."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def next_attempt_at(first_attempt_at: datetime, failed_attempts: int, now: datetime) -> datetime | None:
    """When to try again after the `failed_attempts`-th failure (at `now`):
    the backoff's wait, but never past the retry window, whose end is the
    last attempt; None once that window is over (the delivery has failed)."""
    if failed_attempts < 1:
        raise ValueError("a retry follows a failed attempt")
    deadline = first_attempt_at + RETRY_WINDOW
    if now >= deadline:
        return None
    wait = BACKOFF[min(failed_attempts, len(BACKOFF)) - 1]
    return min(now + wait, deadline)


def is_success(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


def url_problem(url: str, *, deployed: bool) -> str | None:
    """Why `url` cannot receive webhooks, or None. Deployed stages want HTTPS
    to a public host; elsewhere (the local stage, the tests) a receiver on
    this machine's loopback may also use plain HTTP. Names resolve to
    addresses only when sending: the sender checks them again."""
    if len(url) > MAX_URL_LENGTH:
        return f"url must be at most {MAX_URL_LENGTH} characters"
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return "url must be ASCII without spaces (internationalized host names in their xn-- form)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "url is not a valid URL"
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host or not parts.netloc:
        return "url must be an absolute https:// URL"
    if parts.username is not None or parts.password is not None:
        return "url must not carry credentials"
    if parts.fragment:
        return "url must not have a fragment"
    if port == 0:
        return "url has no valid port"
    loopback = host == "localhost" or _is_loopback(host)
    if not deployed and loopback:
        return None
    if parts.scheme != "https":
        return "url must use https"
    if host == "localhost" or host.endswith(_INTERNAL_SUFFIXES) or "." not in host.strip("[]"):
        return "url must name a public host"
    address = _address(host)
    if address is not None and not is_public_address(address):
        return "url must name a public host, not a private, loopback or link-local address"
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a receiver at `address` is on the internet: not private,
    loopback, link-local (the instance metadata service), multicast,
    reserved or unspecified, nor an IPv4 address mapped into IPv6."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return is_public_address(mapped)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    address = _address(host)
    return address is not None and address.is_loopback
