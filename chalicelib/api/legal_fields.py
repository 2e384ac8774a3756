"""The legal identity fields a merchant and a customer take (docs/api.md,
"Legal invoices"): an address of Stripe's shape, a SIREN, a VAT number,
checked field by field (chalicelib/domain/legal.py); a 400 names the field
(`address.postal_code`, `vat_number`)."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, StringConstraints, ValidationInfo, field_validator

from chalicelib.api.fields import STRICT


def _country(value: str) -> str:
    import iso3166

    if value not in iso3166.countries_by_alpha2:
        raise ValueError("not an ISO 3166-1 alpha-2 country code (e.g. FR)")
    return value


# The checks (chalicelib/domain/legal.py) are imported by the first request
# that sends such a field, not at every cold start.
def _siren(value: str) -> str:
    from chalicelib.domain import legal

    return legal.normalize_siren(value)


def _vat_number(value: str) -> str:
    from chalicelib.domain import legal

    return legal.normalize_vat_number(value)


def _amount(value: str) -> str:
    if not re.fullmatch(r"\d{1,15}(\.\d{1,2})?", value):
        raise ValueError("a decimal string of at most 2 decimals, e.g. \"10000.00\"")
    return value


Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]
AddressLine = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Siren = Annotated[str, StringConstraints(max_length=20), AfterValidator(_siren)]
VatNumber = Annotated[str, StringConstraints(max_length=30), AfterValidator(_vat_number)]
CompanyId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
LegalText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LegalForm = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShareCapital = Annotated[str, StringConstraints(max_length=20), AfterValidator(_amount)]


class Address(BaseModel):
    """Stripe's address: `line1`, `line2`?, `postal_code`, `city`, `state`?, `country`."""

    model_config = STRICT

    # The country first: the postal code is checked against it.
    country: Country
    line1: AddressLine
    line2: AddressLine | None = None
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    city: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    state: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None

    @field_validator("postal_code")
    @classmethod
    def _french_postal_code(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("country") in ("FR", "MC") and not re.fullmatch(r"\d{5}", value):
            raise ValueError("a French postal code is 5 digits")
        return value


# The merchant's and the customer's legal fields, which PATCH may clear with null.
MERCHANT_LEGAL_FIELDS = ("legal_name", "address", "siren", "company_id", "vat_number", "legal_form",
                         "share_capital", "registration")
CUSTOMER_LEGAL_FIELDS = ("address", "vat_number")


class MerchantLegalFields(BaseModel):
    """Who issues the invoices, as the law wants them named on each one."""

    model_config = STRICT

    legal_name: LegalText | None = None
    address: Address | None = None
    siren: Siren | None = None
    company_id: CompanyId | None = None
    vat_number: VatNumber | None = None
    legal_form: LegalForm | None = None
    share_capital: ShareCapital | None = None
    registration: LegalText | None = None

    @field_validator("vat_number")
    @classmethod
    def _siren_matches_vat_number(cls, value: str | None, info: ValidationInfo) -> str | None:
        from chalicelib.domain import legal

        legal.check_siren_matches_vat(info.data.get("siren"), value)
        return value


class CustomerLegalFields(BaseModel):
    model_config = STRICT

    address: Address | None = None
    vat_number: VatNumber | None = None


def legal_changes(model: BaseModel, names: tuple[str, ...]) -> dict:
    """The legal fields a request sets, an explicit null included (it clears
    the field); the address as a plain dict without its unset parts."""
    changes = {}
    for name in names:
        if name in model.model_fields_set:
            value = getattr(model, name)
            changes[name] = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
    return changes
