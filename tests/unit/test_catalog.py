"""The catalog: strict offer models, the rules across fields, params in the API's path syntax."""
import copy
import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from chalicelib.domain.catalog import (
    Offer,
    OfferVersion,
    apply_price_overrides,
    check_options,
    parse_offer,
    parse_offer_version,
    validate_terms,
)
from chalicelib.domain.errors import InvalidRequest, invalid_request_from_validation_error, param_from_loc
from chalicelib.domain.periods import Interval

# API.md's example body of POST /offers.
API_EXAMPLE = {
    "code": "clico-neksia",
    "name": "Clic&O Neksia",
    "currency": "EUR",
    "billing_interval": "month",
    "interval_count": 1,
    "trial_days": 0,
    "commitment_months": 48,
    "ladder": "sav",
    "tier_rank": 2,
    "entitlements": ["parts", "labour"],
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {
            "code": "calls",
            "type": "metered",
            "meter": "calls",
            "tier_mode": "graduated",
            "included_units": "100",
            "tiers": [
                {"up_to": "1000", "unit_amount": "0.50"},
                {"up_to": None, "unit_amount": "0.40", "flat_amount": "0"},
            ],
        },
        {
            "code": "support",
            "type": "time_and_materials",
            "hours_meter": "agent_hours",
            "hourly_rate": "38.00",
            "materials_meter": "parts_cost",
            "markup_percent": "15",
        },
        {
            "code": "quality",
            "type": "bonus_malus",
            "kpi_meter": "service_level",
            "target": "0.90",
            "bonus_percent": "5",
            "malus_percent": "10",
            "applies_to": ["calls"],
        },
    ],
    "options": [{"code": "express", "name": "4h on-site", "amount": "30.00", "entitlements": ["4h_response"]}],
}


def body(**changes):
    data = copy.deepcopy(API_EXAMPLE)
    data.update(changes)
    return data


def refused(data) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        parse_offer(data)
    assert raised.value.status == 400
    return raised.value


def test_api_example_parses_to_decimals():
    offer = parse_offer(json.loads(json.dumps(API_EXAMPLE)))
    assert offer.currency == "EUR"
    assert offer.interval == Interval("month", 1)
    base, montage, calls, support, quality = offer.components
    assert base.amount == Decimal("49.00") and isinstance(base.amount, Decimal)
    assert montage.pricing == "per_unit"
    assert calls.pricing == "graduated"
    assert calls.included_units == Decimal("100")
    assert calls.tiers[0].up_to == Decimal("1000")
    assert calls.tiers[1].up_to is None
    assert calls.aggregation == "sum"
    assert support.markup_percent == Decimal("15")
    assert quality.direction == "at_least"
    assert offer.options[0].amount == Decimal("30.00")
    assert offer.terms.components == offer.components


def test_defaults():
    offer = parse_offer(
        {
            "code": "basic",
            "name": "Basic",
            "currency": "JPY",
            "billing_interval": "year",
            "components": [{"code": "base", "type": "flat", "amount": "1200"}],
        }
    )
    assert (offer.interval_count, offer.trial_days, offer.commitment_months) == (1, 0, 0)
    assert offer.ladder is None and offer.tier_rank is None
    assert offer.entitlements == [] and offer.options == []


def test_json_round_trip_keeps_strings():
    offer = parse_offer(API_EXAMPLE)
    # exclude_unset, not exclude_none: the open tier's `up_to: null` means something.
    dumped = offer.model_dump(mode="json", exclude_unset=True)
    assert dumped == API_EXAMPLE
    assert dumped["components"][0]["amount"] == "49.00"
    assert parse_offer(dumped) == offer
    assert parse_offer(offer.model_dump(mode="json")) == offer


def test_models_are_immutable():
    offer = parse_offer(API_EXAMPLE)
    with pytest.raises(ValidationError):
        offer.name = "other"


