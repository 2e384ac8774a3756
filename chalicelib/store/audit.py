"""The audit trail's entries, in the billing table.

- `{merchant}#audit#{entity_id}` / `{at}#{sequence number}`: one change of
  one entity (services/audit.py writes it from the table's stream), oldest
  first in the partition, read newest first. The key is the stream
  record's own (its time stamp and sequence number), so a redelivered
  record finds its entry there and writes nothing.
- The same item is in its customer's item collection (gsi1
  `{merchant}#{customer_id}` / `audit#{at}#{sequence number}`) when the
  entity belongs to a customer (the customer itself, its subscriptions,
  invoices, credit notes, devices): the customer's timeline, without a
  second item.

Which records are audited, and which entity each key stands for, is said
once here (`entity_of`), beside the key layouts of the store.
"""
from __future__ import annotations

from dataclasses import dataclass

from pynamodb.attributes import UnicodeAttribute
from pynamodb.exceptions import PutError

from chalicelib.domain.errors import InvalidRequest
from chalicelib.store.base import BillingRecord, decode_cursor, page
from chalicelib.store.customers import CustomerCollection, collection_pk, collection_sk, related
from chalicelib.store.errors import is_condition_failure

TIMELINE_KIND = "audit"

# The sort key of an audited record -> its entity type; the entity is the
# partition key after the merchant (`{merchant}#{entity_id}`).
ENTITY_SKS = {
    "customer": "customer",
    "subscription": "subscription",
    "offer": "offer",
    "invoice": "invoice",
    "credit_note": "credit_note",
}
# Sequence numbers of DynamoDB streams have up to 40 digits: padded, they
# sort as numbers.
SEQUENCE_DIGITS = 40


@dataclass(frozen=True)
class Entity:
    merchant_id: str
    entity_type: str
    entity_id: str


def entity_of(pk: str, sk: str) -> Entity | None:
    """The audited entity a record of the billing table belongs to, or None
    when the record is not audited (usage, counters, idempotency, report
    aggregates, the due index, sessions, ... and the entries themselves)."""
    merchant_id, _, rest = pk.partition("#")
    if not merchant_id.startswith("mer_") or not rest:
        return None
    if sk == "merchant" and rest == "merchant":  # store/merchants.py: its settings and its API keys
        return Entity(merchant_id, "merchant", merchant_id)
    if sk == "device" and rest.startswith("dev#"):  # store/devices.py: its attachment
        return Entity(merchant_id, "device", rest.removeprefix("dev#"))
    if sk.startswith("version#") and rest.startswith("off_"):  # store/offers.py
        return Entity(merchant_id, "offer_version", rest)
    if sk.startswith("user#") and rest == "staff":  # store/staff.py: a member and their role
        return Entity(merchant_id, "staff_user", sk.removeprefix("user#"))
    if sk in ENTITY_SKS and "#" not in rest:
        return Entity(merchant_id, ENTITY_SKS[sk], rest)
    return None


class AuditEntryRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    entry_id = UnicodeAttribute()
    entity_type = UnicodeAttribute()
    entity_id = UnicodeAttribute()
    customer_id = UnicodeAttribute(null=True)
    action = UnicodeAttribute()
    actor = UnicodeAttribute()
    at = UnicodeAttribute()
    # JSON of the attributes that changed: their values before and after.
    before = UnicodeAttribute()
    after = UnicodeAttribute()
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    customer_collection = CustomerCollection()

    @staticmethod
    def key(merchant_id: str, entity_id: str, at: str, sequence_number: str) -> tuple[str, str]:
        return history_pk(merchant_id, entity_id), entry_sk(at, sequence_number)


def history_pk(merchant_id: str, entity_id: str) -> str:
    return f"{merchant_id}#audit#{entity_id}"


def entry_sk(at: str, sequence_number: str) -> str:
    return f"{at}#{sequence_number.zfill(SEQUENCE_DIGITS)}"


def record_entry(entry: AuditEntryRecord) -> bool:
    """Write an entry unless it is there already (the same stream record
    delivered again). True when it was written."""
    if entry.customer_id:
        entry.gsi1pk = collection_pk(entry.merchant_id, entry.customer_id)
        entry.gsi1sk = collection_sk(TIMELINE_KIND, entry.sk)
    try:
        entry.save(condition=AuditEntryRecord.pk.does_not_exist())
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def entity_history(merchant_id: str, entity_id: str, *, limit: int, cursor: str | None = None,
                   customer_id: str | None = None) -> tuple[list[AuditEntryRecord], str | None]:
    """A page of an entity's entries, newest first (only those of
    `customer_id`'s, when given)."""
    partition = history_pk(merchant_id, entity_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and (set(start) != {"pk", "sk"} or start["pk"].get("S") != partition):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = AuditEntryRecord.query(
        partition,
        filter_condition=None if customer_id is None else AuditEntryRecord.customer_id == customer_id,
        scan_index_forward=False,
        limit=limit + 1,
        last_evaluated_key=start,
    )
    return page(query, limit)


def customer_timeline(merchant_id: str, customer_id: str, *, limit: int,
                      cursor: str | None = None) -> tuple[list[AuditEntryRecord], str | None]:
    """A page of the entries of a customer and of everything it has, newest first."""
    return related(AuditEntryRecord, merchant_id, customer_id, TIMELINE_KIND, limit=limit, cursor=cursor)
