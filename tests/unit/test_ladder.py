"""Offer ladders: a lower offer plus options must never undercut a higher one."""
import time

import pytest

from chalicelib.domain.catalog import check_ladder, parse_offer
from chalicelib.domain.errors import InvalidRequest


def offer(code, rank, base, entitlements, options=(), *, ladder="sav", interval="month", count=1, currency="EUR"):
    return parse_offer(
        {
            "code": code,
            "name": code.title(),
            "currency": currency,
            "billing_interval": interval,
            "interval_count": count,
            "ladder": ladder,
            "tier_rank": rank,
            "entitlements": list(entitlements),
            "components": [{"code": "base", "type": "flat", "amount": base}],
            "options": [
                {"code": c, "name": c, "amount": amount, "entitlements": list(ents)} for c, amount, ents in options
            ],
        }
    )


def violation(offers) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        check_ladder(offers)
    assert raised.value.code == "ladder_violation"
    assert raised.value.status == 400
    return raised.value


# The documented case: "essential" (rank 1, 29.00, parts) offers "labour" for
# 10.00 and "express" for 15.00. "premium" (rank 2, 59.00) delivers parts,
# labour and 4h_response. Essential + labour + express = 54.00 < 59.00 and
# delivers everything premium does: the ladder is refused.
ESSENTIAL = ("essential", 1, "29.00", ["parts"], [("labour", "10.00", ["labour"]), ("express", "15.00", ["4h_response"])])
PREMIUM = ("premium", 2, "59.00", ["parts", "labour", "4h_response"])


def test_documented_violation_names_the_offers_and_options():
    error = violation([offer(*ESSENTIAL), offer(*PREMIUM)])
    assert "'essential'" in error.message
    assert "'premium'" in error.message
    assert "'labour' + 'express'" in error.message
    assert "54.00" in error.message and "59.00" in error.message


def test_consistent_ladder_is_accepted():
    # Same, but premium costs 54.00: equal is not cheaper.
    check_ladder([offer(*ESSENTIAL), offer("premium", 2, "54.00", ["parts", "labour", "4h_response"])])
    # And a ladder where the options are too dear.
    check_ladder(
        [
            offer("essential", 1, "29.00", ["parts"], [("labour", "20.00", ["labour"]), ("express", "25.00", ["4h_response"])]),
            offer(*PREMIUM),
            offer("total", 3, "89.00", ["parts", "labour", "4h_response", "loan"]),
        ]
    )


def test_missing_entitlement_no_option_provides_is_fine():
    check_ladder([offer("essential", 1, "9.00", ["parts"], [("labour", "1.00", ["labour"])]), offer(*PREMIUM)])


def test_a_cheaper_lower_offer_with_every_entitlement_already():
    error = violation([offer("a", 1, "10.00", ["parts", "labour"]), offer("b", 2, "20.00", ["parts"])])
    assert "with no option" in error.message


def test_cheapest_cover_is_found_not_the_first():
    # A bundle covering both for 12 beats labour (10) + express (15); 29 + 12 = 41 < 59.
    lower = offer(
        "essential",
        1,
        "29.00",
        ["parts"],
        [("labour", "10.00", ["labour"]), ("express", "15.00", ["4h_response"]), ("bundle", "12.00", ["labour", "4h_response"])],
    )
    error = violation([lower, offer(*PREMIUM)])
    assert "'bundle'" in error.message and "41.00" in error.message


def test_any_lower_rank_counts_not_only_the_next():
    violation(
        [
            offer("bronze", 1, "10.00", ["a"], [("b", "1.00", ["b"]), ("c", "1.00", ["c"])]),
            offer("silver", 2, "100.00", ["a", "b"]),
            offer("gold", 3, "50.00", ["a", "b", "c"]),  # bronze + b + c = 12 < 50
        ]
    )


def test_rank_order_not_list_order():
    check_ladder([offer(*PREMIUM), offer("essential", 1, "29.00", ["parts"])])


