"""Subscriptions through the HTTP API (moto): creation, every transition and
refusal, history, listing, the upcoming invoice checked by hand, domain
events, and concurrent changes."""
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib import config
from chalicelib.domain.errors import Conflict
from chalicelib.services import subscriptions as service
from chalicelib.services import subscription_changes as changes
from chalicelib.store import customers as customer_store
from chalicelib.store import subscriptions as store
from chalicelib.store.base import transaction
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.test_billing import save_card

# 09:00 UTC is 10:00 in Paris (the merchant's zone) all November: the first
# monthly period is 2026-11-01 09:00Z to 2026-12-01 09:00Z, 30 days.
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
PERIOD_END = "2026-12-01T09:00:00Z"


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOW


def offer_body(code, *, base="49.00", unit="1.20", express="30.00", **fields):
    components = [{"code": "base", "type": "flat", "amount": base}] if base else []
    components.append({"code": "montage", "type": "metered", "meter": "montages", "unit_amount": unit})
    options = [{"code": "express", "name": "4h on-site", "amount": express}] if express else []
    return {"code": code, "name": code, "currency": "EUR", "billing_interval": "month",
            "components": components, "options": options, **fields}


def new_offer(api, code="neksia", **fields) -> str:
    response = api.post("/offers", offer_body(code, **fields))
    assert response.status == 201, response
    return response.json["id"]


def new_customer(api, *, card=True, **fields) -> str:
    body = {"name": "Optique Durand", "email": "compta@durand.fr", "country": "FR", **fields}
    response = api.post("/customers", body)
    assert response.status == 201, response
    if card:
        save_card(api, response.json["id"])
    return response.json["id"]


def subscribe(api, customer_id, offer_id, **fields) -> dict:
    response = api.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id, **fields})
    assert response.status == 201, response
    return response.json