@pytest.mark.parametrize(
    "mutate, param",
    [
        # wrong types: a JSON number where an amount string is expected
        (lambda b: b["components"][0].update(amount=49), "components[0].amount"),
        (lambda b: b["components"][0].update(amount=49.0), "components[0].amount"),
        # a count takes a JSON integer (see test_counts_take_json_integers), never a float
        (lambda b: b["components"][2]["tiers"][0].update(up_to=1000.0), "components[2].tiers[0].up_to"),
        (lambda b: b["components"][1].update(package_size=0, unit_amount="5"), "components[1].package_size"),
        (lambda b: b["components"][1].update(unit_amount="1e3"), "components[1].unit_amount"),
        (lambda b: b["components"][1].update(unit_amount="NaN"), "components[1].unit_amount"),
        (lambda b: b["components"][1].update(unit_amount="-1.20"), "components[1].unit_amount"),
        (lambda b: b["components"][1].update(unit_amount="0.0000000000001"), "components[1].unit_amount"),
        (lambda b: b.update(interval_count="1.5"), "interval_count"),
        (lambda b: b.update(interval_count=1.0), "interval_count"),
        (lambda b: b.update(interval_count="367"), "interval_count"),
        (lambda b: b.update(interval_count=0), "interval_count"),
        (lambda b: b.update(trial_days=-1), "trial_days"),
        (lambda b: b.update(commitment_months=True), "commitment_months"),
        (lambda b: b.update(billing_interval="fortnight"), "billing_interval"),
        (lambda b: b.update(currency="XAU"), "currency"),
        (lambda b: b.update(currency="eur"), "currency"),
        (lambda b: b.update(currency=978), "currency"),
        (lambda b: b.update(tier_rank=0), "tier_rank"),
        # unknown fields, missing fields, unknown type
        (lambda b: b.update(color="blue"), "color"),
        (lambda b: b["components"][1].update(colour="red"), "components[1].colour"),
        (lambda b: b["components"][2]["tiers"][1].update(extra="x"), "components[2].tiers[1].extra"),
        (lambda b: b["components"][0].pop("amount"), "components[0].amount"),
        (lambda b: b["components"][2]["tiers"][0].pop("up_to"), "components[2].tiers[0].up_to"),
        (lambda b: b["components"][1].update(type="subscription"), "components[1].type"),
        (lambda b: b["components"][1].pop("type"), "components[1].type"),
        (lambda b: b["components"][1].update(aggregation="avg"), "components[1].aggregation"),
        (lambda b: b["components"][2].update(tier_mode="slab"), "components[2].tier_mode"),
        (lambda b: b["components"][4].update(direction="above"), "components[4].direction"),
        (lambda b: b["components"][4].update(bonus_percent="101"), "components[4].bonus_percent"),
        (lambda b: b["components"][4].update(applies_to=[]), "components[4].applies_to"),
        (lambda b: b["options"][0].update(amount=30), "options[0].amount"),
        (lambda b: b["options"][0].update(entitlements="4h_response"), "options[0].entitlements"),
        (lambda b: b.update(code="has space"), "code"),
        (lambda b: b.update(name=""), "name"),
        (lambda b: b.update(components={}), "components"),
        (lambda b: b["components"][1].update(package_size="0", unit_amount="5"), "components[1].package_size"),
    ],
)
def test_shape_and_type_errors_name_the_field(mutate, param):
    data = body()
    mutate(data)
    error = refused(data)
    assert error.param == param
    assert error.message.startswith(param)
    assert error.code == "invalid_request"