def test_intervals_are_compared_per_month():
    # Yearly premium at 600 = 50/month; monthly essential + options = 54/month: fine.
    check_ladder([offer(*ESSENTIAL), offer("premium", 2, "600.00", ["parts", "labour", "4h_response"], interval="year")])
    # Yearly premium at 700 = 58.33/month > 54: violated.
    violation([offer(*ESSENTIAL), offer("premium", 2, "700.00", ["parts", "labour", "4h_response"], interval="year")])
    # Quarterly premium at 170 = 56.67/month > 54: violated.
    violation([offer(*ESSENTIAL), offer("premium", 2, "170.00", ["parts", "labour", "4h_response"], count=3)])


def test_uncomparable_ladders_are_refused():
    error = violation([offer(*ESSENTIAL), offer("premium", 2, "59.00", ["parts"], interval="week")])
    assert error.param == "billing_interval"
    error = violation([offer(*ESSENTIAL), offer("premium", 2, "59.00", ["parts"], currency="USD")])
    assert error.param == "currency"
    error = violation([offer(*ESSENTIAL), offer("other", 1, "59.00", ["parts"])])
    assert error.param == "tier_rank" and "share tier_rank 1" in error.message


def test_offers_of_other_ladders_or_none_are_not_compared():
    check_ladder([offer(*ESSENTIAL), offer("premium", 2, "59.00", ["parts", "labour", "4h_response"], ladder="other")])
    standalone = parse_offer(
        {"code": "solo", "name": "Solo", "currency": "EUR", "billing_interval": "month", "components": []}
    )
    check_ladder([standalone, offer(*ESSENTIAL)])


def big_ladder(violate: bool):
    # 10 offers x 10 options, every option useful to every higher offer: offer r
    # has entitlements e0..e(3r) and options adding one missing entitlement each.
    offers = []
    for rank in range(1, 11):
        ents = [f"e{i}" for i in range(3 * rank)]
        options = [(f"o{j}", "5.00" if violate else "40.00", [f"e{3 * rank + j}"]) for j in range(10)]
        base = f"{100 * rank}.00"
        offers.append(offer(f"offer{rank}", rank, base, ents, options))
    return offers


def test_ten_offers_ten_options_is_fast():
    offers = big_ladder(violate=False)
    started = time.perf_counter()
    check_ladder(offers)
    assert time.perf_counter() - started < 0.5
    offers = big_ladder(violate=True)
    started = time.perf_counter()
    violation(offers)
    assert time.perf_counter() - started < 0.5


def test_worst_case_many_missing_entitlements_stays_fast():
    # 20 options (the model's maximum), each the only source of one of 20 missing entitlements.
    lower = offer("low", 1, "1.00", [], [(f"o{j}", "1.00", [f"e{j}"]) for j in range(20)])
    higher = offer("high", 2, "1000.00", [f"e{j}" for j in range(20)])
    started = time.perf_counter()
    error = violation([lower, higher])
    assert time.perf_counter() - started < 0.5
    assert "21.00" in error.message


def test_cheapest_cover_matches_brute_force():
    import itertools
    import random
    from decimal import Decimal

    from chalicelib.domain.catalog import cheapest_cover

    rng = random.Random(7)
    for _ in range(300):
        missing = [f"e{i}" for i in range(rng.randint(0, 7))]
        options = [
            (f"o{j}", Decimal(rng.randint(0, 20)), rng.sample(missing + ["x"], rng.randint(0, min(3, len(missing) + 1))))
            for j in range(rng.randint(0, 8))
        ]
        best = None
        for r in range(len(options) + 1):
            for combo in itertools.combinations(options, r):
                if set(missing) <= {e for _, _, ents in combo for e in ents}:
                    cost = sum((amount for _, amount, _ in combo), Decimal(0))
                    best = cost if best is None or cost < best else best
        found = cheapest_cover(missing, options)
        assert (found is None) == (best is None)
        if found is not None:
            codes, cost = found
            assert cost == best
            chosen = {code: ents for code, _, ents in options}
            assert set(missing) <= {e for code in codes for e in chosen[code]}