def refused(response, status, code, *, param=None, says=None):
    assert response.status == status, response
    error = response.json["error"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    if says is not None:
        assert says in error["message"], error
    return error


@pytest.fixture
def active(merchant, clock):
    """An active subscription (the customer has a card) to the neksia offer with the express option."""
    offer_id = new_offer(merchant)
    customer_id = new_customer(merchant)
    return subscribe(merchant, customer_id, offer_id, options=["express"])


def actor_of(api) -> str:
    return f"key:{api.key[:11]}"


# ---------------------------------------------------------------------------
# Creation


def test_an_active_subscription_and_its_first_invoice(merchant, active):
    assert active["id"].startswith("sub_") and active["object"] == "subscription"
    assert active["status"] == "active" and active["cancel_at_period_end"] is False
    assert active["current_period_start"] == "2026-11-01T09:00:00Z"
    assert active["current_period_end"] == PERIOD_END
    assert active["offer_version"] == 1 and active["options"] == ["express"] and active["price_overrides"] is None
    assert active["commitment_ends_at"] is None and active["next_billing_at"] == PERIOD_END
    # The first invoice was issued and charged with the subscription.
    [first] = merchant.get(f"/invoices?subscription_id={active['id']}").json["data"]
    assert first["status"] == "paid" and first["billing_reason"] == "subscription_create"
    assert [(l["kind"], l["component"], l["amount"]) for l in first["lines"]] == [
        ("fee", "base", "49.00"), ("option", "express", "30.00")]
    assert first["subtotal"] == "79.00" and first["tax"] == [{"rate": "20.0", "amount": "15.80"}]
    assert first["total"] == "94.80" and first["amount_paid"] == "94.80" and first["amount_due"] == "0.00"
    # The next one, at the period's end: November's usage (none), December's fees.
    upcoming = merchant.get(f"/subscriptions/{active['id']}/upcoming-invoice").json
    assert [(l["kind"], l["component"], l["amount"]) for l in upcoming["lines"]] == [
        ("usage", "montage", "0.00"), ("fee", "base", "49.00"), ("option", "express", "30.00")]
    assert upcoming["total"] == "94.80" and upcoming["billing_at"] == PERIOD_END


def test_fees_due_at_start_without_a_card_make_it_incomplete(merchant, clock):
    customer_id = new_customer(merchant, card=False)
    assert subscribe(merchant, customer_id, new_offer(merchant))["status"] == "incomplete"
    # Nothing due at the start (usage only, billed in arrears): active without a card.
    usage_only = new_offer(merchant, "per-act", base=None, express=None)
    assert subscribe(merchant, customer_id, usage_only)["status"] == "active"


def test_a_trial_defers_the_first_period_and_the_commitment(merchant, clock):
    offer_id = new_offer(merchant, trial_days=14, commitment_months=12)
    customer_id = new_customer(merchant, card=False)
    sub = subscribe(merchant, customer_id, offer_id)
    assert sub["status"] == "trialing"
    assert sub["trial_end"] == sub["current_period_end"] == "2026-11-15T09:00:00Z"
    assert sub["commitment_ends_at"] == "2027-11-15T09:00:00Z"
    assert sub["next_billing_at"] == "2026-11-15T09:00:00Z"
    # The first invoice comes at the trial's end with the first period's fees.
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert [(l["component"], l["amount"], l["period_start"]) for l in upcoming["lines"]] == [
        ("base", "49.00", "2026-11-15T09:00:00Z")]
    assert upcoming["billing_at"] == "2026-11-15T09:00:00Z"
    # trial_days from the request wins over the offer's.
    assert subscribe(merchant, customer_id, offer_id, trial_days=0)["status"] == "incomplete"


def test_price_overrides_and_a_start_in_the_future(merchant, clock):
    offer_id = new_offer(merchant)
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, offer_id, price_overrides={"base": {"amount": "40.00"}},
                    start_at="2026-12-01T00:00:00Z")
    assert sub["price_overrides"] == {"base": {"amount": "40.00"}}
    assert sub["current_period_start"] == "2026-12-01T00:00:00Z"
    assert sub["current_period_end"] == "2027-01-01T00:00:00Z"
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert upcoming["subtotal"] == "40.00" and upcoming["billing_at"] == "2026-12-01T00:00:00Z"


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"options": ["gold"]}, "options[0]"),
        ({"options": ["express", "express"]}, "options[1]"),
        ({"price_overrides": {"montage": {"unit_amount": "-1"}}}, "price_overrides.montage.unit_amount"),
        ({"price_overrides": {"montage": {"meter": "x"}}}, "price_overrides.montage.meter"),
        ({"price_overrides": {"nope": {"amount": "1"}}}, "price_overrides.nope"),
        ({"start_at": "tomorrow"}, "start_at"),
        ({"start_at": "2026-10-01T00:00:00Z"}, "start_at"),
        ({"trial_days": -1}, "trial_days"),
        ({"trial_days": 3.0}, "trial_days"),
        ({"start_at": "0001-01-01T00:00:00+01:00"}, "start_at"),
        ({"start_at": "9999-12-31T00:00:00Z"}, "start_at"),
        ({"phases": [{"after_periods": 0, "offer_id": "off_x"}]}, "phases[0].after_periods"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_400_naming_the_field(merchant, clock, fields, param):
    body = {"customer_id": new_customer(merchant), "offer_id": new_offer(merchant), **fields}
    refused(merchant.post("/subscriptions", body), 400, "invalid_request", param=param)


def test_references_that_do_not_exist_are_404_naming_the_field(merchant, clock):
    offer_id, customer_id = new_offer(merchant), new_customer(merchant)
    refused(merchant.post("/subscriptions", {"customer_id": "cus_00000000000000000000000000", "offer_id": offer_id}),
            404, "not_found", param="customer_id")
    refused(merchant.post("/subscriptions", {"customer_id": customer_id, "offer_id": "off_00000000000000000000000000"}),
            404, "not_found", param="offer_id")


def test_an_archived_offer_takes_no_new_subscription(merchant, clock):
    offer_id, customer_id = new_offer(merchant), new_customer(merchant)
    sub = subscribe(merchant, customer_id, offer_id)
    assert merchant.post(f"/offers/{offer_id}/archive").status == 200
    refused(merchant.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id}),
            409, "offer_archived", param="offer_id", says="archived")
    # Existing ones go on.
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"


def test_phases_are_checked(merchant, clock):
    offer_id, customer_id = new_offer(merchant), new_customer(merchant)
    yearly = merchant.post("/offers", offer_body("yearly", billing_interval="year")).json["id"]
    no_express = new_offer(merchant, "basic", express=None)
    archived = new_offer(merchant, "old")
    merchant.post(f"/offers/{archived}/archive")
    base = {"customer_id": customer_id, "offer_id": offer_id, "options": ["express"]}
    cases = [
        ([{"after_periods": 3, "offer_id": offer_id}, {"after_periods": 3, "offer_id": offer_id}],
         400, "invalid_request", "phases[1].after_periods"),
        ([{"after_periods": 3, "offer_id": yearly}], 400, "invalid_request", "phases[0].offer_id"),
        ([{"after_periods": 3, "offer_id": no_express}], 400, "invalid_request", "phases[0].offer_id"),
        ([{"after_periods": 3, "offer_id": no_express, "options": ["gold"]}], 400, "invalid_request",
         "phases[0].options[0]"),
        ([{"after_periods": 3, "offer_id": archived}], 409, "offer_archived", "phases[0].offer_id"),
    ]
    for phases, status, code, param in cases:
        refused(merchant.post("/subscriptions", {**base, "phases": phases}), status, code, param=param)
    sub = subscribe(merchant, customer_id, offer_id, options=["express"],
                    phases=[{"after_periods": 3, "offer_id": no_express, "options": []}])
    assert sub["phases"] == [{"after_periods": 3, "offer_id": no_express, "options": []}]


