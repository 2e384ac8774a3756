"""Offer ladders: offers that share a `ladder`, ranked by `tier_rank`, and
the rule that a lower offer plus some of its options may not deliver a
higher offer's entitlements for less (API.md, "Offer ladders").

Offers are read by their fields only (the `Offer` protocol below), so the
catalog re-exports these names without the two importing each other.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Protocol

from chalicelib.domain.errors import InvalidRequest


class Offer(Protocol):
    """What a ladder reads of an offer (catalog.Offer)."""

    code: str
    currency: str
    billing_interval: str
    interval_count: int
    ladder: str | None
    tier_rank: int | None
    entitlements: Sequence[str]
    components: Sequence
    options: Sequence


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