@pytest.mark.parametrize(
    "mutate, param, words",
    [
        # tiers: strictly ascending, exactly one open tier, last
        (
            lambda b: b["components"][2].update(
                tiers=[{"up_to": "1000", "unit_amount": "0.5"}, {"up_to": "1000", "unit_amount": "0.4"}, {"up_to": None, "unit_amount": "0.3"}]
            ),
            "components[2].tiers[1].up_to",
            "ascending",
        ),
        (
            lambda b: b["components"][2].update(
                tiers=[{"up_to": "1000", "unit_amount": "0.5"}, {"up_to": "500", "unit_amount": "0.4"}, {"up_to": None, "unit_amount": "0.3"}]
            ),
            "components[2].tiers[1].up_to",
            "ascending",
        ),
        (
            lambda b: b["components"][2].update(tiers=[{"up_to": None, "unit_amount": "0.5"}, {"up_to": None, "unit_amount": "0.4"}]),
            "components[2].tiers[0].up_to",
            "only the last",
        ),
        (
            lambda b: b["components"][2].update(tiers=[{"up_to": None, "unit_amount": "0.5"}, {"up_to": "1000", "unit_amount": "0.4"}]),
            "components[2].tiers[0].up_to",
            "only the last",
        ),
        (
            lambda b: b["components"][2].update(tiers=[{"up_to": "10", "unit_amount": "0.5"}]),
            "components[2].tiers[0].up_to",
            "must be open",
        ),
        (lambda b: b["components"][2].update(tiers=[{"up_to": None}]), "components[2].tiers[0].unit_amount", "unit_amount, flat_amount"),
        (lambda b: b["components"][2].update(tiers=[]), "components[2].tiers", ""),
        (
            lambda b: b["components"][2]["tiers"][1].update(flat_amount="0.001"),
            "components[2].tiers[1].flat_amount",
            "2 decimals",
        ),
        # one pricing per metered component
        (lambda b: b["components"][1].pop("unit_amount"), "components[1].unit_amount", "needs one pricing"),
        (lambda b: b["components"][2].update(unit_amount="1"), "components[2].unit_amount", "exactly one pricing"),
        (lambda b: b["components"][2].update(package_size="10"), "components[2].package_size", "exactly one pricing"),
        (lambda b: b["components"][2].pop("tier_mode"), "components[2].tier_mode", "required with tiers"),
        (lambda b: b["components"][1].update(tier_mode="volume"), "components[1].tier_mode", "only meaningful"),
        (
            lambda b: b["components"][1].update(package_size="10", unit_amount=None),
            "components[1].unit_amount",
            "package_size needs unit_amount",
        ),
        (lambda b: b["components"][1].update(minimum_amount="10.005"), "components[1].minimum_amount", "2 decimals"),
        # codes
        (lambda b: b["components"][3].update(code="base"), "components[3].code", "twice"),
        (lambda b: b["options"].append(dict(b["options"][0])), "options[1].code", "twice"),
        (lambda b: b["options"][0].update(entitlements=["a", "a"]), "options[0].entitlements[1]", "twice"),
        (lambda b: b.update(entitlements=["parts", "parts"]), "entitlements[1]", "twice"),
        # applies_to
        (lambda b: b["components"][4].update(applies_to=["calls", "ghost"]), "components[4].applies_to[1]", "ghost"),
        (lambda b: b["components"][4].update(applies_to=["quality"]), "components[4].applies_to[0]", "not a priced component"),
        (lambda b: b["components"][4].update(applies_to=["calls", "calls"]), "components[4].applies_to[1]", "twice"),
        # billed amounts in the currency's minor unit
        (lambda b: b["components"][0].update(amount="49.001"), "components[0].amount", "2 decimals"),
        (lambda b: b["options"][0].update(amount="30.5"), None, None),
        (lambda b: b.update(currency="JPY"), "components[0].amount", "0 decimals"),
        # ladder fields
        (lambda b: b.pop("tier_rank"), "tier_rank", "required"),
        (lambda b: b.pop("ladder"), "tier_rank", "ladder"),
    ],
)
def test_rules_across_fields(mutate, param, words):
    data = body()
    mutate(data)
    if param is None:
        parse_offer(data)  # accepted
        return
    error = refused(data)
    assert error.param == param
    assert words in error.message


def test_unit_prices_may_carry_12_decimals_but_fees_not():
    data = body()
    data["components"][1]["unit_amount"] = "0.000000000042"
    data["components"][2]["tiers"][0]["unit_amount"] = "0.0042"
    data["components"][3]["hourly_rate"] = "38.123456"
    offer = parse_offer(data)
    assert offer.components[1].unit_amount == Decimal("0.000000000042")


def test_other_pricings_accepted():
    data = body()
    data["components"][1].update(package_size="50", unit_amount="5.00", included_units="10", minimum_amount="20.00")
    data["components"][2].update(tier_mode="volume", aggregation="max")
    data["components"][4].update(direction="at_most", target="-3.5")
    offer = parse_offer(data)
    assert offer.components[1].pricing == "package"
    assert offer.components[2].pricing == "volume"
    assert offer.components[4].target == Decimal("-3.5")


