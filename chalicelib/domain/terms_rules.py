"""The rules of a set of terms that their fields alone cannot say: codes
unique, one pricing per metered component, tiers ascending with the last
one open, amounts billed as such in the currency's minor unit, bonus_malus
applied to priced components. Each failure is an InvalidRequest whose
`param` is the API's path (`components[1].tiers[0].up_to`).

The offers' models (catalog.py) and a subscription's price overrides
(price_overrides.py) are checked by these same rules; components and
options are read by their fields only.
"""
from __future__ import annotations

from decimal import Decimal

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import billing_quantum, is_billed_amount, is_known_currency, minor_units


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
    unique([c.code for c in components], "components", field="code")
    unique([o.code for o in options], "options", field="code")
    priced = {c.code for c in components if c.type != "bonus_malus"}
    for i, component in enumerate(components):
        check_component(component, f"components[{i}]", currency, priced)
    for i, option in enumerate(options):
        check_billed_amount(option.amount, f"options[{i}].amount", currency)
        unique(option.entitlements, f"options[{i}].entitlements")


def check_component(component, path: str, currency: str, priced: set[str]) -> None:
    """One component's rules; `path` is where it sits (`components[2]`),
    `priced` the codes a bonus_malus may apply to."""
    if component.type == "flat":
        check_billed_amount(component.amount, f"{path}.amount", currency)
    elif component.type == "metered":
        _check_metered(component, path, currency)
    elif component.type == "bonus_malus":
        for j, code in enumerate(component.applies_to):
            if code not in priced:
                raise InvalidRequest(
                    f"{path}.applies_to[{j}]: {code!r} is not a priced component of these terms",
                    param=f"{path}.applies_to[{j}]",
                )
        unique(component.applies_to, f"{path}.applies_to")


def _check_metered(component, path: str, currency: str) -> None:
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
        check_billed_amount(component.minimum_amount, f"{path}.minimum_amount", currency)
    if has_tiers:
        _check_tiers(component.tiers, f"{path}.tiers", currency)


def _check_tiers(tiers: list, path: str, currency: str) -> None:
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
            check_billed_amount(tier.flat_amount, f"{here}.flat_amount", currency)


def check_billed_amount(amount: Decimal, param: str, currency: str) -> None:
    # A fixed amount is billed as it is: a fraction of a cent could never be paid.
    decimals = minor_units(currency)
    if -amount.as_tuple().exponent > decimals:
        raise InvalidRequest(f"{param}: at most {decimals} decimals in this currency", param=param)
    if not is_billed_amount(amount, currency):
        # Stripe charges KWD, BHD... in multiples of 10 of their minor unit, MGA in whole units.
        raise InvalidRequest(f"{param}: must be a multiple of {billing_quantum(currency)} {currency}, "
                             "the smallest amount a card is charged in this currency", param=param)


def unique(values: list, path: str, *, field: str | None = None) -> None:
    """The second occurrence of a value is refused, at its index."""
    seen = set()
    for j, value in enumerate(values):
        if value in seen:
            param = f"{path}[{j}].{field}" if field else f"{path}[{j}]"
            raise InvalidRequest(f"{param}: {value!r} appears twice", param=param)
        seen.add(value)
