"""Payees (resellers and licensors), their API keys, and resellers' books.

- `{merchant_id}#payees` / `payee#{payee_id}`: the payee, with its rules as
  JSON text. All of a merchant's payees share one partition, so the
  accrual of an invoice reads them (the licensors, its customer's reseller)
  with one consistent Query; a merchant has tens of them, not millions.
- A reseller's API keys: the same lookup record as a merchant's keys
  (`key#<sha256>` / `api_key`, store/merchants.py) with `reseller_id` set,
  and prefix -> hash on the payee, so they are listed and revoked there.
- `{merchant_id}#{reseller_id}#book` / `customer#{customer_id}`: one record
  per customer of a reseller, written in the customer's own transaction
  (store/customers.create_customer): a reseller's key lists its customers
  with one consistent Query of its book, newest first.
"""
from __future__ import annotations

import json
import re

from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist

from chalicelib.domain.errors import NotFound
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, page, transaction
from chalicelib.store.merchants import ApiKeyRecord

PAYEE_ID = re.compile(r"^pye_[0-9a-z]{26}$")
KINDS = ("reseller", "licensor")


def payees_pk(merchant_id: str) -> str:
    return f"{merchant_id}#payees"


def book_pk(merchant_id: str, reseller_id: str) -> str:
    return f"{merchant_id}#{reseller_id}#book"


class PayeeRecord(AuditedRecord):
    merchant_id = UnicodeAttribute()
    payee_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    name = UnicodeAttribute()
    email = UnicodeAttribute()
    # JSON text: the rules as the API writes them (decimal strings).
    rules = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # prefix -> sha256 of the reseller's keys.
    api_keys = MapAttribute(default=dict)
    version = NumberAttribute(default=1)

    @staticmethod
    def key(merchant_id: str, payee_id: str) -> tuple[str, str]:
        return payees_pk(merchant_id), f"payee#{payee_id}"

    def rule_list(self) -> list[dict]:
        return json.loads(self.rules or "[]")

    def key_prefixes(self) -> list[str]:
        keys = self.api_keys.as_dict() if isinstance(self.api_keys, MapAttribute) else dict(self.api_keys or {})
        return sorted(keys)


class BookEntryRecord(BillingRecord):
    """One customer of a reseller."""

    customer_id = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, reseller_id: str, customer_id: str) -> tuple[str, str]:
        return book_pk(merchant_id, reseller_id), f"customer#{customer_id}"


def book_entry(merchant_id: str, reseller_id: str, customer_id: str) -> BookEntryRecord:
    return BookEntryRecord(*BookEntryRecord.key(merchant_id, reseller_id, customer_id), customer_id=customer_id)


def new_payee(merchant_id: str, payee_id: str, *, kind: str, name: str, email: str, rules: list[dict],
              created_at: str) -> PayeeRecord:
    return PayeeRecord(*PayeeRecord.key(merchant_id, payee_id), merchant_id=merchant_id, payee_id=payee_id,
                       kind=kind, name=name, email=email, rules=json.dumps(rules, separators=(",", ":")),
                       created_at=created_at)


def create_payee(record: PayeeRecord) -> None:
    record.save(condition=PayeeRecord.pk.does_not_exist())


def get_payee(merchant_id: str, payee_id: str) -> PayeeRecord:
    """The payee, or NotFound (also for another merchant's)."""
    if not isinstance(payee_id, str) or not PAYEE_ID.match(payee_id):
        raise NotFound(f"no payee {payee_id}")
    try:
        return PayeeRecord.get(*PayeeRecord.key(merchant_id, payee_id), consistent_read=True)
    except DoesNotExist:
        raise NotFound(f"no payee {payee_id}") from None


def list_payees(merchant_id: str, limit: int, cursor: str | None) -> tuple[list[PayeeRecord], str | None]:
    """A page of the merchant's payees, newest first."""
    start = decode_cursor(cursor, merchant_id)
    query = PayeeRecord.query(payees_pk(merchant_id), PayeeRecord.sk.startswith("payee#"),
                              scan_index_forward=False, limit=limit + 1, last_evaluated_key=start)
    return page(query, limit)


def all_payees(merchant_id: str) -> list[PayeeRecord]:
    """Every payee of the merchant (one consistent Query, paged by PynamoDB)."""
    return list(PayeeRecord.query(payees_pk(merchant_id), PayeeRecord.sk.startswith("payee#"),
                                  consistent_read=True))


def add_api_key(payee: PayeeRecord, key: ApiKeyRecord, key_hash: str) -> None:
    """A reseller's key: its lookup record and its prefix on the payee, together."""
    with transaction() as write:
        write.save(key, condition=ApiKeyRecord.pk.does_not_exist())
        write.update(payee, actions=[PayeeRecord.api_keys[key.prefix].set(key_hash)],
                     condition=PayeeRecord.pk.exists())


def remove_api_key(payee: PayeeRecord, prefix: str, key_hash: str) -> None:
    with transaction() as write:
        write.delete(ApiKeyRecord(*ApiKeyRecord.key(key_hash)))
        write.update(payee, actions=[PayeeRecord.api_keys[prefix].remove()])


def key_hash_of(payee: PayeeRecord, prefix: str) -> str | None:
    keys = payee.api_keys.as_dict() if isinstance(payee.api_keys, MapAttribute) else dict(payee.api_keys or {})
    return keys.get(prefix)


def book_page(merchant_id: str, reseller_id: str, limit: int,
              cursor: str | None) -> tuple[list[str], str | None]:
    """A page of the ids of a reseller's customers, newest first."""
    start = decode_cursor(cursor, merchant_id)
    query = BookEntryRecord.query(book_pk(merchant_id, reseller_id), BookEntryRecord.sk.startswith("customer#"),
                                  scan_index_forward=False, limit=limit + 1, last_evaluated_key=start,
                                  consistent_read=True)
    records, next_cursor = page(query, limit)
    return [record.customer_id for record in records], next_cursor
