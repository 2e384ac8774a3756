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
across offers is `check_ladder`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
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

from chalicelib.domain.errors import InvalidRequest, first_validation_problem, invalid_request_from_validation_error
from chalicelib.domain.money import (
    MAX_DECIMAL_TEXT,
    MAX_UNIT_DECIMALS,
    decimal_from_text,
    format_decimal,
    is_known_currency,
    minor_units,
)
from chalicelib.domain.periods import Interval, bounded_instant
from chalicelib.domain.whole_numbers import count_field, with_integers

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
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["EUR"]}),
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
    amount: Price


class MeteredComponent(BaseModel):
    """Usage of one meter, billed in arrears. Exactly one pricing:
    `unit_amount` alone (per unit), `tiers` with `tier_mode`, or
    `package_size` with `unit_amount` (per started block)."""

    model_config = _MODEL

    code: Code
    type: Literal["metered"]
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
    hours_meter: Code
    hourly_rate: Price
    materials_meter: Code | None = None
    markup_percent: Markup = Decimal(0)


class BonusMalusComponent(BaseModel):
    """The period's last KPI value against a target: a bonus or a malus on other components."""

    model_config = _MODEL

    code: Code
    type: Literal["bonus_malus"]
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

    @property
    def interval(self) -> Interval:
        return Interval(self.billing_interval, self.interval_count)

    @property
    def terms(self) -> Terms:
        return Terms.model_construct(components=self.components, options=self.options)


class OfferVersion(Terms):
    """`POST /offers/{id}/versions`: new terms in force for periods starting at or after `effective_from`."""

    effective_from: Instant


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
    return version


def validate_offer(offer: Offer) -> None:
    """The rules of one offer that its fields alone cannot say."""
    if offer.ladder is not None and offer.tier_rank is None:
        raise InvalidRequest("tier_rank: required when the offer is on a ladder", param="tier_rank")
    if offer.tier_rank is not None and offer.ladder is None:
        raise InvalidRequest("tier_rank: only meaningful with a ladder", param="tier_rank")
    _unique(offer.entitlements, "entitlements")
    validate_terms(offer.currency, offer.components, offer.options)


def validate_terms(currency: str, components: list, options: list) -> None:
    """The rules of a set of terms (an offer's or a version's), first failure raised.

    - a known currency; amounts billed as such have at most its minor unit's
      decimals (unit prices up to 12);
    - component codes unique, option codes unique;
    - a metered component has exactly one pricing; tiers have strictly
      ascending `up_to`, the last and only the last open (null), each with a
      unit or flat amount;
    - bonus_malus `applies_to` names existing components that are not
      bonus_malus themselves."""
    if not is_known_currency(currency):
        raise InvalidRequest(f"currency: unknown currency {currency!r}", param="currency")
    decimals = minor_units(currency)
    _unique([c.code for c in components], "components", field="code")
    _unique([o.code for o in options], "options", field="code")
    priced = {c.code for c in components if c.type != "bonus_malus"}
    for i, component in enumerate(components):
        _check_component(component, f"components[{i}]", decimals, priced)
    for i, option in enumerate(options):
        _check_billed_amount(option.amount, f"options[{i}].amount", decimals)
        _unique(option.entitlements, f"options[{i}].entitlements")


def _check_component(component, path: str, decimals: int, priced: set[str]) -> None:
    if component.type == "flat":
        _check_billed_amount(component.amount, f"{path}.amount", decimals)
    elif component.type == "metered":
        _check_metered(component, path, decimals)
    elif component.type == "bonus_malus":
        for j, code in enumerate(component.applies_to):
            if code not in priced:
                raise InvalidRequest(
                    f"{path}.applies_to[{j}]: {code!r} is not a priced component of these terms",
                    param=f"{path}.applies_to[{j}]",
                )
        _unique(component.applies_to, f"{path}.applies_to")