def test_time_and_materials_without_materials():
    data = body()
    del data["components"][3]["materials_meter"]
    del data["components"][3]["markup_percent"]
    component = parse_offer(data).components[3]
    assert component.materials_meter is None and component.markup_percent == 0


def test_versions_reuse_the_component_models():
    version = parse_offer_version(
        {
            "effective_from": "2027-01-01T00:00:00Z",
            "components": API_EXAMPLE["components"],
            "options": API_EXAMPLE["options"],
        },
        "EUR",
    )
    assert version.effective_from.isoformat() == "2027-01-01T00:00:00+00:00"
    assert version.model_dump(mode="json")["effective_from"] == "2027-01-01T00:00:00Z"
    assert version.components[2].tiers[0].unit_amount == Decimal("0.50")
    with pytest.raises(InvalidRequest) as raised:
        parse_offer_version({"effective_from": "2027-01-01T00:00:00", "components": []}, "EUR")
    assert raised.value.param == "effective_from"
    with pytest.raises(InvalidRequest) as raised:
        parse_offer_version({"effective_from": 1767225600, "components": []}, "EUR")
    assert raised.value.param == "effective_from"
    with pytest.raises(InvalidRequest) as raised:
        parse_offer_version({"effective_from": "2027-01-01T00:00:00Z", "components": [{"code": "b", "type": "flat", "amount": "1.001"}]}, "EUR")
    assert raised.value.param == "components[0].amount"
    with pytest.raises(InvalidRequest) as raised:
        parse_offer_version({"effective_from": "2027-01-01T01:00:00+01:00", "components": [], "currency": "EUR"}, "EUR")
    assert raised.value.param == "currency"  # a version does not change the currency


def test_validate_terms_directly():
    offer = parse_offer(API_EXAMPLE)
    validate_terms("EUR", offer.components, offer.options)
    with pytest.raises(InvalidRequest) as raised:
        validate_terms("XAU", offer.components, offer.options)
    assert raised.value.param == "currency"


def test_param_from_loc():
    assert param_from_loc(("components", 1, "metered", "tiers", 0, "up_to")) == "components[1].tiers[0].up_to"
    assert param_from_loc(("components", 0, "flat", "amount")) == "components[0].amount"
    assert param_from_loc(("price_overrides", "montage", "unit_amount")) == "price_overrides.montage.unit_amount"
    # a field or key named like a tag is kept when it is not right after a list index
    assert param_from_loc(("price_overrides", "flat", "amount")) == "price_overrides.flat.amount"
    assert param_from_loc(("options", 0, "entitlements", 2)) == "options[0].entitlements[2]"
    assert param_from_loc(("x", "function-after[f(), str]")) == "x"
    assert param_from_loc(()) == ""


def test_invalid_request_from_validation_error_uses_the_first_error():
    data = body()
    data["components"][0]["amount"] = 1
    data["components"][1]["unit_amount"] = 2
    with pytest.raises(ValidationError) as raised:
        Offer.model_validate(data)
    error = invalid_request_from_validation_error(raised.value)
    assert error.param == "components[0].amount"
    assert "not a JSON number" in error.message


def test_openapi_schema_says_amounts_are_strings():
    schema = Offer.model_json_schema()
    tier = schema["$defs"]["Tier"]["properties"]
    assert {"type": "string"}.items() <= tier["unit_amount"]["anyOf"][0].items()
    flat = schema["$defs"]["FlatComponent"]
    assert flat["additionalProperties"] is False
    assert flat["properties"]["amount"]["type"] == "string"
    assert schema["properties"]["components"]["items"]["discriminator"]["propertyName"] == "type"
    assert OfferVersion.model_json_schema()["properties"]["effective_from"]["format"] == "date-time"


# --- a subscription's choices


