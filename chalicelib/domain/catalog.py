"""The catalog: offers, their priced components and options, and the ladder rule.

The pydantic models here are both the domain's offer and the HTTP body of
`POST /offers` and `POST /offers/{id}/versions` (and the source of their
OpenAPI schema): unknown fields are refused, nothing is coerced, and every
amount is a JSON string parsed to `Decimal` (a JSON number where an amount
is expected is a 400, never a float).

Validation happens in two steps, both raising InvalidRequest with `param` in
the API's path syntax (`components[1].tiers[0].up_to`):
  1. shape and types: `model_validate` (the HTTP layer maps a ValidationError
     with errors.invalid_request_from_validation_error);
  2. rules across fields: `validate_offer` / `validate_terms` (tiers ascending,
     one pricing per metered component, unique codes, applies_to...).
`parse_offer` and `parse_offer_version` do both.

Subscription-level choices (options, price_overrides) are checked against
the terms by `check_options` and `apply_price_overrides`; the ladder rule
across offers is `check_ladder`. The rules across fields are in
terms_rules.py, price overrides in price_overrides.py, ladders in ladder.py;
their public names are importable from here too.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from chalicelib.domain.errors import InvalidRequest, invalid_request_from_validation_error
from chalicelib.domain.money import (
    MAX_DECIMAL_TEXT,
    MAX_UNIT_DECIMALS,
    decimal_from_text,
    format_decimal,
    is_known_currency,
)
from chalicelib.domain.periods import Interval, bounded_instant
from chalicelib.domain.whole_numbers import count_field, with_integers

# The catalog's rules, price overrides and ladders live in their own modules;
# their public names are the catalog's too.
from chalicelib.domain.ladder import cheapest_cover, check_ladder, flat_price  # noqa: F401
from chalicelib.domain.price_overrides import (  # noqa: F401
    OPTION_OVERRIDABLE,
    OVERRIDABLE,
    apply_option_overrides,
    apply_price_overrides,
    priced_terms,
)
from chalicelib.domain.terms_rules import check_component, unique, validate_terms  # noqa: F401

# ---------------------------------------------------------------------------
# Field types


def _decimal_field(*, allow_negative: bool = False, positive: bool = False, maximum: Decimal | None = None, example: str):
    """An Annotated Decimal that only accepts a decimal string (or a Decimal from Python code)."""

    def parse(value: Any) -> Decimal:
        try:
            number = decimal_from_text(value, max_decimals=MAX_UNIT_DECIMALS, allow_negative=allow_negative)
        except ValueError as error:
            raise PydanticCustomError("decimal_string", str(error)) from None
        if positive and number <= 0:
            raise PydanticCustomError("decimal_string", "must be greater than 0")
        if maximum is not None and number > maximum:
            raise PydanticCustomError("decimal_string", f"must be at most {maximum}")
        return number

    pattern = r"^-?\d+(\.\d{1,12})?$" if allow_negative else r"^\d+(\.\d{1,12})?$"
    return Annotated[
        Decimal,
        PlainValidator(parse, json_schema_input_type=str),
        PlainSerializer(format_decimal, return_type=str, when_used="json"),
        WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": MAX_DECIMAL_TEXT, "examples": [example]}),
    ]


# A price in major units, >= 0, up to 12 decimals ("0.0042"). Amounts billed as
# such (flat, option, flat_amount, minimum_amount) are further limited to the
# currency's minor unit by validate_terms, which knows the currency.
Price = _decimal_field(example="12.50")
# An amount of money received or credited (a payment, a credit note): > 0.
PositiveAmount = _decimal_field(positive=True, example="49.00")
# A count of units (up_to, included_units, package_size): decimal because
# usage is ("7.5" agent hours).
Quantity = with_integers(_decimal_field(example="1000"))  # or a JSON integer (domain/whole_numbers.py)
PositiveQuantity = with_integers(_decimal_field(positive=True, example="100"), minimum=1)
# A KPI value (target): any sign.
KpiValue = _decimal_field(allow_negative=True, example="0.90")
Percent = _decimal_field(maximum=Decimal(100), example="5")
Markup = _decimal_field(maximum=Decimal(1000), example="15")

Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


# "2026-11-01T00:00:00.000000+05:30" is 32 characters.
MAX_INSTANT_TEXT = 40


def _instant(value: Any) -> datetime:
    # ISO 8601 strings: in strict Python mode (the HTTP layer's) pydantic's datetime refuses them.
    if isinstance(value, str):
        if len(value) > MAX_INSTANT_TEXT:
            raise PydanticCustomError("instant", f"must be at most {MAX_INSTANT_TEXT} characters")
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("instant", 'must be an ISO 8601 time such as "2026-11-01T00:00:00Z"') from None
    if not isinstance(value, datetime):
        raise PydanticCustomError("instant", 'must be an ISO 8601 time such as "2026-11-01T00:00:00Z"')
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("instant", "must carry a time zone (end with Z)")
    return bounded_instant(value)  # a ValueError is the field's 400


Instant = Annotated[
    datetime,
    PlainValidator(_instant, json_schema_input_type=str),
    PlainSerializer(lambda d: d.isoformat().replace("+00:00", "Z"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": MAX_INSTANT_TEXT,
                    "examples": ["2026-11-01T00:00:00Z"]}),
]


def _currency(value: Any) -> str:
    if not is_known_currency(value):
        raise PydanticCustomError("currency", "must be an ISO 4217 currency code with a minor unit, e.g. EUR")
    return value


CurrencyCode = Annotated[
    str,
    PlainValidator(_currency, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "maxLength": 3, "examples": ["EUR"]}),
]

_MODEL = ConfigDict(extra="forbid", strict=True, frozen=True)

# Bounds that keep the ladder check and rating cheap (see check_ladder).
MAX_COMPONENTS = 50
MAX_OPTIONS = 20
MAX_TIERS = 50
MAX_ENTITLEMENTS = 50

# ---------------------------------------------------------------------------
# Models


class Tier(BaseModel):
    """One tier: units above the previous tier's `up_to` up to this one's (inclusive).

    `up_to` null is the open last tier. `flat_amount` is charged once when the
    tier is reached (graduated: each tier touched; volume: the tier the total
    falls in)."""

    model_config = _MODEL

    up_to: PositiveQuantity | None
    unit_amount: Price | None = None
    flat_amount: Price | None = None


class FlatComponent(BaseModel):
    """A fixed amount per period, billed in advance, prorated on mid-period changes."""

    model_config = _MODEL

    code: Code
    type: Literal["flat"]
    # What the invoice line calls it (else the code).
    name: Name | None = None
    amount: Price


class MeteredComponent(BaseModel):
    """Usage of one meter, billed in arrears. Exactly one pricing:
    `unit_amount` alone (per unit), `tiers` with `tier_mode`, or
    `package_size` with `unit_amount` (per started block)."""

    model_config = _MODEL

    code: Code
    type: Literal["metered"]
    # What the invoice line calls it (else the code).
    name: Name | None = None
    meter: Code
    unit_amount: Price | None = None
    tiers: Annotated[list[Tier], Field(min_length=1, max_length=MAX_TIERS)] | None = None
    tier_mode: Literal["graduated", "volume"] | None = None
    package_size: PositiveQuantity | None = None
    included_units: Quantity = Decimal(0)
    minimum_amount: Price | None = None
    aggregation: Literal["sum", "max", "last"] = "sum"

    @property
    def pricing(self) -> str:
        """The charge model: per_unit, package, graduated or volume."""
        if self.tiers is not None:
            return self.tier_mode or "graduated"
        if self.package_size is not None:
            return "package"
        return "per_unit"


class TimeAndMaterialsComponent(BaseModel):
    """Hours x hourly_rate, plus reported material cost x (1 + markup_percent/100), in arrears."""

    model_config = _MODEL

    code: Code
    type: Literal["time_and_materials"]
    # What the invoice line calls it (else the code).
    name: Name | None = None
    hours_meter: Code
    hourly_rate: Price
    materials_meter: Code | None = None
    markup_percent: Markup = Decimal(0)


class BonusMalusComponent(BaseModel):
    """The period's last KPI value against a target: a bonus or a malus on other components."""

    model_config = _MODEL

    code: Code
    type: Literal["bonus_malus"]
    # What the invoice line calls it (else the code).
    name: Name | None = None
    kpi_meter: Code
    target: KpiValue
    direction: Literal["at_least", "at_most"] = "at_least"
    bonus_percent: Percent = Decimal(0)
    malus_percent: Percent = Decimal(0)
    applies_to: Annotated[list[Code], Field(min_length=1, max_length=MAX_COMPONENTS)]


