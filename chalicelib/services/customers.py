"""Customers: create, read (the whole relationship on one page), find, edit."""
from __future__ import annotations

import importlib

from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import InvalidRequest, NotFound
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
    ("devices", "chalicelib.services.devices:customer_devices"),
    ("open_alerts", "chalicelib.services.alerts:open_alerts"),
    ("payments", "chalicelib.services.offline_payments:customer_payments"),
    ("credit_notes", "chalicelib.services.credit_notes:customer_credit_notes"),
)


def create_customer(merchant_id: str, fields: dict, *, customer_id: str | None = None,
                    reseller_id: str | None = None) -> dict:
    """`customer_id`: an id reserved beforehand (a checkout's); `reseller_id`:
    a reseller's key's (services/resellers.py)."""
    from chalicelib.services import resellers

    fields = resellers.customer_fields(merchant_id, fields, reseller_id)
    customer_id = customer_id or new_id("cus")
    record = store.new_customer_record(
        merchant_id, customer_id, isoformat(clock().now()),
        **{"tax_exempt": False, "metadata": {}, **fields},
    )
    store.create_customer(record)
    customer = serialize(record)
    return customer


def get_customer(merchant_id: str, customer_id: str, reseller_id: str | None = None) -> dict:
    """The customer with everything it has: API.md's one-page relationship
    (a reseller's key: only its own customers)."""
    from chalicelib.services import resellers

    record = store.get_customer(merchant_id, customer_id)
    if not resellers.visible(record, reseller_id):
        raise NotFound(f"no customer {customer_id}")
    page = serialize(record)
    for field, source in PAGE_SECTIONS:
        page[field] = _section(source)(merchant_id, customer_id) if source else []
    page["currency"] = _billing_currency(merchant_id, page)
    page["credit_balance"] = format_amount(record.credit_balance(page["currency"]), page["currency"])
    return page


def customer_details(merchant_id: str, customer_id: str) -> dict:
    """The customer alone, as `PATCH /customers/{id}` answers it (one read)."""
    return serialize(store.get_customer(merchant_id, customer_id))


def _billing_currency(merchant_id: str, page: dict) -> str:
    """The currency the customer is billed in: its latest subscription's,
    else its latest invoice's, else the merchant's default."""
    for section in ("subscriptions", "latest_invoices"):
        for item in page.get(section) or []:
            if item.get("currency"):
                return item["currency"]
    if page.get("currency"):
        return page["currency"]
    from chalicelib.store import merchants as merchant_store

    return merchant_store.get_merchant(merchant_id).default_currency


def list_customers(
    merchant_id: str, *, email: str | None = None, external_id: str | None = None, limit: int = 20,
    cursor: str | None = None, reseller_id: str | None = None,
) -> tuple[list[dict], str | None]:
    """The merchant's customers, newest first; by e-mail (case-insensitive)
    through its index, by external id through its uniqueness record; both
    given, the customer must match both. Never a table scan. A reseller's
    key (`reseller_id`) lists its book, and finds only its own customers."""
    if reseller_id is not None:
        from chalicelib.services import resellers

        if email is None and external_id is None:
            records, next_cursor = resellers.book(merchant_id, reseller_id, limit, cursor)
            return [serialize(record) for record in records], next_cursor
        found, next_cursor = list_customers(merchant_id, email=email, external_id=external_id, limit=limit,
                                            cursor=cursor)
        return [c for c in found if c["reseller_id"] == reseller_id], next_cursor
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


# A search text longer than an e-mail address can be finds nothing anyway.
MAX_SEARCH_CHARS = 320


def search_customers(merchant_id: str, q: str, *, limit: int = 20,
                     cursor: str | None = None) -> tuple[list[dict], str | None]:
    """The customers `q` finds, never by a scan: with an "@", those with
    that e-mail (case-insensitive, its index); otherwise the one whose
    external id is exactly `q` (its uniqueness record, on the first page),
    then those whose name has words starting with each word of `q`, accents
    and case aside (the name records: "dup" finds "Jean Dupont")."""
    q = (q or "").strip()
    if len(q) > MAX_SEARCH_CHARS:
        raise InvalidRequest(f"q: at most {MAX_SEARCH_CHARS} characters", param="q")
    if not q:
        return list_customers(merchant_id, limit=limit, cursor=cursor)
    if "@" in q:
        records, next_cursor = store.customers_by_email(merchant_id, q, limit, cursor)
        return [serialize(record) for record in records], next_cursor
    found = []
    if not cursor:
        holder = store.customer_by_external_id(merchant_id, q)
        found = [holder] if holder is not None else []
    ids, next_cursor = store.customer_ids_by_name(merchant_id, store.name_tokens(q), limit, cursor)
    named = store.get_customers(merchant_id, [i for i in ids if all(i != f.customer_id for f in found)])
    return [serialize(record) for record in found + named], next_cursor


def customers_with_subscription_status(merchant_id: str, status: str, *, limit: int = 20,
                                       cursor: str | None = None) -> tuple[list[dict], str | None]:
    """The customers of a page of the subscriptions in `status` (their
    by-status index), read in one BatchGetItem; a customer with several
    such subscriptions on the page is there once."""
    from chalicelib.services import subscriptions

    page_of, next_cursor = subscriptions.list_subscriptions(merchant_id, status=status, limit=limit, cursor=cursor)
    records = store.get_customers(merchant_id, [s["customer_id"] for s in page_of])
    return [serialize(record) for record in records], next_cursor


def customer_names(merchant_id: str, customer_ids) -> dict[str, str]:
    """The names of the merchant's customers of these ids (one BatchGetItem
    per 100): a list of invoices names their customers without a read each."""
    return {record.customer_id: record.name for record in store.get_customers(merchant_id, customer_ids)}


def update_customer(merchant_id: str, customer_id: str, changes: dict) -> dict:
    record = store.get_customer(merchant_id, customer_id, consistent=True)
    if changes:
        record = store.update_customer(record, changes, isoformat(clock().now()))
    return serialize(record)


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
        "address": record.address_dict(),
        "vat_number": record.vat_number,
        "metadata": record.metadata_dict(),
        **({"currency": record.currency} if record.currency else {}),
        "default_payment_method": None
        if card is None
        else {key: card[key] for key in ("brand", "last4", "exp_month", "exp_year")},
        "credit_balances": record.credit_balance_table(),
        "reseller_id": record.reseller_id,
        "created_at": record.created_at,
    }


def _section(source: str):
    module, _, function = source.partition(":")
    return getattr(importlib.import_module(module), function)