# ---------------------------------------------------------------------------
# Transitions and refusals


def test_cancel_at_period_end_then_reactivate(merchant, published, active):
    path = f"/subscriptions/{active['id']}"
    scheduled = merchant.post(f"{path}/cancel", {"reason": "moving away"})
    assert scheduled.status == 200, scheduled
    assert scheduled.json["status"] == "active" and scheduled.json["cancel_at_period_end"] is True
    assert scheduled.json["cancel_at"] == PERIOD_END
    assert scheduled.json["cancellation_reason"] == "customer"
    assert scheduled.json["cancellation_comment"] == "moving away"
    refused(merchant.post(f"{path}/cancel", {"at_period_end": True}), 409, "invalid_state", says="already scheduled")
    refused(merchant.post(f"{path}/change", {"options": [], "effective": "immediately"}), 409, "invalid_state",
            says="reactivate")
    reactivated = merchant.post(f"{path}/reactivate").json
    assert reactivated["cancel_at_period_end"] is False and reactivated["cancel_at"] is None
    refused(merchant.post(f"{path}/reactivate"), 409, "invalid_state", says="nothing to reactivate")
    events = [event for event in published.all() if event["detail-type"].startswith("subscription.")]
    assert [event["detail-type"] for event in events] == [
        "subscription.created", "subscription.invoiced", "subscription.cancellation_scheduled",
        "subscription.reactivated"]
    assert [event["detail"]["change"]["type"] for event in events] == [
        "created", "invoiced", "cancellation_scheduled", "reactivated"]
    assert all(event["source"] == "billing" for event in events)


def test_cancel_now_ends_everything(merchant, active, clock):
    path = f"/subscriptions/{active['id']}"
    clock.set(NOW + timedelta(days=9, hours=3))
    canceled = merchant.post(f"{path}/cancel", {"at_period_end": False}).json
    assert canceled["status"] == "canceled" and canceled["canceled_at"] == "2026-11-10T12:00:00Z"
    for action, body in [("change", {"options": [], "effective": "period_end"}), ("cancel", {}),
                         ("cancel", {"at_period_end": False}), ("reactivate", {}), ("pause", {}), ("resume", {})]:
        refused(merchant.post(f"{path}/{action}", body), 409, "invalid_state", says="canceled")
    # Its last invoice is issued with the cancellation: the credit of the
    # unused 20 of 30 days of the fees paid in advance, to the customer's balance.
    last, first = merchant.get(f"/invoices?subscription_id={active['id']}").json["data"]
    assert first["billing_reason"] == "subscription_create" and first["amount_paid"] == "94.80"
    assert last["billing_reason"] == "subscription_cancel" and last["status"] == "paid"
    assert [(l["kind"], l["component"], l["amount"]) for l in last["lines"]] == [
        ("usage", "montage", "0.00"), ("proration", "base", "-32.67"), ("proration", "express", "-20.00")]
    # -52.67; tax 20 % = -10.534 -> -10.53
    assert (last["subtotal"], last["tax"][0]["amount"], last["total"], last["amount_due"]) == (
        "-52.67", "-10.53", "-63.20", "0.00")
    assert merchant.get(f"/customers/{active['customer_id']}").json["credit_balances"] == {"EUR": "63.20"}
    refused(merchant.get(f"{path}/upcoming-invoice"), 409, "no_upcoming_invoice")


def test_cancel_now_of_an_incomplete_subscription_drops_its_first_invoice(merchant, clock):
    sub = subscribe(merchant, new_customer(merchant, card=False), new_offer(merchant))
    path = f"/subscriptions/{sub['id']}"
    refused(merchant.post(f"{path}/cancel", {"at_period_end": True}), 409, "invalid_state", says="immediately")
    refused(merchant.post(f"{path}/change", {"options": ["express"], "effective": "immediately"}), 409,
            "invalid_state", says="first invoice is unpaid")
    refused(merchant.post(f"{path}/pause"), 409, "invalid_state")
    canceled = merchant.post(f"{path}/cancel", {"at_period_end": False}).json
    assert canceled["status"] == "canceled" and canceled["next_billing_at"] is None
    refused(merchant.get(f"{path}/upcoming-invoice"), 409, "no_upcoming_invoice")


