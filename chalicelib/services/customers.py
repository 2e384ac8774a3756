"""Customers: create, read (the whole relationship on one page), find, edit."""
from __future__ import annotations

import importlib

from chalicelib import notify
from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import format_amount
from chalicelib.ids import new_id
from chalicelib.store import customers as store

# The customer page: each section is (field, "module:function") where the
# function takes (merchant_id, customer_id) and returns the section's items
# as the API shows them, newest first, reading the customer's item
# collection (store.customers.related: one Query of gsi1 per section). A
# section whose feature does not exist yet is None and shows an empty list;
# that feature plugs its function in here.
PAGE_SECTIONS: tuple[tuple[str, str | None], ...] = (
    ("subscriptions", "chalicelib.services.subscriptions:customer_subscriptions"),
    ("latest_invoices", "chalicelib.services.invoices:latest_invoices"),
    ("devices", None),
    ("open_alerts", "chalicelib.services.alerts:open_alerts"),
    ("payments", "chalicelib.services.offline_payments:customer_payments"),
    ("credit_notes", "chalicelib.services.credit_notes:customer_credit_notes"),
)


def create_customer(merchant_id: str, fields: dict) -> dict:
    customer_id = new_id("cus")
    record = store.new_customer_record(
        merchant_id, customer_id, isoformat(clock().now()),
        **{"tax_exempt": False, "metadata": {}, **fields},
    )
    store.create_customer(record)
    customer = serialize(record)
    notify.publish_event("customer.created", {"customer": customer}, merchant_id)
    return customer


def get_customer(merchant_id: str, customer_id: str) -> dict:
    """The customer with everything it has: API.md's one-page relationship."""
    record = store.get_customer(merchant_id, customer_id)
    page = serialize(record)
    for field, source in PAGE_SECTIONS:
        page[field] = _section(source)(merchant_id, customer_id) if source else []
    page["currency"] = _billing_currency(merchant_id, page)
    page["credit_balance"] = format_amount(record.credit_balance(page["currency"]), page["currency"])
    return page


def _billing_currency(merchant_id: str, page: dict) -> str:
    """The currency the customer is billed in: its latest subscription's,
    else its latest invoice's, else the merchant's default."""
    for section in ("subscriptions", "latest_invoices"):
        for item in page.get(section) or []:
            if item.get("currency"):
                return item["currency"]
    from chalicelib.store import merchants as merchant_store

    return merchant_store.get_merchant(merchant_id).default_currency


def list_customers(
    merchant_id: str, *, email: str | None = None, external_id: str | None = None, limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[dict], str | None]:
    """The merchant's customers, newest first; by e-mail (case-insensitive)
    through its index, by external id through its uniqueness record; both
    given, the customer must match both. Never a table scan."""
    if external_id is not None:
        if cursor:
            raise InvalidRequest("an external_id matches one customer: there is no next page", param="cursor")
        record = store.customer_by_external_id(merchant_id, external_id)
        if record is None or (email is not None and record.email.lower() != email.lower()):
            return [], None
        return [serialize(record)], None
    if email is not None:
        records, next_cursor = store.customers_by_email(merchant_id, email, limit, cursor)
    else:
        records, next_cursor = store.list_customers(merchant_id, limit, cursor)
    return [serialize(record) for record in records], next_cursor


def update_customer(merchant_id: str, customer_id: str, changes: dict) -> dict:
    record = store.get_customer(merchant_id, customer_id, consistent=True)
    before = serialize(record)
    if changes:
        record = store.update_customer(record, changes, isoformat(clock().now()))
    customer = serialize(record)
    if customer != before:
        changed = {key for key in customer if customer[key] != before[key]}
        notify.publish_event(
            "customer.updated",
            {"customer": customer, "previous": {key: before[key] for key in sorted(changed)}},
            merchant_id,
        )
    return customer


def serialize(record: store.CustomerRecord) -> dict:
    card = record.card()
    return {
        "id": record.customer_id,
        "object": "customer",
        "name": record.name,
        "email": record.email,
        "country": record.country,
        "external_id": record.external_id,
        "locale": record.locale,
        "tax_exempt": bool(record.tax_exempt),
        "metadata": record.metadata_dict(),
        "default_payment_method": None
        if card is None
        else {key: card[key] for key in ("brand", "last4", "exp_month", "exp_year")},
        "credit_balances": record.credit_balance_table(),
        "created_at": record.created_at,
    }


def _section(source: str):
    module, _, function = source.partition(":")
    return getattr(importlib.import_module(module), function)
