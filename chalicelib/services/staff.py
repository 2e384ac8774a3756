"""A merchant's staff and their console sessions.

Roles (API.md, "Back office"): an `owner` does everything, staff included;
`staff` serve customers (every write but the merchant's settings and its
staff); a `viewer` reads and changes nothing.

A session is opened by a sign-in that Cognito accepted (identity.py) for a
current member; its token is random, shown once (in the cookie), kept
hashed. Each session has its own CSRF token, which every form of the
console carries and every write checks.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from chalicelib import identity
from chalicelib.clock import clock, isoformat
from chalicelib.config import settings
from chalicelib.domain.errors import AuthenticationError, Forbidden, InvalidRequest
from chalicelib.store import staff as store

ROLES = ("owner", "staff", "viewer")
# What each role may do beyond reading.
WRITES = {"owner": {"serve", "manage"}, "staff": {"serve"}, "viewer": set()}


@dataclass(frozen=True)
class StaffSession:
    """Who a console request comes from."""

    merchant_id: str
    email: str
    role: str
    csrf_token: str
    token_hash: str

    @property
    def actor(self) -> str:
        return f"user:{self.email}"

    def may(self, action: str) -> bool:
        return action in WRITES.get(self.role, set())

    def require(self, action: str) -> None:
        if not self.may(action):
            raise Forbidden(f"the {self.role} role cannot do this")

    def check_csrf(self, presented: str | None) -> None:
        if not presented or not hmac.compare_digest(presented.encode(), self.csrf_token.encode()):
            raise Forbidden("this form has expired; reload the page and try again", code="csrf_failed")


def normalized_email(email: str) -> str:
    return email.strip().lower()


def add_member(merchant_id: str, email: str, role: str, password: str | None, *, actor: str) -> dict:
    """A new member: their Cognito account (with `password` on the local
    stage; in AWS an invitation e-mail), then their membership."""
    email = normalized_email(email)
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if password is not None and settings().is_deployed:
        raise InvalidRequest("a password is set by the member through the invitation e-mail, not by the API",
                             param="password")
    record = store.StaffUserRecord(*store.StaffUserRecord.key(merchant_id, email), merchant_id=merchant_id,
                                   email=email, role=role, created_at=isoformat(clock().now()), created_by=actor)
    store.add_member(record)
    try:
        identity.create_account(email, merchant_id, password)
    except Exception:
        # No membership without its account: the caller may simply retry.
        store.remove_member(merchant_id, email)
        raise
    return serialize(record)


def list_members(merchant_id: str) -> list[dict]:
    return [serialize(record) for record in store.members(merchant_id)]


def remove_member(merchant_id: str, email: str) -> None:
    record = store.remove_member(merchant_id, normalized_email(email))
    identity.delete_account(record.email)


def serialize(record: store.StaffUserRecord) -> dict:
    return {"object": "staff_user", "email": record.email, "role": record.role, "created_at": record.created_at}


# -- sessions -----------------------------------------------------------------------------


def sign_in(email: str, password: str) -> tuple[str, StaffSession]:
    """A new session (its cookie value and what it grants) for a member
    whose password Cognito accepts."""
    email = normalized_email(email)
    if not email or not password:
        raise AuthenticationError(identity.SIGN_IN_REFUSED, code="sign_in_refused")
    merchant_id = identity.sign_in(email, password)
    member = store.get_member(merchant_id, email)
    if member is None:
        raise AuthenticationError(identity.SIGN_IN_REFUSED, code="sign_in_refused")
    token = secrets.token_urlsafe(32)
    now = clock().now()
    ends = now + timedelta(hours=settings().console_session_hours)
    record = store.SessionRecord(*store.SessionRecord.key(merchant_id, _hash(token)), merchant_id=merchant_id,
                                 email=email, role=member.role, csrf_token=secrets.token_urlsafe(24),
                                 created_at=isoformat(now), expires_at=int(ends.timestamp()))
    store.open_session(record)
    return f"{merchant_id}.{token}", _session(record)


def session_for(cookie_value: str | None) -> StaffSession | None:
    """The live session a cookie stands for, or None (absent, forged, ended)."""
    merchant_id, _, token = (cookie_value or "").partition(".")
    if not merchant_id.startswith("mer_") or len(token) < 32 or len(cookie_value) > 200:
        return None
    record = store.get_session(merchant_id, _hash(token))
    if record is None or record.expires_at <= clock().now().timestamp():
        return None
    return _session(record)


def sign_out(session: StaffSession) -> None:
    store.close_session(session.merchant_id, session.token_hash)


def start_password_reset(email: str) -> None:
    identity.start_password_reset(normalized_email(email))


def finish_password_reset(email: str, code: str, password: str) -> None:
    if not code.strip():
        raise InvalidRequest("enter the code from the e-mail", param="code")
    identity.finish_password_reset(normalized_email(email), code.strip(), password)


def _session(record: store.SessionRecord) -> StaffSession:
    return StaffSession(record.merchant_id, record.email, record.role, record.csrf_token, record.sk)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
