"""/admin/merchants (operator) and /merchant (the calling merchant)."""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint
from pydantic import AfterValidator, Field, StringConstraints, model_validator

from chalicelib.api.fields import STRICT, CountryCode, Currency, Email, Locale, Name, Password, Percent, TimeZone
from chalicelib.api.http import Call, endpoint
from chalicelib.api.legal_fields import MERCHANT_LEGAL_FIELDS, MerchantLegalFields, legal_changes
from chalicelib.domain.ledger import ACCOUNT_NUMBER, DEFAULT_ACCOUNTS
from chalicelib.domain.whole_numbers import count_field
from chalicelib.services import merchants

blueprint = Blueprint(__name__)

InvoicePrefix = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,10}$")]
AccountNumber = Annotated[str, StringConstraints(pattern=ACCOUNT_NUMBER)]
AccountRole = Literal[tuple(DEFAULT_ACCOUNTS)]
# The account number of roles of the accounting exports (domain/ledger.py);
# a role not given keeps its number.
Accounts = Annotated[dict[AccountRole, AccountNumber], Field(max_length=len(DEFAULT_ACCOUNTS))]
RetryDays = Annotated[list[count_field(1, 60)], Field(max_length=10)]


def _positive_rate(value: str) -> str:
    if not value.strip("0."):
        raise ValueError("a rate is greater than 0")
    return value


# One unit of a currency in the merchant's default_currency ("0.92"): > 0, up to 10 decimals.
FxRate = Annotated[str, StringConstraints(pattern=r"^\d{1,9}(\.\d{1,10})?$"), AfterValidator(_positive_rate)]


class MerchantFields(MerchantLegalFields):
    model_config = STRICT

    name: Name | None = None
    default_currency: Currency | None = None
    alert_emails: Annotated[list[Email], Field(max_length=20)] | None = None
    tax_rates: Annotated[dict[CountryCode, Percent], Field(max_length=300)] | None = None
    accounts: Accounts | None = None
    invoice_prefix: InvoicePrefix | None = None
    dunning_retry_days: RetryDays | None = None
    locale: Locale | None = None
    timezone: TimeZone | None = None
    price_lists: Annotated[dict[CountryCode, Currency], Field(max_length=300)] | None = None
    fx_rates: Annotated[dict[Currency, FxRate], Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _retry_days_ascending(self):
        days = self.dunning_retry_days or []
        if any(later <= earlier for earlier, later in zip(days, days[1:])):
            raise ValueError("dunning_retry_days must be strictly ascending")
        return self

    def changes(self) -> dict:
        """What the request sets (a null leaves a setting as it is, and
        clears a legal field)."""
        return {**self.model_dump(exclude_unset=True, exclude_none=True),
                **legal_changes(self, MERCHANT_LEGAL_FIELDS)}


class NewMerchant(MerchantFields):
    name: Name
    default_currency: Currency
    # The first console user, an owner (the password only on the local stage).
    owner_email: Email | None = None
    owner_password: Password | None = None

    @model_validator(mode="after")
    def _password_with_email(self):
        if self.owner_password is not None and self.owner_email is None:
            raise ValueError("owner_password needs owner_email")
        return self


@endpoint(blueprint, "/admin/merchants", methods=("POST",), auth="operator", status=201, response="MerchantWithKey")
def create_merchant(call: Call):
    body = call.body(NewMerchant)
    owner = (body.owner_email, body.owner_password) if body.owner_email else None
    return merchants.create_merchant(body.model_dump(exclude_unset=True, exclude_none=True,
                                                     exclude={"owner_email", "owner_password"}), owner)


@endpoint(blueprint, "/merchant", response="Merchant")
def get_merchant(call: Call):
    return merchants.get_merchant(call.merchant_id)


@endpoint(blueprint, "/merchant", methods=("PATCH",), response="Merchant")
def update_merchant(call: Call):
    return merchants.update_merchant(call.merchant_id, call.body(MerchantFields).changes())


@endpoint(blueprint, "/merchant/api-keys", methods=("POST",), status=201, response="ApiKey")
def create_api_key(call: Call):
    return merchants.create_api_key(call.merchant_id)


@endpoint(blueprint, "/merchant/api-keys/{prefix}", methods=("DELETE",), response="RevokedKey")
def revoke_api_key(call: Call, prefix: str):
    return merchants.revoke_api_key(call.merchant_id, prefix)
