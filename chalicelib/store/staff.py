"""A merchant's staff (who may use the console, with which role) and their
console sessions.

- `{merchant}#staff` / `user#{email}`: a member and their role. The
  account's password is Cognito's (chalicelib/identity.py); membership is
  here, so removing a member is one delete that the next request sees.
- `{merchant}#session` / `{sha256 of the token}`: a signed-in browser. The
  cookie carries the merchant and the token; only the token's hash is kept,
  so a copy of the table opens no session. DynamoDB's TTL (`expires_at`)
  removes a session after it ends; reads check the end themselves, as TTL
  deletes late.
"""
from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError

from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.store.base import AuditedRecord, BillingRecord
from chalicelib.store.errors import is_condition_failure


def staff_pk(merchant_id: str) -> str:
    return f"{merchant_id}#staff"


def session_pk(merchant_id: str) -> str:
    return f"{merchant_id}#session"


class StaffUserRecord(AuditedRecord):
    merchant_id = UnicodeAttribute()
    email = UnicodeAttribute()
    role = UnicodeAttribute()
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute(null=True)

    @staticmethod
    def key(merchant_id: str, email: str) -> tuple[str, str]:
        return staff_pk(merchant_id), f"user#{email}"


class SessionRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    email = UnicodeAttribute()
    role = UnicodeAttribute()
    csrf_token = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # Unix seconds: the end of the session, and the table's TTL attribute.
    expires_at = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, token_hash: str) -> tuple[str, str]:
        return session_pk(merchant_id), token_hash


def add_member(record: StaffUserRecord) -> None:
    try:
        record.save(condition=StaffUserRecord.pk.does_not_exist())
    except PutError as error:
        if is_condition_failure(error):
            raise Conflict(f"{record.email} is already a member of this merchant's staff", code="user_exists") from None
        raise


def get_member(merchant_id: str, email: str) -> StaffUserRecord | None:
    try:
        return StaffUserRecord.get(*StaffUserRecord.key(merchant_id, email), consistent_read=True)
    except DoesNotExist:
        return None


def members(merchant_id: str) -> list[StaffUserRecord]:
    return list(StaffUserRecord.query(staff_pk(merchant_id), StaffUserRecord.sk.startswith("user#")))


def remove_member(merchant_id: str, email: str) -> StaffUserRecord:
    """The member removed, and every session they had."""
    record = get_member(merchant_id, email)
    if record is None:
        raise NotFound(f"no staff member {email}")
    try:
        record.delete(condition=StaffUserRecord.pk.exists())
    except DeleteError as error:
        if not is_condition_failure(error):
            raise
    for session in SessionRecord.query(session_pk(merchant_id), filter_condition=SessionRecord.email == email):
        session.delete()
    return record


def open_session(record: SessionRecord) -> None:
    record.save(condition=SessionRecord.pk.does_not_exist())


def get_session(merchant_id: str, token_hash: str) -> SessionRecord | None:
    try:
        return SessionRecord.get(*SessionRecord.key(merchant_id, token_hash))
    except DoesNotExist:
        return None


def close_session(merchant_id: str, token_hash: str) -> None:
    SessionRecord(*SessionRecord.key(merchant_id, token_hash)).delete()

