"""Offers (the catalog) through the HTTP API, and the catalog's interface to
the other services (load_offer, terms_at, offer_summary), on moto."""
import base64
import copy
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.services import offers
from chalicelib.store import offers as store
from tests.unit.test_catalog import API_EXAMPLE

NOW = datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOW


def example(**changes):
    data = copy.deepcopy(API_EXAMPLE)
    data.update(changes)
    return data


def with_component(index, **changes):
    data = example()
    data["components"][index].update(changes)
    return data


def with_tiers(tiers):
    return with_component(2, tiers=tiers)


def created(api, body) -> dict:
    response = api.post("/offers", body)
    assert response.status == 201, response
    return response.json


def refused(response, param, code="invalid_request"):
    assert response.status == 400, response
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    return error


# ---------------------------------------------------------------------------
# Creating and reading


def test_api_example_is_created_and_read_back_as_posted(merchant, clock):
    offer = created(merchant, API_EXAMPLE)
    assert offer["id"].startswith("off_") and offer["object"] == "offer"
    assert {k: offer[k] for k in API_EXAMPLE} == API_EXAMPLE
    assert offer["status"] == "active"
    assert offer["version"] == 1
    assert offer["versions"] == [{"version": 1, "effective_from": "2026-10-01T09:30:00Z"}]
    assert offer["created_at"] == "2026-10-01T09:30:00Z"
    again = merchant.get(f"/offers/{offer['id']}")
    assert again.status == 200 and again.json == offer


def test_defaults_of_a_minimal_offer_are_shown(merchant, clock):
    body = {"code": "basic", "name": "Basic", "currency": "JPY", "billing_interval": "year",
            "components": [{"code": "base", "type": "flat", "amount": "12000"}]}
    offer = created(merchant, body)
    assert offer["interval_count"] == 1 and offer["trial_days"] == 0 and offer["commitment_months"] == 0
    assert offer["ladder"] is None and offer["tier_rank"] is None
    assert offer["entitlements"] == [] and offer["options"] == []
    assert offer["components"] == body["components"]


def test_terms_are_stored_as_decimal_strings(merchant, clock):
    import boto3

    from chalicelib.config import settings

    offer = created(merchant, API_EXAMPLE)
    table = boto3.client("dynamodb", region_name="eu-west-1")
    item = table.get_item(
        TableName=settings().table_name,
        Key={"pk": {"S": f"{merchant.merchant['id']}#{offer['id']}"}, "sk": {"S": "version#000001"}},
        ConsistentRead=True,
    )["Item"]
    terms = json.loads(item["terms"]["S"])
    assert terms["components"][0]["amount"] == "49.00"
    assert terms["components"][2]["tiers"][1]["up_to"] is None  # the open tier, kept
    assert "aggregation" not in terms["components"][1]  # a default the merchant did not send


@pytest.mark.parametrize(
    "body, param",
    [
        (with_tiers([{"up_to": "1000", "unit_amount": "0.50"}, {"up_to": "500", "unit_amount": "0.45"},
                     {"up_to": None, "unit_amount": "0.40"}]), "components[2].tiers[1].up_to"),
        (with_tiers([{"up_to": None, "unit_amount": "0.50"}, {"up_to": "1000", "unit_amount": "0.40"}]),
         "components[2].tiers[0].up_to"),
        (with_tiers([{"up_to": "1000", "unit_amount": "0.50"}]), "components[2].tiers[0].up_to"),
        (with_component(0, amount="-49.00"), "components[0].amount"),
        (with_component(1, unit_amount="-0.01"), "components[1].unit_amount"),
        (example(currency="XYZ"), "currency"),
        (example(currency="eur"), "currency"),
        (with_component(1, code="base"), "components[1].code"),
        (with_component(4, applies_to=["calls", "nothing"]), "components[4].applies_to[1]"),
        (with_component(4, applies_to=["quality"]), "components[4].applies_to[0]"),
        (with_component(0, amount=49.0), "components[0].amount"),
        (with_component(1, unit_amount=1.2), "components[1].unit_amount"),
        (with_component(0, amount="1e3"), "components[0].amount"),
        (with_component(0, amount="49.001"), "components[0].amount"),
        (example(currency="JPY"), "components[0].amount"),  # 49.00 has decimals the yen has not
        (example(colour="red"), "colour"),
        (with_component(1, colour="red"), "components[1].colour"),
        (with_component(0, type="discount"), "components[0].type"),
        (example(interval_count="1.0"), "interval_count"),
        (example(name=12), "name"),
        (example(tier_rank=2.5), "tier_rank"),
        (example(components="base"), "components"),
        (example(options=[{"code": "express", "name": "4h", "amount": 30}]), "options[0].amount"),
        (example(tier_rank=None), "tier_rank"),  # on a ladder without a rank
        (example(billing_interval="fortnight"), "billing_interval"),
        ({k: v for k, v in API_EXAMPLE.items() if k != "code"}, "code"),
    ],
)
def test_bad_offer_is_400_naming_the_field(merchant, body, param):
    refused(merchant.post("/offers", body), param)
    assert merchant.get("/offers").json["data"] == []


