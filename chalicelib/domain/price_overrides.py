"""A subscription's `price_overrides`: its own prices for some of its
offer's components and options, applied over the terms in force.

`{"montage": {"unit_amount": "1.05"}}` replaces a component's field;
`{"express": {"amount": "0.00"}}` replaces an option's price per period
(an option granted free, a negotiated option). A code names the offer's
component of that code first, else its option. What may be overridden:
prices and thresholds, never what is measured (meters, aggregation,
applies_to) nor what an option delivers (its entitlements). The result
must pass the catalog's own rules (terms_rules.py), reported under the
override's path (`price_overrides.montage.unit_amount`).
"""
from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from chalicelib.domain.errors import InvalidRequest, first_validation_problem
from chalicelib.domain.terms_rules import check_billed_amount, check_component

# What a subscription may override, per component type.
OVERRIDABLE = {
    "flat": frozenset({"amount"}),
    "metered": frozenset(
        {"unit_amount", "tiers", "tier_mode", "package_size", "included_units", "minimum_amount"}
    ),
    "time_and_materials": frozenset({"hourly_rate", "markup_percent"}),
    "bonus_malus": frozenset({"target", "bonus_percent", "malus_percent"}),
}
# What a subscription may override of an option: its price per period.
OPTION_OVERRIDABLE = frozenset({"amount"})


def apply_price_overrides(currency: str, terms, overrides: Mapping | None, *, param: str = "price_overrides") -> list:
    """The components of `terms` with a subscription's `price_overrides`
    applied (every override checked, the options' too).

    Each value replaces the component's field and the result must be a
    valid component (e.g. overriding `unit_amount` of a tiered component is
    refused, replace `tiers` instead). Unknown code or field: InvalidRequest
    with param `price_overrides.<code>[.<field>]`."""
    return priced_terms(currency, terms, overrides, param=param)[0]


def apply_option_overrides(currency: str, terms, overrides: Mapping | None, *, param: str = "price_overrides") -> list:
    """The options of `terms` with a subscription's `price_overrides`
    applied: an overridden option keeps its code, name and entitlements,
    at the amount given."""
    return priced_terms(currency, terms, overrides, param=param)[1]


def priced_terms(currency: str, terms, overrides: Mapping | None, *,
                 param: str = "price_overrides") -> tuple[list, list]:
    """(components, options) of `terms` under `overrides`, both checked."""
    if not overrides:
        return list(terms.components), list(terms.options)
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(f"{param}: must be an object keyed by component or option code", param=param)
    components = {component.code: component for component in terms.components}
    options = {option.code: option for option in terms.options}
    for code, fields in overrides.items():
        if code in components:
            allowed, what = OVERRIDABLE[components[code].type], f"a {components[code].type} component's"
        elif code in options:
            allowed, what = OPTION_OVERRIDABLE, "an option's"
        else:
            raise InvalidRequest(f"{param}.{code}: no component or option {code!r} in this offer",
                                 param=f"{param}.{code}")
        if not isinstance(fields, Mapping) or not fields:
            raise InvalidRequest(f"{param}.{code}: must be an object of the fields to override", param=f"{param}.{code}")
        for field in fields:
            if field not in allowed:
                raise InvalidRequest(
                    f"{param}.{code}.{field}: {what} {field} cannot be overridden"
                    f" (allowed: {', '.join(sorted(allowed))})",
                    param=f"{param}.{code}.{field}",
                )
    priced = {c.code for c in terms.components if c.type != "bonus_malus"}
    overridden_components = []
    for i, component in enumerate(terms.components):
        fields = overrides.get(component.code)
        if fields:
            where = f"{param}.{component.code}"
            component = _replaced(component, fields, where)
            # The rules are those of the catalog, reported under the override.
            here = f"components[{i}]"
            try:
                check_component(component, here, currency, priced)
            except InvalidRequest as error:
                inner = (error.param or here)[len(here) + 1 :]
                raise _invalid_at(where, inner, error.message.split(": ", 1)[-1]) from None
        overridden_components.append(component)
    overridden_options = []
    for option in terms.options:
        fields = None if option.code in components else overrides.get(option.code)
        if fields:
            where = f"{param}.{option.code}"
            option = _replaced(option, fields, where)
            check_billed_amount(option.amount, f"{where}.amount", currency)
        overridden_options.append(option)
    return overridden_components, overridden_options


def _replaced(model, fields: Mapping, where: str):
    """`model` (a component or an option) with `fields` replaced, validated as its own type."""
    data = model.model_dump(exclude_unset=True)
    data.update(fields)
    try:
        return type(model).model_validate(data)
    except ValidationError as error:
        inner, message = first_validation_problem(error)
        raise _invalid_at(where, inner, message) from None


def _invalid_at(where: str, inner: str | None, message: str) -> InvalidRequest:
    param = f"{where}.{inner}" if inner else where
    return InvalidRequest(f"{param}: {message}", param=param)