def _check_metered(component: MeteredComponent, path: str, decimals: int) -> None:
    has_tiers = component.tiers is not None
    has_package = component.package_size is not None
    has_unit = component.unit_amount is not None
    if has_tiers and (has_unit or has_package):
        field = "unit_amount" if has_unit else "package_size"
        raise InvalidRequest(
            f"{path}.{field}: a metered component has exactly one pricing; with tiers, prices go in the tiers",
            param=f"{path}.{field}",
        )
    if has_package and not has_unit:
        raise InvalidRequest(
            f"{path}.unit_amount: package_size needs unit_amount, the price of one started block",
            param=f"{path}.unit_amount",
        )
    if not (has_tiers or has_unit):
        raise InvalidRequest(
            f"{path}.unit_amount: a metered component needs one pricing: unit_amount, tiers, "
            "or package_size with unit_amount",
            param=f"{path}.unit_amount",
        )
    if has_tiers and component.tier_mode is None:
        raise InvalidRequest(f"{path}.tier_mode: required with tiers (graduated or volume)", param=f"{path}.tier_mode")
    if component.tier_mode is not None and not has_tiers:
        raise InvalidRequest(f"{path}.tier_mode: only meaningful with tiers", param=f"{path}.tier_mode")
    if component.minimum_amount is not None:
        _check_billed_amount(component.minimum_amount, f"{path}.minimum_amount", decimals)
    if has_tiers:
        _check_tiers(component.tiers, f"{path}.tiers", decimals)


def _check_tiers(tiers: list[Tier], path: str, decimals: int) -> None:
    previous = Decimal(0)
    last = len(tiers) - 1
    for j, tier in enumerate(tiers):
        here = f"{path}[{j}]"
        if tier.up_to is None and j != last:
            raise InvalidRequest(
                f"{here}.up_to: only the last tier is open (null); tiers after it could never be reached",
                param=f"{here}.up_to",
            )
        if tier.up_to is not None and j == last:
            raise InvalidRequest(
                f"{here}.up_to: the last tier must be open (null) so that every quantity has a price",
                param=f"{here}.up_to",
            )
        if tier.up_to is not None:
            if tier.up_to <= previous:
                raise InvalidRequest(
                    f"{here}.up_to: tiers must have strictly ascending up_to ({tier.up_to} after {previous})",
                    param=f"{here}.up_to",
                )
            previous = tier.up_to
        if tier.unit_amount is None and tier.flat_amount is None:
            raise InvalidRequest(f"{here}.unit_amount: a tier needs unit_amount, flat_amount or both", param=f"{here}.unit_amount")
        if tier.flat_amount is not None:
            _check_billed_amount(tier.flat_amount, f"{here}.flat_amount", decimals)


def _check_billed_amount(amount: Decimal, param: str, decimals: int) -> None:
    # A fixed amount is billed as it is: a fraction of a cent could never be paid.
    if -amount.as_tuple().exponent > decimals:
        raise InvalidRequest(f"{param}: at most {decimals} decimals in this currency", param=param)


def _unique(values: list, path: str, *, field: str | None = None) -> None:
    seen = set()
    for j, value in enumerate(values):
        if value in seen:
            param = f"{path}[{j}].{field}" if field else f"{path}[{j}]"
            raise InvalidRequest(f"{param}: {value!r} appears twice", param=param)
        seen.add(value)


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


# What a subscription may override, per component type: prices and
# thresholds, never what is measured (meters, aggregation, applies_to).
OVERRIDABLE = {
    "flat": frozenset({"amount"}),
    "metered": frozenset(
        {"unit_amount", "tiers", "tier_mode", "package_size", "included_units", "minimum_amount"}
    ),
    "time_and_materials": frozenset({"hourly_rate", "markup_percent"}),
    "bonus_malus": frozenset({"target", "bonus_percent", "malus_percent"}),
}