Component = Annotated[
    Union[FlatComponent, MeteredComponent, TimeAndMaterialsComponent, BonusMalusComponent],
    Field(discriminator="type"),
]

Entitlements = Annotated[list[Code], Field(max_length=MAX_ENTITLEMENTS)]


class Option(BaseModel):
    """A flat amount per period a subscription may add, with its entitlements."""

    model_config = _MODEL

    code: Code
    name: Name
    amount: Price
    entitlements: Entitlements = []


class Terms(BaseModel):
    """What a subscription pays: the components and options in force for a period."""

    model_config = _MODEL

    components: Annotated[list[Component], Field(max_length=MAX_COMPONENTS)]
    options: Annotated[list[Option], Field(max_length=MAX_OPTIONS)] = []

    def component(self, code: str):
        for component in self.components:
            if component.code == code:
                return component
        return None

    def option(self, code: str) -> Option | None:
        for option in self.options:
            if option.code == code:
                return option
        return None


# Prices of the same terms in other currencies: {"USD": {"components", "options"}}.
MAX_CURRENCY_OPTIONS = 30
CurrencyOptions = Annotated[dict[CurrencyCode, Terms], Field(max_length=MAX_CURRENCY_OPTIONS)]


class Offer(Terms):
    """`POST /offers`: an offer of the catalog with its first terms."""

    code: Code
    name: Name
    currency: CurrencyCode
    billing_interval: Literal["day", "week", "month", "year"]
    interval_count: count_field(1, 366) = 1
    trial_days: count_field(0, 730) = 0
    commitment_months: count_field(0, 240) = 0
    ladder: Code | None = None
    tier_rank: count_field(1, 1000) | None = None
    entitlements: Entitlements = []
    currency_options: CurrencyOptions | None = None
    # The offers the customer portal may switch this offer's subscriptions to.
    portal_upgrades: Annotated[list[Annotated[str, StringConstraints(pattern=r"^off_[0-9a-z]{26}$")]],
                               Field(max_length=20)] = []

    @property
    def interval(self) -> Interval:
        return Interval(self.billing_interval, self.interval_count)

    @property
    def terms(self) -> Terms:
        return Terms.model_construct(components=self.components, options=self.options)

    def in_currency(self, currency: str) -> "Offer":
        """This offer as it bills in `currency`: its own terms, or those of
        `currency_options[currency]`; InvalidRequest on `currency` when it has none."""
        if currency == self.currency:
            return self
        terms = (self.currency_options or {}).get(currency)
        if terms is None:
            raise InvalidRequest(
                f"currency: offer {self.code!r} bills in {self.currency} and has no prices in {currency} "
                "(add them as currency_options of a version)", param="currency")
        return self.model_copy(update={"currency": currency, "components": terms.components,
                                       "options": terms.options, "currency_options": None})


