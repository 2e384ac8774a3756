"""Payment links: a signed, expiring address of the page where one
customer of one merchant saves a card (services/payment_page.py).

The merchant asks for a link (`POST /customers/{id}/payment-link`) and sends
it; a failed charge and the alerts put one on the invoice and in their
e-mails. Nothing is stored: the token is the page's only credential (see
domain/payment_links.py).
"""
from __future__ import annotations

from datetime import timedelta

from chalicelib import config
from chalicelib.clock import clock, isoformat
from chalicelib.domain.payment_links import PaymentLink, sign_link, verify_link
from chalicelib.store import customers as customer_store


def create_payment_link(merchant_id: str, customer_id: str) -> dict:
    """`{"url", "expires_at"}` for one of the merchant's customers (404 for
    anyone else's). Nothing is stored: any number of links may be live."""
    customer_store.get_customer(merchant_id, customer_id)
    now = clock().now().replace(microsecond=0)
    expires_at = now + timedelta(days=config.settings().payment_link_days)
    token = sign_link(merchant_id, customer_id, expires_at, _signing_key())
    return {"url": f"{config.settings().public_base_url}/pay/{token}", "expires_at": isoformat(expires_at)}


def open_link(token: str) -> PaymentLink:
    """The link behind a token: `InvalidLink` (400) or `ExpiredLink` (410) otherwise."""
    return verify_link(token, _signing_key(), clock().now())


def _signing_key() -> bytes:
    return config.secret("token_signing_key").encode()
