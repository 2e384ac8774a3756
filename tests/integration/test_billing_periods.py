"""The billing run over the calendar (moto, localstripe): periods anchored
on 31 January through short and leap Februaries, a change on day 10
prorated on an invoice issued at once, a subscription three months late
caught up one invoice per period in order, a trial then a cancellation at
period end, and paused periods billed after the resume.

The helpers and the clock's start (1 Nov 2026 in Paris) are test_billing.py's."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chalicelib import jobs
from chalicelib.services import issuing
from tests.integration.test_billing import (  # noqa: F401  (clock_start is a fixture)
    DEC_1, JAN_1, NOV_1, UTC, bill, charges_of, clock_start, invoices_of, iso, new_customer, record_usage,
    simple_offer, subscribe,
)


# ---------------------------------------------------------------------------
# Calendars, changes, catch-up


@pytest.mark.parametrize("year, february_end", [(2027, 28), (2028, 29)])
def test_periods_anchored_on_31_january(new_merchant, clock, year, february_end):
    merchant = new_merchant(timezone="UTC")
    customer_id = new_customer(merchant)
    start = datetime(year, 1, 31, tzinfo=UTC)
    clock.set(start)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(start))
    bill(merchant, sub["id"])
    for moment in (datetime(year, 2, february_end, 0, 1, tzinfo=UTC), datetime(year, 3, 31, 0, 1, tzinfo=UTC)):
        clock.set(moment)
        jobs.billing_scheduler(clock.now(), inline=True)
    periods = [(i["lines"][-1]["period_start"], i["lines"][-1]["period_end"]) for i in invoices_of(merchant, sub["id"])]
    feb = f"{year}-02-{february_end:02d}T00:00:00Z"
    assert periods == [
        (f"{year}-01-31T00:00:00Z", feb),
        (feb, f"{year}-03-31T00:00:00Z"),
        (f"{year}-03-31T00:00:00Z", f"{year}-04-30T00:00:00Z"),
    ]
    assert merchant.get(f"/subscriptions/{sub['id']}").json["next_billing_at"] == f"{year}-04-30T00:00:00Z"


def test_a_change_on_day_10_is_prorated_on_an_invoice_now(new_merchant, clock):
    """November (UTC merchant) has 30 days; the change at 10 Nov 12:00 leaves
    20 whole days: 20/30 of the fees is credited (old) and charged (new).
      montage so far   10 x 1.20                  = 12.00
      unused base      -49.00 x 20/30             = -32.67
      base, rest       49.00 x 20/30              =  32.67
      express, rest    30.00 x 20/30              =  20.00
      subtotal 32.00, VAT 6.40, total 38.40"""
    merchant = new_merchant(timezone="UTC")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    clock.set(start)
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(start))
    bill(merchant, sub["id"])
    clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
    record_usage(merchant, sub["id"], datetime(2026, 11, 5, tzinfo=UTC), montages="10")
    changed = merchant.post(f"/subscriptions/{sub['id']}/change", {"options": ["express"], "effective": "immediately"})
    assert changed.status == 200, changed
    # Issued and charged with the change: nothing is left queued.
    issued = invoices_of(merchant, sub["id"])[-1]
    assert issuing.invoice_now(merchant.merchant["id"], sub["id"]) == []
    assert [(l["kind"], l["component"], l["amount"]) for l in issued["lines"]] == [
        ("usage", "montage", "12.00"),
        ("proration", "base", "-32.67"),
        ("fee", "base", "32.67"),
        ("option", "express", "20.00"),
    ]
    assert (issued["subtotal"], issued["tax"], issued["total"]) == ("32.00", [{"rate": "20.0", "amount": "6.40"}],
                                                                     "38.40")
    assert issued["status"] == "paid" and issued["billing_reason"] == "subscription_update"
    # At the boundary the rest of November's usage only, and December with the option.
    clock.set(datetime(2026, 11, 25, tzinfo=UTC))
    record_usage(merchant, sub["id"], datetime(2026, 11, 20, tzinfo=UTC), montages="4")
    clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    bill(merchant, sub["id"])
    december = invoices_of(merchant, sub["id"])[-1]
    assert [(l["kind"], l["component"], l["quantity"], l["amount"]) for l in december["lines"]] == [
        ("usage", "montage", "4", "4.80"),
        ("fee", "base", "1", "49.00"),
        ("option", "express", "1", "30.00"),
    ]


def test_a_subscription_three_months_late_catches_up_one_invoice_per_period_in_order(merchant, clock):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    for month, count in ((11, 1), (12, 2), (1, 3)):
        clock.set(datetime(2026 if month > 1 else 2027, month, 15, tzinfo=UTC))
        record_usage(merchant, sub["id"], clock.now(), montages=str(count))
    # Nothing ran since the start: 1 Feb (Paris) plus a day.
    clock.set(datetime(2027, 2, 1, 12, tzinfo=UTC))
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 1
    invoices = invoices_of(merchant, sub["id"])
    # The first invoice was issued at the start, in 2026; numbers restart each year.
    assert [i["number"] for i in invoices] == ["OD2026-000001"] + [f"OD2027-00000{n}" for n in range(1, 4)]
    assert [i["billing_reason"] for i in invoices] == ["subscription_create"] + ["subscription_cycle"] * 3
    usage = [[(l["quantity"], l["period_start"]) for l in i["lines"] if l["kind"] == "usage"] for i in invoices]
    assert usage == [[], [("1", iso(NOV_1))], [("2", iso(DEC_1))], [("3", iso(JAN_1))]]
    assert all(i["status"] == "paid" for i in invoices)
    assert len(charges_of(merchant, customer_id)) == 4
    assert merchant.get(f"/subscriptions/{sub['id']}").json["current_period_start"] == "2027-01-31T23:00:00Z"


def test_trial_then_cancel_at_period_end(merchant, clock):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1), trial_days=14)
    clock.set(NOV_1 + timedelta(days=3))
    record_usage(merchant, sub["id"], NOV_1 + timedelta(days=2), montages="7")
    clock.set(NOV_1 + timedelta(days=14, minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    [first] = invoices_of(merchant, sub["id"])
    # No usage charged during the trial; the first paid period's fees.
    assert [(l["kind"], l["amount"]) for l in first["lines"]] == [("fee", "49.00")]
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    # Late usage of the trial is still not charged.
    record_usage(merchant, sub["id"], NOV_1 + timedelta(days=3), montages="9")
    assert merchant.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": True}).status == 200
    period_end = merchant.get(f"/subscriptions/{sub['id']}").json["current_period_end"]
    clock.set(clock.now() + timedelta(days=3))
    record_usage(merchant, sub["id"], clock.now(), montages="2")
    clock.set(datetime.fromisoformat(period_end.replace("Z", "+00:00")) + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    last = invoices_of(merchant, sub["id"])[-1]
    assert [(l["kind"], l["quantity"], l["amount"]) for l in last["lines"]] == [("usage", "2", "2.40")]
    canceled = merchant.get(f"/subscriptions/{sub['id']}").json
    assert canceled["status"] == "canceled" and canceled["next_billing_at"] is None


def test_paused_periods_bill_no_fees_and_their_usage_after_the_resume(merchant, clock):
    customer_id = new_customer(merchant)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    clock.set(datetime(2026, 11, 20, tzinfo=UTC))
    assert merchant.post(f"/subscriptions/{sub['id']}/pause").status == 200
    record_usage(merchant, sub["id"], clock.now(), montages="3")
    clock.set(DEC_1 + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    assert len(invoices_of(merchant, sub["id"])) == 1  # nothing billed while paused
    clock.set(datetime(2026, 12, 10, tzinfo=UTC))
    record_usage(merchant, sub["id"], clock.now(), montages="4")
    clock.set(JAN_1 + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    assert len(invoices_of(merchant, sub["id"])) == 1
    clock.set(datetime(2027, 1, 10, tzinfo=UTC))
    assert merchant.post(f"/subscriptions/{sub['id']}/resume").status == 200
    jobs.billing_scheduler(clock.now(), inline=True)  # the rest of January's fees, now
    clock.set(datetime(2027, 1, 31, 23, 1, tzinfo=UTC))
    jobs.billing_scheduler(clock.now(), inline=True)
    invoices = invoices_of(merchant, sub["id"])
    resumed = invoices[-1]
    usage = [(l["quantity"], l["period_start"]) for l in resumed["lines"] if l["kind"] == "usage"]
    assert usage == [("3", iso(NOV_1)), ("4", iso(DEC_1)), ("0", iso(JAN_1))]
    assert [l["component"] for l in resumed["lines"] if l["kind"] == "fee"] == ["base"]