def test_pause_and_resume(merchant, active, clock):
    path = f"/subscriptions/{active['id']}"
    clock.set(NOW + timedelta(days=3))
    paused = merchant.post(f"{path}/pause").json
    assert paused["paused"] is True and paused["status"] == "active" and paused["paused_at"] == "2026-11-04T09:00:00Z"
    refused(merchant.post(f"{path}/pause"), 409, "invalid_state", says="already paused")
    refused(merchant.post(f"{path}/change", {"options": [], "effective": "immediately"}), 409, "invalid_state",
            says="paused")
    # Paused: the first invoice was issued at the start; nothing is billed until the resume.
    refused(merchant.get(f"{path}/upcoming-invoice"), 409, "no_upcoming_invoice", says="paused")
    resumed = merchant.post(f"{path}/resume").json
    assert resumed["paused"] is False and resumed["paused_at"] is None
    refused(merchant.post(f"{path}/resume"), 409, "invalid_state", says="not paused")
    # Resumed inside the period the pause began in: nothing more to bill now,
    # the next invoice is the period end's (December's fees).
    upcoming = merchant.get(f"{path}/upcoming-invoice").json
    assert upcoming["billing_at"] == PERIOD_END and upcoming["subtotal"] == "79.00"
    assert len(merchant.get(f"/invoices?subscription_id={active['id']}").json["data"]) == 1


def test_a_paused_subscription_has_no_upcoming_boundary_invoice(merchant, clock):
    usage_only = new_offer(merchant, "per-act", base=None, express=None)
    sub = subscribe(merchant, new_customer(merchant), usage_only)
    merchant.post(f"/subscriptions/{sub['id']}/pause")
    refused(merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice"), 409, "no_upcoming_invoice",
            says="paused")


def test_resume_into_a_period_that_opened_while_paused_bills_its_rest(merchant, active, clock):
    path = f"/subscriptions/{active['id']}"
    merchant.post(f"{path}/pause")
    # What the billing run does at a boundary while paused: the period moves
    # on, its fees are not billed.
    record = store.get_subscription(merchant.merchant["id"], active["id"], consistent=True)
    before = service.public_fields(record)
    record.current_period_start, record.current_period_end = PERIOD_END, "2027-01-01T09:00:00Z"
    record.period_index, record.pending_invoice_items = 1, []
    store.save_subscription(record, service.history_entry(record, before, "period_closed", "system", NOW))
    clock.set(datetime(2026, 12, 11, 9, 0, tzinfo=timezone.utc))  # 10 of 31 days used
    merchant.post(f"{path}/resume")
    # Issued with the resume: 21/31 of each fee,
    # 49 x 21/31 = 33.193.. -> 33.19; 30 x 21/31 = 20.322.. -> 20.32
    resumed = merchant.get(f"/invoices?subscription_id={active['id']}").json["data"][0]
    assert [(l["component"], l["amount"]) for l in resumed["lines"]] == [("base", "33.19"), ("express", "20.32")]
    assert resumed["status"] == "paid" and resumed["lines"][0]["period_start"] == "2026-12-11T09:00:00Z"


def test_commitment_blocks_the_merchant_and_yields_to_the_operator(merchant, operator, clock, client):
    offer_id = new_offer(merchant, commitment_months=12)
    sub = subscribe(merchant, new_customer(merchant), offer_id)
    assert sub["commitment_ends_at"] == "2027-11-01T09:00:00Z"
    path = f"/subscriptions/{sub['id']}"
    for body in ({}, {"at_period_end": False}):
        refused(merchant.post(f"{path}/cancel", body), 409, "commitment_active", says="2027-11-01T09:00:00Z")
    admin = f"/admin/merchants/{merchant.merchant['id']}/subscriptions/{sub['id']}/cancel"
    assert merchant.post(admin, {"force": True}).status == 401
    refused(operator.post(admin, {"at_period_end": True}), 409, "commitment_active")
    forced = operator.post(admin, {"at_period_end": True, "force": True, "reason": "court order"})
    assert forced.status == 200, forced
    assert forced.json["cancel_at_period_end"] is True and forced.json["cancellation_reason"] == "operator"
    history = merchant.get(f"{path}/history").json["data"]
    assert history[-1]["actor"] == "operator" and history[-1]["type"] == "cancellation_scheduled"
    # Another merchant's id in the path finds nothing.
    other = f"/admin/merchants/mer_00000000000000000000000000/subscriptions/{sub['id']}/cancel"
    refused(operator.post(other, {"force": True}), 404, "not_found")