def apply_price_overrides(currency: str, terms: Terms, overrides: Mapping | None, *, param: str = "price_overrides") -> list:
    """The components of `terms` with a subscription's `price_overrides` applied.

    `overrides` is `{component_code: {field: value}}` as sent in the API
    (`{"montage": {"unit_amount": "1.05"}}`); each value replaces the
    component's field and the result must be a valid component (e.g.
    overriding `unit_amount` of a tiered component is refused, replace
    `tiers` instead). Unknown component or field: InvalidRequest with param
    `price_overrides.<code>[.<field>]`."""
    if not overrides:
        return list(terms.components)
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(f"{param}: must be an object keyed by component code", param=param)
    by_code = {component.code: component for component in terms.components}
    for code, fields in overrides.items():
        if code not in by_code:
            raise InvalidRequest(f"{param}.{code}: no component {code!r} in this offer", param=f"{param}.{code}")
        if not isinstance(fields, Mapping) or not fields:
            raise InvalidRequest(f"{param}.{code}: must be an object of the fields to override", param=f"{param}.{code}")
        allowed = OVERRIDABLE[by_code[code].type]
        for field in fields:
            if field not in allowed:
                raise InvalidRequest(
                    f"{param}.{code}.{field}: a {by_code[code].type} component's {field} cannot be overridden"
                    f" (allowed: {', '.join(sorted(allowed))})",
                    param=f"{param}.{code}.{field}",
                )
    priced = {c.code for c in terms.components if c.type != "bonus_malus"}
    components = []
    for i, component in enumerate(terms.components):
        fields = overrides.get(component.code)
        if fields:
            data = component.model_dump(exclude_unset=True)
            data.update(fields)
            where = f"{param}.{component.code}"
            try:
                component = type(component).model_validate(data)
            except ValidationError as error:
                inner, message = first_validation_problem(error)
                raise _invalid_at(where, inner, message) from None
            # The rules are those of the catalog, reported under the override.
            here = f"components[{i}]"
            try:
                _check_component(component, here, minor_units(currency), priced)
            except InvalidRequest as error:
                inner = (error.param or here)[len(here) + 1 :]
                raise _invalid_at(where, inner, error.message.split(": ", 1)[-1]) from None
        components.append(component)
    return components


def _invalid_at(where: str, inner: str | None, message: str) -> InvalidRequest:
    param = f"{where}.{inner}" if inner else where
    return InvalidRequest(f"{param}: {message}", param=param)


# ---------------------------------------------------------------------------
# Ladders


def flat_price(offer: Offer) -> Decimal:
    """The offer's fixed price per period: the sum of its flat components."""
    return sum((c.amount for c in offer.components if c.type == "flat"), Decimal(0))


def _months_or_days(offer: Offer) -> tuple[str, int]:
    # Intervals compare only within a family: months with years, days with weeks.
    if offer.billing_interval in ("month", "year"):
        return "months", offer.interval_count * (12 if offer.billing_interval == "year" else 1)
    return "days", offer.interval_count * (7 if offer.billing_interval == "week" else 1)


def check_ladder(offers: Iterable[Offer]) -> None:
    """Refuse a ladder where a lower offer plus some options undercuts a higher one.

    API.md: offers sharing a `ladder` are ranked by `tier_rank` (1 lowest);
    the ladder is refused (InvalidRequest, code `ladder_violation`) when some
    lower offer plus some set of its options delivers every entitlement of a
    higher offer for a lower flat price per period. Flat price = the flat
    components plus the chosen options' amounts. Offers of different
    billing intervals are compared per month (month/year) or per day
    (day/week) by cross-multiplying; a ladder mixing the two families, or
    two currencies, or two offers of one rank, cannot be ordered and is
    refused too. Offers without a ladder are ignored; several ladders may be
    passed at once.

    For each (lower, higher) pair, the cheapest set of the lower offer's
    options covering the entitlements it lacks is a weighted set cover,
    solved exactly by `cheapest_cover` (never by enumerating the 2^n option
    sets): 10 offers x 10 options takes milliseconds, and the worst case
    the models allow (MAX_OPTIONS = 20 options, each the only source of one
    of 20 missing entitlements) is forced option by option."""
    ladders: dict[str, list[Offer]] = {}
    for offer in offers:
        if offer.ladder is not None:
            ladders.setdefault(offer.ladder, []).append(offer)
    for name, members in ladders.items():
        _check_one_ladder(name, members)


def _check_one_ladder(name: str, offers: list[Offer]) -> None:
    ranks: dict[int, Offer] = {}
    for offer in offers:
        if offer.tier_rank in ranks:
            raise InvalidRequest(
                f"ladder {name!r}: offers {ranks[offer.tier_rank].code!r} and {offer.code!r} "
                f"share tier_rank {offer.tier_rank}",
                param="tier_rank",
                code="ladder_violation",
            )
        ranks[offer.tier_rank] = offer
    first = offers[0]
    for offer in offers[1:]:
        if offer.currency != first.currency:
            raise InvalidRequest(
                f"ladder {name!r}: {offer.code!r} is in {offer.currency}, {first.code!r} in {first.currency}; "
                "a ladder compares prices in one currency",
                param="currency",
                code="ladder_violation",
            )
        if _months_or_days(offer)[0] != _months_or_days(first)[0]:
            raise InvalidRequest(
                f"ladder {name!r}: {offer.code!r} bills per {offer.billing_interval}, {first.code!r} per "
                f"{first.billing_interval}; their prices per period cannot be compared",
                param="billing_interval",
                code="ladder_violation",
            )
    ordered = sorted(offers, key=lambda o: o.tier_rank)
    for hi, higher in enumerate(ordered):
        for lower in ordered[:hi]:
            undercut = _cheapest_cover(lower, higher)
            if undercut is not None:
                options, price = undercut
                chosen = " + ".join(repr(o) for o in options) if options else "no option"
                raise InvalidRequest(
                    f"ladder {name!r}: offer {lower.code!r} (rank {lower.tier_rank}) with {chosen} delivers every "
                    f"entitlement of offer {higher.code!r} (rank {higher.tier_rank}) for {price} {lower.currency} "
                    f"per {lower.interval_count} {lower.billing_interval}, less than {flat_price(higher)} "
                    f"per {higher.interval_count} {higher.billing_interval}",
                    param="tier_rank",
                    code="ladder_violation",
                )


