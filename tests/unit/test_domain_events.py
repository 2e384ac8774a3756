"""Which domain events a committed write makes (domain/domain_events.py),
from plain images before and after it."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.domain_events import event_types, subscription_event

OPEN = {"status": "open", "payment_attempts": [{"status": "pending"}], "credit_notes": [], "offline_payments": [],
        "stray_refunds": []}


def invoice(**changes):
    return {**OPEN, **changes}


def test_a_finalized_invoice_is_created_and_finalized():
    assert event_types("invoice", None, invoice()) == ["invoice.created", "invoice.finalized"]


def test_a_draft_is_no_news_until_it_is_finalized():
    draft = invoice(status="draft", payment_attempts=[])
    assert event_types("invoice", None, draft) == []
    assert event_types("invoice", draft, invoice()) == ["invoice.created", "invoice.finalized"]


def test_an_invoice_with_nothing_due_is_paid_when_issued():
    assert event_types("invoice", None, invoice(status="paid", payment_attempts=[])) == [
        "invoice.created", "invoice.finalized", "invoice.paid"]


def test_an_invoice_issued_without_a_card_has_failed_at_once():
    issued = invoice(payment_attempts=[{"status": "failed", "failure_code": "no_payment_method"}])
    assert event_types("invoice", None, issued) == ["invoice.created", "invoice.finalized", "invoice.payment_failed"]


def test_a_charge_that_succeeds_pays_the_invoice():
    paid = invoice(status="paid", payment_attempts=[{"status": "succeeded"}])
    assert event_types("invoice", invoice(), paid) == ["invoice.paid"]


def test_each_failed_attempt_is_one_event():
    once = invoice(payment_attempts=[{"status": "failed"}])
    twice = invoice(payment_attempts=[{"status": "failed"}, {"status": "failed"}])
    assert event_types("invoice", invoice(), once) == ["invoice.payment_failed"]
    assert event_types("invoice", once, twice) == ["invoice.payment_failed"]
    assert event_types("invoice", twice, twice) == []


def test_the_last_failure_makes_it_uncollectible():
    once = invoice(payment_attempts=[{"status": "failed"}])
    last = invoice(status="uncollectible", payment_attempts=[{"status": "failed"}, {"status": "failed"}])
    assert event_types("invoice", once, last) == ["invoice.payment_failed", "invoice.marked_uncollectible"]


def test_an_attempt_closed_because_the_invoice_was_settled_otherwise_is_not_a_failure():
    paid_in_cash = invoice(status="paid", payment_attempts=[{"status": "failed", "failure_code": "paid_out_of_band"}],
                           offline_payments=[{"id": "pay_1"}])
    voided = invoice(status="void", payment_attempts=[{"status": "failed", "failure_code": "voided"}])
    assert event_types("invoice", invoice(), paid_in_cash) == ["invoice.paid"]
    assert event_types("invoice", invoice(), voided) == ["invoice.voided"]


def test_a_partial_offline_payment_is_recorded_and_the_last_one_pays():
    part = invoice(offline_payments=[{"id": "pay_1"}])
    rest = invoice(status="paid", offline_payments=[{"id": "pay_1"}, {"id": "pay_2"}])
    assert event_types("invoice", invoice(), part) == ["invoice.payment_recorded"]
    assert event_types("invoice", part, rest) == ["invoice.paid"]


def test_a_credit_note_updates_the_invoice_unless_it_pays_it():
    credited = invoice(credit_notes=[{"id": "cn_1"}])
    settled = invoice(status="paid", credit_notes=[{"id": "cn_1"}])
    paid = invoice(status="paid")
    assert event_types("invoice", invoice(), credited) == ["invoice.updated"]
    assert event_types("invoice", invoice(), settled) == ["invoice.paid"]
    assert event_types("invoice", paid, {**paid, "credit_notes": [{"id": "cn_1"}]}) == ["invoice.updated"]


def test_money_refunded_from_a_void_invoice():
    void = invoice(status="void", stray_refunds=[{"status": "pending"}])
    refunded = invoice(status="void", stray_refunds=[{"status": "succeeded"}])
    assert event_types("invoice", void, refunded) == ["invoice.payment_refunded"]


def test_a_write_that_changes_nothing_of_note_is_no_event():
    assert event_types("invoice", invoice(), invoice(next_payment_attempt="2026-12-01T00:00:00Z")) == []


def test_a_credit_note_is_created_then_refunded_once():
    note = {"refund": "card", "refund_status": "pending"}
    refunded = {**note, "refund_status": "succeeded", "refund_id": "re_1"}
    assert event_types("credit_note", None, note) == ["credit_note.created"]
    assert event_types("credit_note", note, refunded) == ["credit_note.refunded"]
    assert event_types("credit_note", refunded, {**refunded, "refund_status": "succeeded"}) == []
    assert event_types("credit_note", note, {**note, "refund_status": "failed", "refund_failure": "x"}) == []


def test_customer_events():
    customer = {"name": "Ana", "email": "a@example.com", "updated_at": "t1"}
    assert event_types("customer", None, customer) == ["customer.created"]
    assert event_types("customer", customer, {**customer, "name": "Ana B", "updated_at": "t2"}) == ["customer.updated"]
    assert event_types("customer", customer, {**customer, "updated_at": "t2", "version": 3}) == []
    carded = {**customer, "default_card": {"last4": "4242"}, "card_expiry": "2030-01"}
    assert event_types("customer", customer, carded) == ["customer.payment_method_attached"]
    assert event_types("customer", carded, carded) == []
    assert event_types("customer", carded, {**customer, "stripe_customer_id": "cus_1"}) == []


def test_offer_events():
    offer = {"name": "Lab", "archived": False}
    assert event_types("offer", None, offer) == ["offer.created"]
    assert event_types("offer", offer, {**offer, "archived": True}) == ["offer.archived"]
    assert event_types("offer", {**offer, "archived": True}, {**offer, "archived": True}) == []
    assert event_types("offer_version", None, {"version": 1}) == []
    assert event_types("offer_version", None, {"version": 2}) == ["offer.version_created"]


def test_subscription_changes_are_named_by_their_history_entry():
    assert event_types("subscription_history", None, {"type": "canceled"}) == ["subscription.canceled"]
    assert event_types("subscription_history", None, {"type": "changed"}) == ["subscription.updated"]
    assert event_types("subscription_history", None, {"type": "option_granted"}) == ["subscription.option_granted"]
    assert event_types("subscription_history", {"type": "canceled"}, {"type": "canceled"}) == []
    assert subscription_event("paused") == "subscription.paused"


def test_a_device_is_attached_when_new_or_moved_only():
    device = {"subscription_id": "sub_1", "counters": {"ops": 1}}
    assert event_types("device", None, device) == ["device.attached"]
    assert event_types("device", device, {**device, "counters": {"ops": 2}}) == []
    assert event_types("device", device, {**device, "subscription_id": "sub_2"}) == ["device.attached"]


def test_a_usage_event_is_news_once():
    event = {"event_id": "e1", "quantity": "3"}
    assert event_types("usage_event", None, event) == ["usage.recorded"]
    assert event_types("usage_event", event, {**event, "net_quantity": "2"}) == []


@pytest.mark.parametrize("kind", ["invoice", "customer", "credit_note", "device", "usage_event", "merchant", "x"])
def test_a_deleted_record_or_an_unknown_kind_is_no_event(kind):
    assert event_types(kind, {"status": "open", "name": "x"}, None) == []
    assert event_types("unknown", None, {"status": "open"}) == []


statuses = st.sampled_from(["draft", "open", "paid", "void", "uncollectible"])
attempt = st.fixed_dictionaries({"status": st.sampled_from(["pending", "failed", "succeeded"])})


@given(statuses, st.lists(attempt, max_size=4), statuses, st.lists(attempt, max_size=4))
def test_an_invoice_event_is_never_announced_twice_by_one_write(old_status, old_attempts, new_status, new_attempts):
    old = invoice(status=old_status, payment_attempts=old_attempts)
    new = invoice(status=new_status, payment_attempts=old_attempts + new_attempts)
    events = event_types("invoice", old, new)
    assert len(events) == len(set(events))
    assert event_types("invoice", new, new) == []  # the same image again (a record handed twice) is no news
    if new_status == "draft":
        assert events == []
    if "invoice.paid" in events:
        assert new_status == "paid"
