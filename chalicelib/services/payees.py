"""Payees: the merchant's resellers and licensors, their rules, and the API
keys of resellers (services/resellers.py says what such a key sees).

A payee's rules are checked by the API's model (api/payees.py) and fixed
once it is created: accruals of past invoices and their reversals are then
computed from the same rules whenever an event comes (services/commissions.py).
"""
from __future__ import annotations

from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import InvalidRequest
from chalicelib.ids import new_id
from chalicelib.store import payees as store


def create_payee(merchant_id: str, fields: dict) -> dict:
    record = store.new_payee(merchant_id, new_id("pye"), kind=fields["kind"], name=fields["name"],
                             email=fields["email"], rules=fields["rules"], created_at=isoformat(clock().now()))
    store.create_payee(record)
    return serialize(record)


def get_payee(merchant_id: str, payee_id: str) -> dict:
    return serialize(store.get_payee(merchant_id, payee_id))


def list_payees(merchant_id: str, *, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    records, next_cursor = store.list_payees(merchant_id, limit, cursor)
    return [serialize(record) for record in records], next_cursor


def create_reseller_key(merchant_id: str, payee_id: str) -> dict:
    """A new API key of a reseller, shown once (stored hashed, as a merchant's)."""
    from chalicelib.services import merchants

    payee = store.get_payee(merchant_id, payee_id)
    if payee.kind != "reseller":
        raise InvalidRequest("only a reseller has API keys; this payee is a licensor", param="payee_id")
    api_key, key_record = merchants.new_reseller_key(merchant_id, payee_id)
    store.add_api_key(payee, key_record, merchants.hash_key(api_key))
    return {"prefix": key_record.prefix, "api_key": api_key, "reseller_id": payee_id,
            "created_at": key_record.created_at}


def revoke_reseller_key(merchant_id: str, payee_id: str, prefix: str) -> dict:
    """Revoke a reseller's key by its prefix: refused at once here, within a
    minute by every warm container (services/merchants.py, KEY_CACHE_SECONDS)."""
    from chalicelib.domain.errors import NotFound
    from chalicelib.services import merchants

    payee = store.get_payee(merchant_id, payee_id)
    key_hash = store.key_hash_of(payee, prefix)
    if key_hash is None:
        raise NotFound(f"no API key with prefix {prefix}")
    store.remove_api_key(payee, prefix, key_hash)
    merchants.forget_key(key_hash)
    return {"prefix": prefix, "deleted": True}


def serialize(record: store.PayeeRecord) -> dict:
    return {
        "id": record.payee_id,
        "object": "payee",
        "kind": record.kind,
        "name": record.name,
        "email": record.email,
        "rules": record.rule_list(),
        "api_keys": [{"prefix": prefix} for prefix in record.key_prefixes()],
        "created_at": record.created_at,
    }