def test_payment_outcomes_move_the_status(merchant, active):
    merchant_id, sub_id = merchant.merchant["id"], active["id"]
    path = f"/subscriptions/{sub_id}"
    assert changes.system_transition(merchant_id, sub_id, "payment_failed")["status"] == "past_due"
    refused(merchant.post(f"{path}/pause"), 409, "invalid_state", says="unpaid")
    refused(merchant.post(f"{path}/change", {"options": [], "effective": "period_end"}), 409, "invalid_state",
            says="unpaid")
    assert changes.system_transition(merchant_id, sub_id, "payment_succeeded")["status"] == "active"
    changes.system_transition(merchant_id, sub_id, "payment_succeeded")  # changes nothing, writes nothing
    changes.system_transition(merchant_id, sub_id, "payment_failed")
    canceled = changes.system_transition(merchant_id, sub_id, "payment_exhausted")
    assert canceled["status"] == "canceled" and canceled["cancellation_reason"] == "payment_failed"
    history = merchant.get(f"{path}/history").json["data"]
    assert [(h["type"], h["actor"]) for h in history] == [
        ("created", actor_of(merchant)), ("invoiced", "system"), ("past_due", "system"), ("activated", "system"),
        ("past_due", "system"), ("canceled", "system")]


# ---------------------------------------------------------------------------
# Changes and the upcoming invoice


def test_change_immediately_on_day_10_of_30(merchant, active, clock):
    plus = new_offer(merchant, "plus", base="99.00", unit="1.05")
    path = f"/subscriptions/{active['id']}"
    clock.set(NOW + timedelta(days=9, hours=3))  # the tenth day: 20 whole days remain
    changed = merchant.post(f"{path}/change", {"offer_id": plus, "options": [], "effective": "immediately"})
    assert changed.status == 200, changed
    assert changed.json["offer_id"] == plus and changed.json["options"] == []
    assert changed.json["current_period_start"] == active["current_period_start"]  # the anchor does not move
    assert changed.json["next_billing_at"] == PERIOD_END
    # The change is invoiced (and charged) with it; the first invoice was issued at the start.
    change, first = merchant.get(f"/invoices?subscription_id={active['id']}").json["data"]
    assert first["billing_reason"] == "subscription_create" and first["total"] == "94.80"
    assert change["billing_reason"] == "subscription_update" and change["status"] == "paid"
    assert [(l["kind"], l["component"], l["amount"], l["period_start"]) for l in change["lines"]] == [
        ("usage", "montage", "0.00", "2026-11-01T09:00:00Z"),     # usage so far, old terms
        ("proration", "base", "-32.67", "2026-11-10T12:00:00Z"),  # 49 x 20/30 = 32.666..
        ("proration", "express", "-20.00", "2026-11-10T12:00:00Z"),  # 30 x 20/30
        ("fee", "base", "66.00", "2026-11-10T12:00:00Z"),         # 99 x 20/30
    ]
    # -52.67 + 66.00 = 13.33; tax 2.666 -> 2.67
    assert change["subtotal"] == "13.33" and change["tax"] == [{"rate": "20.0", "amount": "2.67"}]
    assert change["total"] == change["amount_paid"] == "16.00"
    # At the period end: December under the new offer.
    upcoming = merchant.get(f"{path}/upcoming-invoice").json
    assert [(l["component"], l["amount"], l["period_start"]) for l in upcoming["lines"]] == [
        ("base", "99.00", PERIOD_END)]


