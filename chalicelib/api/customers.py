"""/customers: create, read (the whole relationship), find, edit."""
from __future__ import annotations

from typing import Annotated

from chalice import Blueprint
from pydantic import AfterValidator, StringConstraints

from chalicelib.api.fields import STRICT, Currency, Email, Locale, Metadata, Name
from chalicelib.api.http import Call, endpoint, listing
from chalicelib.api.legal_fields import CUSTOMER_LEGAL_FIELDS, CustomerLegalFields
from chalicelib.domain.errors import InvalidRequest
from chalicelib.services import customers

blueprint = Blueprint(__name__)


def _country(value: str) -> str:
    import iso3166

    if value not in iso3166.countries_by_alpha2:
        raise ValueError("not an ISO 3166-1 alpha-2 country code (e.g. FR)")
    return value


Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CustomerFields(CustomerLegalFields):
    model_config = STRICT

    name: Name | None = None
    email: Email | None = None
    country: Country | None = None
    external_id: ExternalId | None = None
    locale: Locale | None = None
    tax_exempt: bool | None = None
    metadata: Metadata | None = None
    # The currency its new subscriptions bill in (an offer's currency_options).
    currency: Currency | None = None

    def changes(self) -> dict:
        """What the request sets; an explicit null clears external_id,
        locale, address or vat_number and is refused for the other fields."""
        changes = self.model_dump(exclude_unset=True)
        if changes.get("address") is not None:
            changes["address"] = self.address.model_dump(exclude_none=True)
        for name, value in changes.items():
            if value is None and name not in ("external_id", "locale", "currency", *CUSTOMER_LEGAL_FIELDS):
                raise InvalidRequest(f"{name}: cannot be null", param=name)
        return changes


class NewCustomer(CustomerFields):
    name: Name
    email: Email
    country: Country
    # One of the merchant's resellers (POST /payees); set when the customer
    # is made, by a reseller's own key for its customers.
    reseller_id: Annotated[str, StringConstraints(pattern=r"^pye_[0-9a-z]{26}$")] | None = None


@endpoint(blueprint, "/customers", methods=("POST",), status=201, response="Customer", resellers=True)
def create_customer(call: Call):
    fields = call.body(NewCustomer).model_dump(exclude_none=True)
    return customers.create_customer(call.merchant_id, fields, reseller_id=call.reseller_id)


@endpoint(blueprint, "/customers", response="CustomerList", resellers=True)
def list_customers(call: Call):
    items, next_cursor = customers.list_customers(
        call.merchant_id,
        email=call.query("email"),
        external_id=call.query("external_id"),
        limit=call.limit(),
        cursor=call.query("cursor"),
        reseller_id=call.reseller_id,
    )
    return listing(items, next_cursor)


@endpoint(blueprint, "/customers/{customer_id}", response="CustomerRelationship", resellers=True)
def get_customer(call: Call, customer_id: str):
    return customers.get_customer(call.merchant_id, customer_id, reseller_id=call.reseller_id)


@endpoint(blueprint, "/customers/{customer_id}", methods=("PATCH",), response="Customer")
def update_customer(call: Call, customer_id: str):
    return customers.update_customer(call.merchant_id, customer_id, call.body(CustomerFields).changes())