def test_check_options():
    offer = parse_offer(API_EXAMPLE)
    assert [o.code for o in check_options(offer, ["express"])] == ["express"]
    with pytest.raises(InvalidRequest) as raised:
        check_options(offer, ["express", "nightly"])
    assert raised.value.param == "options[1]"
    with pytest.raises(InvalidRequest) as raised:
        check_options(offer, ["express", "express"])
    assert raised.value.param == "options[1]"


def test_price_overrides_replace_fields():
    offer = parse_offer(API_EXAMPLE)
    components = apply_price_overrides(
        "EUR",
        offer,
        {
            "montage": {"unit_amount": "1.05"},
            "base": {"amount": "39.00"},
            "calls": {"tiers": [{"up_to": None, "unit_amount": "0.45"}], "included_units": "200"},
            "support": {"hourly_rate": "35.00"},
            "quality": {"target": "0.95"},
        },
    )
    by_code = {c.code: c for c in components}
    assert by_code["montage"].unit_amount == Decimal("1.05")
    assert by_code["base"].amount == Decimal("39.00")
    assert by_code["calls"].tiers[0].unit_amount == Decimal("0.45")
    assert by_code["calls"].included_units == Decimal("200")
    assert by_code["support"].hourly_rate == Decimal("35.00")
    assert by_code["quality"].target == Decimal("0.95")
    # the offer itself is untouched
    assert offer.components[1].unit_amount == Decimal("1.20")
    assert apply_price_overrides("EUR", offer, None) == offer.components
    assert apply_price_overrides("EUR", offer, {}) == offer.components


def test_price_overrides_can_switch_pricing():
    offer = parse_offer(API_EXAMPLE)
    components = apply_price_overrides("EUR", offer, {"calls": {"tiers": None, "tier_mode": None, "unit_amount": "0.30"}})
    assert components[2].pricing == "per_unit"


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"ghost": {"unit_amount": "1"}}, "price_overrides.ghost"),
        ({"montage": {"meter": "other"}}, "price_overrides.montage.meter"),
        ({"montage": {"amount": "1"}}, "price_overrides.montage.amount"),
        ({"base": {"unit_amount": "1"}}, "price_overrides.base.unit_amount"),
        ({"quality": {"applies_to": ["montage"]}}, "price_overrides.quality.applies_to"),
        ({"montage": {"unit_amount": 1.05}}, "price_overrides.montage.unit_amount"),
        ({"montage": {"unit_amount": "-1"}}, "price_overrides.montage.unit_amount"),
        ({"base": {"amount": "39.001"}}, "price_overrides.base.amount"),
        ({"calls": {"unit_amount": "1"}}, "price_overrides.calls.unit_amount"),
        ({"calls": {"tiers": [{"up_to": "5", "unit_amount": "1"}]}}, "price_overrides.calls.tiers[0].up_to"),
        ({"calls": {"tiers": [{"up_to": 5.0, "unit_amount": "1"}, {"up_to": None}]}}, "price_overrides.calls.tiers[0].up_to"),
        ({"montage": {}}, "price_overrides.montage"),
        ({"montage": "1.05"}, "price_overrides.montage"),
    ],
)
def test_price_overrides_refused(overrides, param):
    offer = parse_offer(API_EXAMPLE)
    with pytest.raises(InvalidRequest) as raised:
        apply_price_overrides("EUR", offer, overrides)
    assert raised.value.param == param
    assert raised.value.message.startswith(param)


def test_counts_take_json_integers_and_decimal_strings():
    """A whole number may come as a JSON integer or a decimal string, where
    the contract writes a number (interval_count) or a string (up_to)."""
    data = body()
    data.update(interval_count="2", trial_days=14, commitment_months="12", tier_rank="1")
    data["components"][1].update(package_size=10)
    data["components"][2].update(included_units=100)
    data["components"][2]["tiers"][0].update(up_to=1000)
    offer = parse_offer(data)
    assert (offer.interval_count, offer.trial_days, offer.commitment_months, offer.tier_rank) == (2, 14, 12, 1)
    assert offer.components[1].package_size == Decimal(10)
    assert offer.components[2].included_units == Decimal(100)
    assert offer.components[2].tiers[0].up_to == Decimal(1000)
