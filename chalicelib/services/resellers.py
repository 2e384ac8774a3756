"""What a reseller's API key sees: its own customers and their subscriptions.

A reseller (a payee of kind `reseller`, services/payees.py) has keys of the
merchant's kind that carry its id (`call.reseller_id`). Such a key creates
customers that are its own (`reseller_id` set to it), reads and lists only
customers whose `reseller_id` is its own, and creates, reads and lists only
their subscriptions; anything else is `404`, as another merchant's object
is (no existence oracle). Every other merchant route refuses the key
(`403`, api/http.py). A merchant's own key sees everything, and may give a
customer any reseller of its own.
"""
from __future__ import annotations

from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.store import customers as customer_store
from chalicelib.store import payees as payee_store


def customer_fields(merchant_id: str, fields: dict, key_reseller: str | None) -> dict:
    """The fields of a new customer with its reseller checked: a reseller's
    key makes its own customers; a merchant's names an existing reseller of
    its own, or none."""
    reseller_id = fields.get("reseller_id")
    if key_reseller is not None:
        if reseller_id is not None and reseller_id != key_reseller:
            raise InvalidRequest("reseller_id: a reseller's key makes customers of its own only",
                                 param="reseller_id")
        return {**fields, "reseller_id": key_reseller}
    if reseller_id is not None:
        try:
            payee = payee_store.get_payee(merchant_id, reseller_id)
        except NotFound:
            payee = None
        if payee is None or payee.kind != "reseller":
            raise InvalidRequest(f"reseller_id: no reseller {reseller_id}", param="reseller_id")
    return fields


def visible(record, key_reseller: str | None) -> bool:
    """Whether a customer record is seen by the key."""
    return key_reseller is None or getattr(record, "reseller_id", None) == key_reseller


def require_customer(merchant_id: str, customer_id: str, key_reseller: str | None) -> None:
    """NotFound unless a reseller's key names one of its own customers (a merchant's key: no check)."""
    if key_reseller is None:
        return
    record = customer_store.get_customer(merchant_id, customer_id)
    if not visible(record, key_reseller):
        raise NotFound(f"no customer {customer_id}")


def require_subscription(merchant_id: str, subscription: dict, key_reseller: str | None) -> dict:
    """The subscription if the key sees its customer, else NotFound."""
    if key_reseller is not None:
        try:
            require_customer(merchant_id, subscription["customer_id"], key_reseller)
        except NotFound:
            raise NotFound(f"no subscription {subscription['id']}") from None
    return subscription


def list_subscriptions_customer(customer_id: str | None, merchant_id: str, key_reseller: str | None) -> None:
    """A reseller's key lists the subscriptions of one of its customers at a time."""
    if key_reseller is None:
        return
    if customer_id is None:
        raise InvalidRequest("customer_id: a reseller's key lists the subscriptions of one of its customers",
                             param="customer_id")
    require_customer(merchant_id, customer_id, key_reseller)


def book(merchant_id: str, reseller_id: str, limit: int, cursor: str | None) -> tuple[list, str | None]:
    """A page of a reseller's customers (records), newest first."""
    ids, next_cursor = payee_store.book_page(merchant_id, reseller_id, limit, cursor)
    return customer_store.get_customers(merchant_id, ids), next_cursor