class PriceChangeTerms(Terms):
    """The terms of a price change's version (`version` of `POST /offers/{id}/price-changes`)."""

    currency_options: CurrencyOptions | None = None


class PriceChange(BaseModel):
    """`POST /offers/{id}/price-changes`: a new version from `effective_at`,
    and what existing subscriptions do (grandfather: keep their version;
    migrate: move at their first boundary from then, their customers
    e-mailed `notice_days` before)."""

    model_config = _MODEL

    version: PriceChangeTerms
    effective_at: Instant
    existing: Literal["grandfather", "migrate"]
    notice_days: count_field(0, 365) | None = None


class OfferVersion(Terms):
    """`POST /offers/{id}/versions`: new terms in force for periods starting at or after `effective_from`."""

    effective_from: Instant
    currency_options: CurrencyOptions | None = None


# ---------------------------------------------------------------------------
# Rules across fields


def parse_offer(data: Mapping) -> Offer:
    """A `POST /offers` body as a valid Offer, or InvalidRequest naming the field."""
    try:
        offer = Offer.model_validate(data)
    except ValidationError as error:
        raise invalid_request_from_validation_error(error) from None
    validate_offer(offer)
    return offer


def parse_offer_version(data: Mapping, currency: str) -> OfferVersion:
    """A `POST /offers/{id}/versions` body, checked against the offer's currency."""
    try:
        version = OfferVersion.model_validate(data)
    except ValidationError as error:
        raise invalid_request_from_validation_error(error) from None
    validate_terms(currency, version.components, version.options)
    validate_currency_options(currency, version, version.currency_options)
    return version