def test_change_at_period_end_and_a_phase_switch_in_the_upcoming_invoice(merchant, clock):
    per_act = new_offer(merchant, "per-act", base=None, express=None)
    flat = new_offer(merchant, "flat", base="49.00", unit="1.05", express=None)
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, per_act, phases=[{"after_periods": 1, "offer_id": flat}])
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert upcoming["billing_at"] == PERIOD_END
    # Period 0's usage under per-act (none yet), then period 1 under the phase's offer.
    assert [(l["kind"], l["component"], l["amount"], l["unit_amount"], l["period_start"])
            for l in upcoming["lines"]] == [
        ("usage", "montage", "0.00", "1.20", "2026-11-01T09:00:00Z"),
        ("fee", "base", "49.00", "49.00", PERIOD_END)]
    assert (upcoming["subtotal"], upcoming["tax"][0]["amount"], upcoming["total"]) == ("49.00", "9.80", "58.80")
    # The customer's credit is used first.
    with transaction() as write:
        customer_store.credit_balance_update(write, merchant.merchant["id"], customer_id, "EUR", Decimal(0),
                                             Decimal("10.00"))
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert (upcoming["credit_applied"], upcoming["amount_due"]) == ("10.00", "48.80")
    # A scheduled change of offer replaces the phases.
    scheduled = merchant.post(f"/subscriptions/{sub['id']}/change",
                              {"offer_id": flat, "price_overrides": {"base": {"amount": "45.00"}},
                               "effective": "period_end"}).json
    assert scheduled["offer_id"] == per_act and scheduled["phases"] == []
    assert scheduled["pending_change"]["offer_id"] == flat
    assert scheduled["pending_change"]["effective_at"] == PERIOD_END
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert upcoming["lines"][-1]["amount"] == "45.00"
    # Scheduling the current terms again removes the scheduled change.
    unscheduled = merchant.post(f"/subscriptions/{sub['id']}/change",
                                {"offer_id": per_act, "effective": "period_end"}).json
    assert unscheduled["pending_change"] is None


def test_a_cancellation_at_period_end_bills_no_next_period(merchant, clock):
    offer_id = new_offer(merchant, trial_days=7)
    sub = subscribe(merchant, new_customer(merchant, tax_exempt=True), offer_id)
    merchant.post(f"/subscriptions/{sub['id']}/cancel")
    upcoming = merchant.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert upcoming["lines"] == [] and upcoming["total"] == "0.00"
    assert upcoming["tax"] == [{"rate": "0", "amount": "0.00"}] and upcoming["reverse_charge"] is True
    assert upcoming["note"]


def test_change_refusals(merchant, active, clock):
    path = f"/subscriptions/{active['id']}"
    usd = merchant.post("/offers", {**offer_body("usd"), "currency": "USD"}).json["id"]
    archived = new_offer(merchant, "old")
    merchant.post(f"/offers/{archived}/archive")
    refused(merchant.post(f"{path}/change", {"effective": "immediately"}), 400, "invalid_request", param="offer_id")
    refused(merchant.post(f"{path}/change", {"options": ["express"], "effective": "immediately"}), 400,
            "invalid_request", says="already has these terms")
    refused(merchant.post(f"{path}/change", {"offer_id": usd, "effective": "immediately"}), 400,
            "invalid_request", param="offer_id", says="USD")
    refused(merchant.post(f"{path}/change", {"offer_id": archived, "effective": "immediately"}), 409,
            "offer_archived", param="offer_id")
    refused(merchant.post(f"{path}/change", {"options": ["gold"], "effective": "immediately"}), 400,
            "invalid_request", param="options[0]")
    refused(merchant.post(f"{path}/change", {"options": []}), 400, "invalid_request", param="effective")
    refused(merchant.post(f"{path}/change", {"options": [], "effective": "tomorrow"}), 400, "invalid_request",
            param="effective")


# ---------------------------------------------------------------------------
# History, listing, reading


def test_history_reconstructs_the_state(merchant, active, clock):
    path = f"/subscriptions/{active['id']}"
    plus = new_offer(merchant, "plus", base="99.00")
    steps = [
        ("change", {"options": [], "effective": "period_end"}),
        ("change", {"offer_id": plus, "effective": "immediately"}),
        ("pause", None), ("cancel", {"reason": "too expensive"}), ("resume", None),
        ("reactivate", None), ("cancel", {"at_period_end": False}),
    ]
    for day, (action, body) in enumerate(steps, start=1):
        clock.set(NOW + timedelta(days=day))
        response = merchant.post(f"{path}/{action}", body)
        assert response.status == 200, (action, response)
    history, cursor = [], None
    while True:
        page = merchant.get(f"{path}/history?limit=3" + (f"&cursor={cursor}" if cursor else "")).json
        history += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    # The invoices issued along the way (the first one, the change's, the
    # cancellation's) are entries of the system's.
    assert [(h["type"], h["actor"] == "system") for h in history] == [
        ("created", False), ("invoiced", True), ("change_scheduled", False), ("changed", False),
        ("invoiced", True), ("paused", False), ("cancellation_scheduled", False), ("resumed", False),
        ("reactivated", False), ("canceled", False), ("invoiced", True)]
    assert [h["version"] for h in history] == list(range(1, 12))
    assert all(h["actor"] in (actor_of(merchant), "system") for h in history)
    assert history[0]["before"] is None
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    state: dict = {}
    for entry in history:
        for key, value in (entry["before"] or {}).items():
            assert state.get(key) == value, (entry["type"], key)  # each change starts where the last ended
        state.update(entry["after"])
    final = merchant.get(path).json
    assert state == {k: v for k, v in final.items() if k not in ("id", "object")}


