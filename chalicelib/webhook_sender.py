"""Outbound webhook HTTP, the one way out to merchants' receivers, as
chalicelib.payments is the one way to Stripe.

One POST per attempt with the standard library (http.client): no redirect
is followed (a 3xx is a failed attempt), the whole attempt is bounded by
`TIMEOUT_SECONDS` per socket operation, and nothing of the answer but its
status is read (at most `MAX_ANSWER_BYTES` are drained). On a deployed
stage the host's addresses are resolved here and every one must be public
(domain.webhooks.is_public_address), and the connection goes to the
address that was checked, so a name cannot point elsewhere between the
check and the connection (DNS rebinding); TLS is still verified against
the host name.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from chalicelib.domain.webhooks import SIGNATURE_HEADER, is_public_address, signature_header

TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 4096
USER_AGENT = "billing-webhooks/1.0"


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: the receiver's status code, or the error that
    kept it from answering (`timeout`, `connection_refused`, ...)."""

    status_code: int | None
    error: str | None
    duration_ms: int


class RefusedDestination(Exception):
    """The URL resolves to an address a deployed stage never sends to."""


def post(url: str, body: str, *, secret: str, public_only: bool, timeout: float | None = None) -> Outcome:
    """POST `body` (JSON) to `url`, signed with `secret` (`Billing-Signature`,
    its `t` the moment of sending by the wall clock, which is what the
    receiver's tolerance compares with its own, even on a local stage whose
    clock was moved). Never raises for what the receiver or the network
    does: that is the attempt's outcome."""
    started = time.monotonic()
    timeout = timeout or TIMEOUT_SECONDS
    headers = {SIGNATURE_HEADER: signature_header(secret, int(time.time()), body)}

    def outcome(status_code: int | None = None, error: str | None = None) -> Outcome:
        return Outcome(status_code, error, int((time.monotonic() - started) * 1000))

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    try:
        address = _address_for(host, port, public_only)
        connection = _connection(parts.scheme, host, address, port, timeout)
        try:
            connection.request("POST", target, body=body.encode(), headers={
                "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT, **headers})
            answer = connection.getresponse()
            answer.read(MAX_ANSWER_BYTES)
            return outcome(answer.status)
        finally:
            connection.close()
    except RefusedDestination as error:
        return outcome(error=f"refused_destination: {error}")
    except (socket.timeout, TimeoutError):
        return outcome(error="timeout")
    except ConnectionRefusedError:
        return outcome(error="connection_refused")
    except ssl.SSLError as error:
        return outcome(error=f"tls_error: {error.reason or type(error).__name__}")
    except socket.gaierror:
        return outcome(error="dns_error")
    except (OSError, http.client.HTTPException) as error:
        return outcome(error=f"connection_error: {type(error).__name__}")
    except ValueError:  # a host or path the network libraries cannot encode
        return outcome(error="invalid_url")


def _address_for(host: str, port: int, public_only: bool) -> str:
    """The address to connect to: the host's first, each one checked."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise socket.gaierror(f"no address for {host}")
    if public_only:
        for address in addresses:
            if not is_public_address(ipaddress.ip_address(address.split("%", 1)[0])):
                raise RefusedDestination(f"{host} resolves to a non-public address")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, TLS verified against the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _connection(scheme: str, host: str, address: str, port: int, timeout: float) -> http.client.HTTPConnection:
    kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    return kind(host, address, port, timeout)