def validate_offer(offer: Offer) -> None:
    """The rules of one offer that its fields alone cannot say."""
    if offer.ladder is not None and offer.tier_rank is None:
        raise InvalidRequest("tier_rank: required when the offer is on a ladder", param="tier_rank")
    if offer.tier_rank is not None and offer.ladder is None:
        raise InvalidRequest("tier_rank: only meaningful with a ladder", param="tier_rank")
    unique(offer.entitlements, "entitlements")
    unique(offer.portal_upgrades, "portal_upgrades")
    validate_terms(offer.currency, offer.components, offer.options)
    validate_currency_options(offer.currency, offer, offer.currency_options)


def validate_currency_options(currency: str, terms: Terms, currency_options: Mapping | None) -> None:
    """Each currency's prices obey the catalog's rules in that currency (its
    minor unit) and price the very same components (code, type, meters) and
    options as the main terms: a subscription chooses options and overrides
    prices by code, and its usage is counted by meter, whatever its currency.
    The InvalidRequest names the field (`currency_options.JPY.components[0].amount`)."""
    for code, other in (currency_options or {}).items():
        where = f"currency_options.{code}"
        if code == currency:
            raise InvalidRequest(f"{where}: {code} is the offer's own currency; its prices are the main terms",
                                 param=where)
        try:
            validate_terms(code, other.components, other.options)
        except InvalidRequest as error:
            inner = error.param or "components"
            raise InvalidRequest(f"{where}.{inner}: {error.message.split(': ', 1)[-1]}",
                                 param=f"{where}.{inner}") from None
        mains = [_shape(c) for c in terms.components]
        for i, component in enumerate(other.components):
            if i >= len(mains) or _shape(component) != mains[i]:
                raise InvalidRequest(
                    f"{where}.components[{i}]: must be the main terms' components[{i}] "
                    f"({mains[i][0] + ', ' + mains[i][1] if i < len(mains) else 'none'}) with its prices in {code}",
                    param=f"{where}.components[{i}]")
        if len(other.components) != len(mains):
            raise InvalidRequest(f"{where}.components: {len(mains)} components, as in the main terms, not "
                                 f"{len(other.components)}", param=f"{where}.components")
        main_options = [o.code for o in terms.options]
        for j, option in enumerate(other.options):
            if j >= len(main_options) or option.code != main_options[j]:
                raise InvalidRequest(f"{where}.options[{j}].code: must be the main terms' options[{j}].code",
                                     param=f"{where}.options[{j}].code")
        if len(other.options) != len(main_options):
            raise InvalidRequest(f"{where}.options: {len(main_options)} options, as in the main terms, not "
                                 f"{len(other.options)}", param=f"{where}.options")


_SHAPE_FIELDS = ("meter", "hours_meter", "materials_meter", "kpi_meter", "applies_to", "tier_mode",
                 "aggregation", "direction")


def _shape(component) -> tuple:
    """What a component is, whatever its prices: its code, type and what it counts."""
    return (component.code, component.type,
            *(repr(getattr(component, name, None)) for name in _SHAPE_FIELDS))


# ---------------------------------------------------------------------------
# A subscription's choices against the terms


def check_options(terms: Terms, options: Iterable[str], *, param: str = "options") -> list[Option]:
    """The chosen options of `terms`, in the order given; unknown or repeated codes refused."""
    by_code = {option.code: option for option in terms.options}
    chosen = []
    seen = set()
    for j, code in enumerate(options):
        if code not in by_code:
            raise InvalidRequest(f"{param}[{j}]: no option {code!r} in this offer", param=f"{param}[{j}]")
        if code in seen:
            raise InvalidRequest(f"{param}[{j}]: option {code!r} chosen twice", param=f"{param}[{j}]")
        seen.add(code)
        chosen.append(by_code[code])
    return chosen