def test_listing_by_customer_and_status(merchant, clock):
    offer_id = new_offer(merchant)
    first, second = new_customer(merchant), new_customer(merchant, card=False)
    a = subscribe(merchant, first, offer_id)
    b = subscribe(merchant, first, offer_id)
    c = subscribe(merchant, second, offer_id)  # incomplete
    merchant.post(f"/subscriptions/{b['id']}/cancel", {"at_period_end": False})

    def ids(query):
        response = merchant.get(f"/subscriptions{query}")
        assert response.status == 200, response
        return [s["id"] for s in response.json["data"]]

    assert ids(f"?customer_id={first}") == [b["id"], a["id"]]
    assert ids(f"?customer_id={first}&status=active") == [a["id"]]
    assert ids("?status=incomplete") == [c["id"]]
    assert ids("?status=canceled") == [b["id"]]
    assert sorted(ids("")) == sorted([a["id"], b["id"], c["id"]])
    page = merchant.get("/subscriptions?limit=2").json
    assert len(page["data"]) == 2 and page["has_more"]
    rest = merchant.get(f"/subscriptions?limit=2&cursor={page['next_cursor']}").json
    assert len(rest["data"]) == 1 and not rest["has_more"]
    refused(merchant.get("/subscriptions?status=sleeping"), 400, "invalid_request", param="status")
    page_of_customer = merchant.get(f"/customers/{first}").json["subscriptions"]
    assert [s["id"] for s in page_of_customer] == [b["id"], a["id"]]
    assert page_of_customer[0]["status"] == "canceled"


def test_unknown_subscription_is_404_everywhere(merchant, clock):
    for path in ("/subscriptions/sub_00000000000000000000000000", "/subscriptions/nope/history",
                 "/subscriptions/sub_00000000000000000000000000/upcoming-invoice"):
        refused(merchant.get(path), 404, "not_found")
    for action in ("change", "cancel", "reactivate", "pause", "resume"):
        body = {"options": [], "effective": "immediately"} if action == "change" else {}
        refused(merchant.post(f"/subscriptions/sub_00000000000000000000000000/{action}", body), 404, "not_found")


def test_a_retried_creation_with_an_idempotency_key_subscribes_once(merchant, clock):
    body = {"customer_id": new_customer(merchant), "offer_id": new_offer(merchant)}
    first = merchant.post("/subscriptions", body, headers={"Idempotency-Key": "sub-1"})
    again = merchant.post("/subscriptions", body, headers={"Idempotency-Key": "sub-1"})
    assert first.status == again.status == 201 and first.json == again.json
    assert len(merchant.get("/subscriptions").json["data"]) == 1


# ---------------------------------------------------------------------------
# Domain events


def test_events_carry_the_change(merchant, published, active):
    merchant.post(f"/subscriptions/{active['id']}/cancel", {"at_period_end": False})
    created = published.of_type("subscription.created")
    assert created[0]["subscription"]["id"] == active["id"]
    assert created[0]["merchant_id"] == merchant.merchant["id"]
    canceled = published.of_type("subscription.canceled")[0]
    assert canceled["change"]["before"]["status"] == "active"
    assert canceled["change"]["after"]["status"] == "canceled"
    assert canceled["change"]["actor"] == actor_of(merchant)


def test_a_failed_publish_does_not_fail_the_change(merchant, active, monkeypatch):
    monkeypatch.setenv("EVENT_BUS_NAME", "no-such-bus")
    config.settings.cache_clear()
    try:
        response = merchant.post(f"/subscriptions/{active['id']}/pause")
    finally:
        monkeypatch.undo()
        config.settings.cache_clear()
    assert response.status == 200 and response.json["paused"] is True
    assert merchant.get(f"/subscriptions/{active['id']}").json["paused"] is True


# ---------------------------------------------------------------------------
# Concurrency