def test_code_is_unique_per_merchant(new_merchant, clock):
    first, other = new_merchant(), new_merchant()
    offer = created(first, API_EXAMPLE)
    error = refused(first.post("/offers", example(name="Again")), "code", code="duplicate_code")
    assert offer["id"] in error["message"]
    assert len(first.get("/offers").json["data"]) == 1
    created(other, API_EXAMPLE)  # another merchant's catalog is its own


def test_idempotency_key_replays_the_creation(merchant, clock):
    first = merchant.post("/offers", API_EXAMPLE, headers={"Idempotency-Key": "offer-1"})
    again = merchant.post("/offers", API_EXAMPLE, headers={"Idempotency-Key": "offer-1"})
    assert first.status == again.status == 201
    assert again.json["id"] == first.json["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"


# ---------------------------------------------------------------------------
# Ladders


def ladder_offer(code, rank, base, entitlements, options=(), ladder="sav"):
    return {
        "code": code, "name": code.title(), "currency": "EUR", "billing_interval": "month",
        "ladder": ladder, "tier_rank": rank, "entitlements": list(entitlements),
        "components": [{"code": "base", "type": "flat", "amount": base}],
        "options": [{"code": c, "name": c, "amount": amount, "entitlements": list(ents)} for c, amount, ents in options],
    }


# The documented case: essential (rank 1, 29.00, parts) sells labour for
# 10.00 and express (4h_response) for 15.00: 54.00 for everything premium
# (rank 2) delivers.
ESSENTIAL = ladder_offer("essential", 1, "29.00", ["parts"],
                         [("labour", "10.00", ["labour"]), ("express", "15.00", ["4h_response"])])
PREMIUM_ENTITLEMENTS = ["parts", "labour", "4h_response"]


def version_of(body, effective_from, **base_and_options):
    """A version body with the offer's components and options, some prices changed."""
    components = copy.deepcopy(body["components"])
    options = copy.deepcopy(body.get("options", []))
    for component in components:
        if component["code"] in base_and_options:
            component["amount"] = base_and_options[component["code"]]
    for option in options:
        if option["code"] in base_and_options:
            option["amount"] = base_and_options[option["code"]]
    return {"effective_from": effective_from, "components": components, "options": options}


def test_ladder_violation_on_create_names_offers_and_options(merchant, clock):
    created(merchant, ESSENTIAL)
    error = refused(
        merchant.post("/offers", ladder_offer("premium", 2, "59.00", PREMIUM_ENTITLEMENTS)),
        "tier_rank", code="ladder_violation",
    )
    for name in ("'essential'", "'premium'", "'labour' + 'express'", "54.00", "59.00"):
        assert name in error["message"]
    assert [o["code"] for o in merchant.get("/offers").json["data"]] == ["essential"]
    # Equal is not cheaper: premium at 54.00 keeps the ladder consistent.
    premium = created(merchant, ladder_offer("premium", 2, "54.00", PREMIUM_ENTITLEMENTS))
    assert premium["tier_rank"] == 2


def test_ladder_violation_on_a_new_version(merchant, clock):
    essential = created(merchant, ESSENTIAL)
    premium = created(merchant, ladder_offer("premium", 2, "54.00", PREMIUM_ENTITLEMENTS))
    later = "2026-11-01T00:00:00Z"
    # The higher offer dearer than the lower one with its options: refused.
    raised = merchant.post(f"/offers/{premium['id']}/versions", version_of(premium, later, base="59.00"))
    error = refused(raised, None, code="ladder_violation")
    assert "'labour' + 'express'" in error["message"] and "59.00" in error["message"]
    # The lower offer's options cheaper: refused too.
    cheaper = merchant.post(f"/offers/{essential['id']}/versions", version_of(essential, later, labour="5.00"))
    refused(cheaper, None, code="ladder_violation")
    assert merchant.get(f"/offers/{essential['id']}").json["version"] == 1
    # A cheaper higher offer keeps the ladder consistent.
    accepted = merchant.post(f"/offers/{premium['id']}/versions", version_of(premium, later, base="50.00"))
    assert accepted.status == 201, accepted
    assert accepted.json["version"] == 2 and accepted.json["components"][0]["amount"] == "50.00"


def test_ladder_is_checked_when_scheduled_versions_come_into_force(merchant, clock):
    essential = created(merchant, ladder_offer("essential", 1, "29.00", ["parts"],
                                               [("labour", "20.00", ["labour"]), ("express", "25.00", ["4h_response"])]))
    # From December, essential's options cost 10.00 + 15.00: 54.00 for everything.
    december = version_of(essential, "2026-12-01T00:00:00Z", labour="10.00", express="15.00")
    assert merchant.post(f"/offers/{essential['id']}/versions", december).status == 201
    # Premium at 59.00 is fine today (74.00 for essential with options) but not from December.
    error = refused(merchant.post("/offers", ladder_offer("premium", 2, "59.00", PREMIUM_ENTITLEMENTS)),
                    "tier_rank", code="ladder_violation")
    assert "from 2026-12-01T00:00:00Z" in error["message"]
    created(merchant, ladder_offer("premium", 2, "54.00", PREMIUM_ENTITLEMENTS))


def test_archived_offers_leave_the_ladder(merchant, clock):
    essential = created(merchant, ESSENTIAL)
    premium = ladder_offer("premium", 2, "59.00", PREMIUM_ENTITLEMENTS)
    refused(merchant.post("/offers", premium), "tier_rank", code="ladder_violation")
    assert merchant.post(f"/offers/{essential['id']}/archive").status == 200
    created(merchant, premium)


def test_two_offers_of_one_rank_are_refused(merchant, clock):
    created(merchant, ESSENTIAL)
    other = ladder_offer("basic", 1, "19.00", ["parts"])
    error = refused(merchant.post("/offers", other), "tier_rank", code="ladder_violation")
    assert "'essential'" in error["message"] and "'basic'" in error["message"]
    created(merchant, ladder_offer("basic", 1, "19.00", ["parts"], ladder="other"))


def test_a_stale_ladder_or_offer_is_not_written(merchant, clock):
    """The writes are conditional: a change checked against a ladder or an
    offer that changed since it was read is refused, nothing is written."""
    merchant_id = merchant.merchant["id"]
    essential = created(merchant, ESSENTIAL)
    stale_ladder = store.get_ladder(merchant_id, "sav")
    stale_offer, _ = store.load_offer(merchant_id, essential["id"])
    created(merchant, ladder_offer("premium", 2, "54.00", PREMIUM_ENTITLEMENTS))  # the ladder moves on
    record, _ = store.load_offer(merchant_id, essential["id"])
    version = store.OfferVersionRecord(
        *store.OfferVersionRecord.key(merchant_id, essential["id"], 2), version=2,
        effective_from="2026-11-01T00:00:00Z", terms=json.dumps({"components": ESSENTIAL["components"]}),
        created_at="2026-10-01T09:30:00Z",
    )
    with pytest.raises(Conflict):
        store.add_version(record, version, stale_ladder)
    assert merchant.post(f"/offers/{essential['id']}/versions",
                         version_of(essential, "2026-11-01T00:00:00Z", base="30.00")).status == 201
    with pytest.raises(Conflict):
        store.add_version(stale_offer, version, None)
    _, versions = store.load_offer(merchant_id, essential["id"])
    assert [v.version for v in versions] == [1, 2]
    assert json.loads(versions[1].terms)["components"][0]["amount"] == "30.00"


# ---------------------------------------------------------------------------
# Versions


def test_versions_in_force_by_date(merchant, clock):
    merchant_id = merchant.merchant["id"]
    offer = created(merchant, API_EXAMPLE)
    offer_id = offer["id"]
    v2 = version_of(offer, "2026-11-01T00:00:00Z", base="55.00")
    v2["components"][1]["unit_amount"] = "1.30"
    assert merchant.post(f"/offers/{offer_id}/versions", v2).status == 201
    clock.set(datetime(2026, 12, 15, tzinfo=timezone.utc))
    v3 = version_of(offer, "2027-01-01T00:00:00+01:00", base="60.00", express="35.00")
    response = merchant.post(f"/offers/{offer_id}/versions", v3)
    assert response.status == 201
    assert response.json["versions"] == [
        {"version": 1, "effective_from": "2026-10-01T09:30:00Z"},
        {"version": 2, "effective_from": "2026-11-01T00:00:00Z"},
        {"version": 3, "effective_from": "2026-12-31T23:00:00Z"},
    ]
    assert response.json["version"] == 3 and response.json["components"][0]["amount"] == "60.00"

    def at(text):
        number, terms = offers.terms_at(merchant_id, offer_id, datetime.fromisoformat(text))
        return number, terms.components[0].amount, terms.components[1].unit_amount, terms.options[0].amount

    assert at("2020-01-01T00:00:00+00:00") == (1, Decimal("49.00"), Decimal("1.20"), Decimal("30.00"))
    assert at("2026-10-15T00:00:00+00:00") == (1, Decimal("49.00"), Decimal("1.20"), Decimal("30.00"))
    assert at("2026-10-31T23:59:59.999999+00:00")[0] == 1
    assert at("2026-11-01T00:00:00+00:00") == (2, Decimal("55.00"), Decimal("1.30"), Decimal("30.00"))
    assert at("2026-11-01T01:00:00+01:00")[0] == 2  # the same instant in Paris
    assert at("2026-12-31T22:59:59+00:00") == (2, Decimal("55.00"), Decimal("1.30"), Decimal("30.00"))
    assert at("2027-01-01T00:00:00+01:00") == (3, Decimal("60.00"), Decimal("1.20"), Decimal("35.00"))
    assert at("2031-06-01T00:00:00+00:00")[0] == 3

    _, v3_terms = offers.terms_at(merchant_id, offer_id, datetime(2027, 2, 1, tzinfo=timezone.utc))
    assert (v3_terms.currency, v3_terms.billing_interval, v3_terms.commitment_months) == ("EUR", "month", 48)
    assert v3_terms.ladder == "sav" and v3_terms.tier_rank == 2 and v3_terms.entitlements == ["parts", "labour"]
    # The latest version, and one long-lived object per version (rating's cache keys on it).
    assert offers.load_offer(merchant_id, offer_id) is v3_terms
    assert offers.terms_at(merchant_id, offer_id, datetime(2026, 11, 2, tzinfo=timezone.utc))[1] is \
        offers.terms_at(merchant_id, offer_id, datetime(2026, 12, 2, tzinfo=timezone.utc))[1]
    with pytest.raises(ValueError):
        offers.terms_at(merchant_id, offer_id, datetime(2026, 11, 2))
    assert offers.offer_summary(merchant_id, offer_id) == merchant.get(f"/offers/{offer_id}").json


def test_effective_from_is_now_or_later_and_after_the_latest_version(merchant, clock):
    offer = created(merchant, API_EXAMPLE)
    path = f"/offers/{offer['id']}/versions"
    refused(merchant.post(path, version_of(offer, "2026-10-01T09:29:59Z")), "effective_from")
    refused(merchant.post(path, version_of(offer, "2026-10-01")), "effective_from")  # no time zone
    refused(merchant.post(path, {"components": offer["components"]}), "effective_from")
    assert merchant.post(path, version_of(offer, "2026-10-01T09:30:00Z", base="50.00")).status == 201
    assert merchant.post(path, version_of(offer, "2026-12-01T00:00:00Z", base="51.00")).status == 201
    refused(merchant.post(path, version_of(offer, "2026-12-01T00:00:00Z", base="52.00")), "effective_from")
    refused(merchant.post(path, version_of(offer, "2026-11-15T00:00:00Z", base="52.00")), "effective_from")
    assert merchant.get(f"/offers/{offer['id']}").json["version"] == 3


@pytest.mark.parametrize(
    "change, param",
    [
        (lambda v: v["components"][0].update(amount="55.001"), "components[0].amount"),
        (lambda v: v["components"][0].update(amount=55), "components[0].amount"),
        (lambda v: v["options"][0].update(amount="30.005"), "options[0].amount"),
        (lambda v: v["components"][2]["tiers"][1].update(flat_amount="0.001"), "components[2].tiers[1].flat_amount"),
        (lambda v: v["components"][2]["tiers"].reverse(), "components[2].tiers[0].up_to"),
        (lambda v: v.update(currency="USD"), "currency"),  # a version cannot change the currency
        (lambda v: v["components"].pop(1), "components"),  # montage removed
        (lambda v: v["components"].__setitem__(0, {"code": "base", "type": "metered", "meter": "x",
                                                   "unit_amount": "1"}), "components"),  # base changes type
        (lambda v: v.update(options=[]), "options"),  # express removed
    ],
    ids=["decimals", "number", "option-decimals", "flat-amount-decimals", "tiers-order", "currency",
         "component-removed", "component-type", "option-removed"],
)
def test_bad_version_is_400_naming_the_field(merchant, clock, change, param):
    offer = created(merchant, API_EXAMPLE)
    body = version_of(offer, "2026-11-01T00:00:00Z")
    change(body)
    refused(merchant.post(f"/offers/{offer['id']}/versions", body), param)
    assert merchant.get(f"/offers/{offer['id']}").json["version"] == 1


def test_version_amounts_follow_the_offers_currency(merchant, clock):
    body = {"code": "yen", "name": "Yen", "currency": "JPY", "billing_interval": "month",
            "components": [{"code": "base", "type": "flat", "amount": "4900"}]}
    offer = created(merchant, body)
    path = f"/offers/{offer['id']}/versions"
    refused(merchant.post(path, version_of(offer, "2026-11-01T00:00:00Z", base="4900.50")), "components[0].amount")
    added = merchant.post(path, {**version_of(offer, "2026-11-01T00:00:00Z", base="5200"),
                                 "options": [{"code": "extra", "name": "Extra", "amount": "800"}]})
    assert added.status == 201 and added.json["options"][0]["amount"] == "800"


# ---------------------------------------------------------------------------
# Listing, archiving, tenancy


def test_pagination(new_merchant, clock):
    first, other = new_merchant(), new_merchant()
    ids = [created(first, example(code=f"offer-{i}", ladder=None, tier_rank=None))["id"] for i in range(5)]
    seen, cursor, pages = [], None, []
    while True:
        response = first.get("/offers?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert response.status == 200, response
        pages.append(len(response.json["data"]))
        seen += [offer["id"] for offer in response.json["data"]]
        assert response.json["has_more"] is (response.json["next_cursor"] is not None)
        cursor = response.json["next_cursor"]
        if not response.json["has_more"]:
            break
        if len(pages) == 2:
            second_cursor = cursor
    assert pages == [2, 2, 1]
    assert seen == sorted(ids, reverse=True)  # newest first
    whole = first.get("/offers?limit=5").json
    assert len(whole["data"]) == 5 and whole["has_more"] is False and whole["next_cursor"] is None
    # A cursor works only for the merchant it was given to, even re-labelled.
    refused(other.get(f"/offers?limit=2&cursor={second_cursor}"), "cursor")
    key = json.loads(base64.urlsafe_b64decode(second_cursor))
    key["pk"]["S"] = key["pk"]["S"].replace(first.merchant["id"], other.merchant["id"])
    forged = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
    refused(other.get(f"/offers?limit=2&cursor={forged}"), "cursor")
    refused(first.get("/offers?cursor=not-a-cursor"), "cursor")
    own = json.loads(base64.urlsafe_b64decode(second_cursor))
    for extra in ({"colour": {"S": "red"}}, {"sk": {"N": "1"}}, {"gsi1sk": {"S": "x" * 5000}}):
        padded = base64.urlsafe_b64encode(json.dumps({**own, **extra}).encode()).decode()
        refused(first.get(f"/offers?cursor={padded}"), "cursor")
    for limit in ("0", "101", "two"):
        refused(first.get(f"/offers?limit={limit}"), "limit")
    assert other.get("/offers").json["data"] == []


def test_another_merchants_offer_is_404(new_merchant, clock):
    owner, other = new_merchant(), new_merchant()
    offer = created(owner, API_EXAMPLE)
    for response in (
        other.get(f"/offers/{offer['id']}"),
        other.post(f"/offers/{offer['id']}/archive"),
        other.post(f"/offers/{offer['id']}/versions", version_of(offer, "2026-11-01T00:00:00Z")),
        owner.get("/offers/off_" + "0" * 26),
        owner.get("/offers/nothing"),
    ):
        assert response.status == 404, response
        assert response.json["error"]["code"] == "not_found"
    assert owner.get(f"/offers/{offer['id']}").json["status"] == "active"
    with pytest.raises(NotFound):
        offers.load_offer(other.merchant["id"], offer["id"])


def test_archive_is_idempotent_and_visible(merchant, clock):
    merchant_id = merchant.merchant["id"]
    offer = created(merchant, API_EXAMPLE)
    assert offers.offer_archived(merchant_id, offer["id"]) is False
    first = merchant.post(f"/offers/{offer['id']}/archive")
    again = merchant.post(f"/offers/{offer['id']}/archive")
    assert first.status == again.status == 200
    assert first.json["status"] == again.json["status"] == "archived"
    assert merchant.get(f"/offers/{offer['id']}").json["status"] == "archived"
    assert merchant.get("/offers").json["data"][0]["status"] == "archived"
    assert offers.offer_archived(merchant_id, offer["id"]) is True
    assert offers.offer_summary(merchant_id, offer["id"])["status"] == "archived"
    # Existing subscriptions go on: an archived offer still takes new prices.
    version = merchant.post(f"/offers/{offer['id']}/versions", version_of(offer, "2026-11-01T00:00:00Z", base="52.00"))
    assert version.status == 201 and version.json["status"] == "archived"