def _cheapest_cover(lower: Offer, higher: Offer) -> tuple[list[str], Decimal] | None:
    """The lower offer's cheapest option set covering the higher's entitlements,
    if it costs less per period than the higher offer; None otherwise."""
    _, lower_span = _months_or_days(lower)
    _, higher_span = _months_or_days(higher)
    # Per period of each: (lower + options) / lower_span < higher / higher_span,
    # cross-multiplied so that no division rounds.
    budget = flat_price(higher) * lower_span - flat_price(lower) * higher_span
    if budget <= 0:
        return None
    missing = set(higher.entitlements) - set(lower.entitlements)
    cover = cheapest_cover(missing, [(o.code, o.amount, o.entitlements) for o in lower.options])
    if cover is None:
        return None
    codes, cost = cover
    if cost * higher_span >= budget:
        return None
    order = {option.code: i for i, option in enumerate(lower.options)}
    return sorted(codes, key=order.__getitem__), flat_price(lower) + cost


def cheapest_cover(missing: Iterable[str], options: Iterable[tuple[str, Decimal, Iterable[str]]]) -> tuple[list[str], Decimal] | None:
    """The cheapest set of options (code, amount, entitlements) whose
    entitlements include every one of `missing`, as (codes, total amount);
    None when no set does. Exact (a weighted set cover):

    1. entitlements are numbered rarest first (fewest options providing them);
    2. an option whose useful entitlements are a subset of a no dearer
       option's is dropped (it can never be needed);
    3. a memoized search covers the lowest-numbered (rarest) missing
       entitlement by each option providing it, then the rest.
    An entitlement with one provider is therefore forced at no branching
    cost. The states are sets of still-missing entitlements, at most
    2^m for m missing ones; with MAX_OPTIONS = 20 options per offer and
    the pruning above, adversarial ladders take milliseconds."""
    missing = set(missing)
    if not missing:
        return [], Decimal(0)
    provided = [(code, amount, missing.intersection(ents)) for code, amount, ents in options]
    provided = [(code, amount, ents) for code, amount, ents in provided if ents]
    counts = {e: sum(1 for _, _, ents in provided if e in ents) for e in missing}
    if not all(counts.values()):
        return None
    rarest_first = sorted(missing, key=lambda e: (counts[e], e))
    bit = {e: 1 << i for i, e in enumerate(rarest_first)}
    masks = []
    for code, amount, ents in provided:
        mask = 0
        for e in ents:
            mask |= bit[e]
        masks.append((mask, amount, code))
    masks = [
        (mask, amount, code)
        for i, (mask, amount, code) in enumerate(masks)
        if not any(
            j != i and mask | other == other and other_amount <= amount and (other != mask or other_amount < amount or j < i)
            for j, (other, other_amount, _) in enumerate(masks)
        )
    ]
    memo: dict[int, tuple[Decimal, tuple[str, ...]] | None] = {0: (Decimal(0), ())}

    def best(remaining: int):
        if remaining in memo:
            return memo[remaining]
        rarest = remaining & -remaining
        found = None
        for mask, amount, code in masks:
            if mask & rarest:
                rest = best(remaining & ~mask)
                if rest is not None and (found is None or amount + rest[0] < found[0]):
                    found = (amount + rest[0], (code,) + rest[1])
        memo[remaining] = found
        return found

    result = best((1 << len(rarest_first)) - 1)
    if result is None:
        return None
    return list(result[1]), result[0]
