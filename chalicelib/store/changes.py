"""What record of the billing table a stream record is about, for the
domain events (services/domain_events.py): the audited entities
(store/audit.py `entity_of`) and the records whose writes are news without
being audited: a subscription's history entries and `POST /usage` events.
Key layouts stay with their stores; this only reads them back."""
from __future__ import annotations

from pynamodb.models import Model

from chalicelib.store.audit import Entity, entity_of
from chalicelib.store.commissions import statement_of
from chalicelib.store.usage import event_pk


def changed_record(pk: str, sk: str) -> Entity | None:
    """The record a key stands for, as (merchant, kind, entity id), or None."""
    merchant_id, _, rest = pk.partition("#")
    if sk.startswith("history#") and rest.startswith("sub_") and "#" not in rest:
        return Entity(merchant_id, "subscription_history", rest)
    if sk == "usage_event" and pk.startswith(event_pk(merchant_id, "")):
        return Entity(merchant_id, "usage_event", pk.removeprefix(event_pk(merchant_id, "")))
    statement = statement_of(pk, sk)
    if statement is not None:  # store/commissions.py: a payee's monthly statement
        return Entity(statement[0], "statement", f"{statement[1]}#{statement[2]}")
    return entity_of(pk, sk)


def record_from_image(kind: str, image: dict) -> Model:
    """The store's record of `kind` from a stream image (DynamoDB's JSON)."""
    from chalicelib.store.credit_notes import CreditNoteRecord
    from chalicelib.store.customers import CustomerRecord
    from chalicelib.store.invoices import InvoiceRecord
    from chalicelib.store.subscriptions import HistoryRecord

    model = {"invoice": InvoiceRecord, "credit_note": CreditNoteRecord, "customer": CustomerRecord,
             "subscription_history": HistoryRecord}[kind]
    return model.from_raw_data(image)