@pytest.fixture
def atomic_dynamodb(monkeypatch):
    """DynamoDB applies each write (a transaction included) atomically; moto's
    in-process backend does not under threads (a failed transaction restores
    a copy of the table taken before its checks, erasing writes made
    meanwhile). One lock around its operations gives moto that one property."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan", "batch_get_item",
                 "transact_write_items", "transact_get_items"):
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, __original=original, **kwargs):
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


def change_in_threads(merchant_id, sub_id, bodies, *, retry: bool):
    """Run one change per body, all at once; returns (winners, conflicts)."""
    start = threading.Barrier(len(bodies))
    winners, conflicts, errors = [], [], []

    def run(i, body):
        start.wait()
        while True:
            try:
                service.change_subscription(merchant_id, sub_id, body, f"merchant:thread-{i}")
                winners.append(i)
                return
            except Conflict as conflict:
                if conflict.code != "version_conflict":
                    errors.append(conflict)
                    return
                conflicts.append(i)
                if not retry:
                    return
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
                return

    threads = [threading.Thread(target=run, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return winners, conflicts


def test_eight_changes_at_once_one_wins_per_version(merchant, active, atomic_dynamodb, monkeypatch):
    merchant_id = merchant.merchant["id"]
    # Every thread reads the same version before any of them writes.
    read_together = threading.Barrier(8)
    real_get = store.get_subscription

    def get_then_wait(*args, **kwargs):
        record = real_get(*args, **kwargs)
        read_together.wait(30)
        return record

    monkeypatch.setattr(store, "get_subscription", get_then_wait)
    bodies = [{"price_overrides": {"base": {"amount": f"{40 + i}.00"}}, "effective": "period_end"} for i in range(8)]
    winners, conflicts = change_in_threads(merchant_id, active["id"], bodies, retry=False)
    monkeypatch.setattr(store, "get_subscription", real_get)
    assert len(winners) == 1 and sorted(winners + conflicts) == list(range(8))
    history = merchant.get(f"/subscriptions/{active['id']}/history").json["data"]
    assert [(h["version"], h["type"]) for h in history] == [(1, "created"), (2, "invoiced"), (3, "change_scheduled")]
    assert history[2]["actor"] == f"merchant:thread-{winners[0]}"
    final = merchant.get(f"/subscriptions/{active['id']}").json
    assert final["pending_change"]["price_overrides"] == {"base": {"amount": f"{40 + winners[0]}.00"}}


def test_eight_changes_retried_until_each_lands_once(merchant, active, atomic_dynamodb, clock):
    merchant_id = merchant.merchant["id"]
    clock.set(NOW + timedelta(days=9, hours=3))
    bodies = [{"price_overrides": {"base": {"amount": f"{40 + i}.00"}}, "effective": "immediately"} for i in range(8)]
    winners, conflicts = change_in_threads(merchant_id, active["id"], bodies, retry=True)
    assert sorted(winners) == list(range(8))
    everything = merchant.get(f"/subscriptions/{active['id']}/history?limit=100").json["data"]
    assert [h["version"] for h in everything] == list(range(1, len(everything) + 1))
    history = [h for h in everything if h["type"] == "changed"]
    assert sorted(h["actor"] for h in history) == sorted(f"merchant:thread-{i}" for i in range(8))
    # Each change's overrides follow the one before it: no lost update.
    for previous, entry in zip(history, history[1:]):
        assert entry["before"]["price_overrides"] == previous["after"]["price_overrides"]
    final = merchant.get(f"/subscriptions/{active['id']}").json
    assert final["price_overrides"] == history[-1]["after"]["price_overrides"]
    # Each winning change is invoiced once (never twice, never not at all):
    # its credit of the old base fee is on an invoice issued after the first
    # one (alone, or with a change that raced it), or still queued.
    record = store.get_subscription(merchant_id, active["id"], consistent=True)
    queued = record.pending_invoice_items or []
    assert {item["reason"] for item in queued} <= {"change"}
    invoices = merchant.get(f"/invoices?subscription_id={active['id']}&limit=100").json["data"]
    assert sorted({i["billing_reason"] for i in invoices}) == ["subscription_create", "subscription_update"]
    credits = [line for invoice in invoices for line in invoice["lines"] if line["kind"] == "proration"]
    credits += [line for item in queued for line in item["lines"] if line["kind"] == "proration"]
    assert len([line for line in credits if line["component"] == "base"]) == 8


def test_another_merchant_can_neither_see_nor_move_a_subscription(merchant, new_merchant, active):
    other = new_merchant()
    path = f"/subscriptions/{active['id']}"
    for action, body in [("change", {"options": [], "effective": "immediately"}), ("cancel", {"at_period_end": False}),
                         ("reactivate", {}), ("pause", {}), ("resume", {})]:
        refused(other.post(f"{path}/{action}", body), 404, "not_found")
    refused(other.post("/subscriptions", {"customer_id": active["customer_id"], "offer_id": active["offer_id"]}),
            404, "not_found", param="customer_id")
    assert merchant.get(path).json == active
    assert [h["type"] for h in merchant.get(f"{path}/history").json["data"]] == ["created", "invoiced"]
