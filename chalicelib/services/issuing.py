"""Issuing: one invoice per subscription boundary, and the invoices queued now.

The run (jobs.py) hands a worker one subscription; `bill_subscription`
issues every invoice it owes by now, in order, one per boundary (a
subscription several periods late catches up one invoice per missed
period), then hands them to collecting to be charged.

Order of the writes, so that a crash anywhere and a retry give one invoice:
1. Everything an invoice holds is computed from the subscription as read
   (consistently, with the usage it already billed): the closed period's
   usage in arrears, late usage of earlier periods, the usage of periods
   closed while paused once resumed, the next period's fees in advance
   under the plan it will run on, and the invoices the subscription queued
   (`pending_invoice_items`: the first period's fees, an immediate change or
   cancellation, a resume).
2. One transaction gives the invoice its number and writes it open, moves
   the merchant's counter, moves the subscription to its next period (only
   from the version read), records the usage billed per period and the
   customer's credit balance. The invoice's id is derived from the
   subscription and the boundary: two workers, or a retried message, build
   the same invoice and only one transaction can commit. The invoice holds
   its first payment attempt, `pending`, with a lease (collecting).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain import invoicing, lifecycle, proration
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.invoices import InvoiceTotals, totals
from chalicelib.domain.money import ZERO, format_amount, format_decimal
from chalicelib.domain.periods import Interval, Period
from chalicelib.domain.rating import InvoiceLine, MeterUsage
from chalicelib.services import collecting, invoices
from chalicelib.services import subscription_changes as changes
from chalicelib.store import invoices as store
from chalicelib.store.due import due_items


# How many boundaries one message catches up on; the rest is still due and
# comes back with the next run.
MAX_BOUNDARIES_PER_MESSAGE = 48


REASON_BY_ITEM = {
    "opening": "subscription_create",
    "change": "subscription_update",
    "resume": "subscription_update",
    "cancel": "subscription_cancel",
}


def bill_subscription(merchant_id: str, subscription_id: str, *, boundary: str | None = None,
                      now: datetime | None = None) -> dict:
    """Issue every invoice the subscription owes by `now` (one per boundary,
    in order, with its queued invoices), then charge them. Safe to run any
    number of times, concurrently too: what was issued is not issued again.

    `boundary`: the boundary the message was enqueued for; if its invoice
    exists with a charge whose lease expired (a worker died), the charge is
    resumed here rather than waiting for the dunning run."""
    now = now or clock().now()
    issued: list[tuple[store.InvoiceRecord, object]] = []
    subscription = billed = None
    for _ in range(MAX_BOUNDARIES_PER_MESSAGE):
        if subscription is None:
            try:
                subscription, billed = store.subscription_for_billing(merchant_id, subscription_id)
            except NotFound:
                return {"subscription_id": subscription_id, "invoices": [], "status": "not_found"}
        try:
            outcome = _issue_next(subscription, billed, now)
        except Conflict:
            # Someone moved the subscription meanwhile (a change, another
            # worker): read it again and bill what is still due.
            subscription = billed = None
            continue
        if outcome is None:
            break
        if outcome.invoice is not None:
            issued.append((outcome.invoice, outcome.customer))
        subscription, billed = outcome.subscription, outcome.billed
    shown = []
    for invoice, customer in issued:
        if collecting.has_pending_attempt(invoice):
            invoice = collecting.collect(invoice, resume=False, now=now, customer=customer,
                               subscription_status=subscription.status)
        shown.append(invoice)
    if boundary and not issued:
        resumed = collecting.resume_boundary_invoice(merchant_id, subscription_id, boundary, now)
        if resumed is not None:
            shown.append(resumed)
    return {
        "subscription_id": subscription_id,
        "invoices": [{"id": r.invoice_id, "number": r.number, "status": r.status, "total": r.total} for r in shown],
    }


def invoice_now(merchant_id: str, subscription_id: str) -> list[dict]:
    """Issue and charge now what the subscription owes now (an immediate
    change or cancellation queued its invoice): the same as the billing run
    would do at its next pass, without waiting for it. Returns the invoices
    issued, as the API shows them."""
    result = bill_subscription(merchant_id, subscription_id)
    return [invoices.get_invoice(merchant_id, item["id"]) for item in result["invoices"]]


def due_billing_messages(now: datetime) -> list[dict]:
    """One message per subscription whose next billing is due by `now`:
    `{"type": "bill_subscription", "merchant_id", "subscription_id", "boundary"}`."""
    messages = []
    for pk, sk, due_at in due_items(now, ("subscription",)):
        merchant_id, subscription_id = pk.split("#", 1)
        messages.append({"type": "bill_subscription", "merchant_id": merchant_id,
                         "subscription_id": subscription_id, "boundary": due_at})
    return messages


@dataclass
class _Issued:
    subscription: object
    billed: dict
    invoice: store.InvoiceRecord | None
    customer: object


@dataclass
class _Draft:
    """One invoice being built, and what its transaction also writes."""

    lines: list[InvoiceLine] = field(default_factory=list)
    billed: list[store.BilledUsageRecord] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)
    ends: list[datetime] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def late_usage_arrived(merchant_id: str, subscription_id: str, now: datetime) -> None:
    """Usage was recorded for a canceled subscription (for a time before its
    cancellation): it is marked due, so the billing run issues the last
    invoice that bills it (`invoicing.after_cancel`). A live subscription
    needs nothing: its next boundary bills late usage."""
    from chalicelib.store import subscriptions as subscription_store

    for _ in range(5):
        subscription = subscription_store.get_subscription(merchant_id, subscription_id, consistent=True)
        if subscription.status != "canceled" or (
                subscription.due_at is not None and parse_instant(subscription.due_at) <= now):
            return
        before = changes.public_fields(subscription)
        subscription.due_at = isoformat(now)
        entry = changes.history_entry(subscription, before, "late_usage", "system", now)
        try:
            subscription_store.save_subscription(subscription, entry)
            return
        except Conflict:
            continue
    raise Conflict("the subscription kept changing while its late usage was queued; retry the request",
                   code="version_conflict")


def _issue_next(subscription, billed: dict, now: datetime) -> _Issued | None:
    """Issue the next invoice the subscription owes by `now`, moving the
    subscription on in the same transaction: its queued invoices due before
    its boundary, on their own; else the boundary at the end of its current
    period (if passed) with what was queued for that very instant; else its
    queued invoices due by now. None: nothing is owed. Conflict: the
    subscription moved meanwhile."""
    from chalicelib.store import subscriptions as subscription_store

    merchant_id = subscription.merchant_id
    live = subscription.status != "canceled"
    period_end = parse_instant(subscription.current_period_end)
    boundary = period_end if live and subscription.due_at is not None and period_end <= now else None
    queued = sorted(subscription.pending_invoice_items or [], key=lambda item: item["due_at"])
    if boundary is not None and any(parse_instant(item["due_at"]) < boundary for item in queued):
        # Invoices queued before the boundary come first, on their own
        # invoice (a subscription billed late keeps its invoices in order).
        items = [item for item in queued if parse_instant(item["due_at"]) < boundary]
        boundary = None
    else:
        until = boundary if boundary is not None else now
        items = [item for item in queued if parse_instant(item["due_at"]) <= until]
    # A canceled subscription marked due (usage arrived for a period it was
    # billed for) owes its late usage on a last invoice.
    final = not live and subscription.due_at is not None and parse_instant(subscription.due_at) <= now
    if boundary is None and not items and not final:
        return None

    merchant = collecting.merchant_settings(merchant_id)
    customer = collecting.customer_of(merchant_id, subscription.customer_id)
    before = changes.public_fields(subscription)
    draft = _Draft()
    for item in items:
        draft.lines += [InvoiceLine.from_dict(line) for line in item["lines"]]
        draft.starts.append(parse_instant(item["period_start"]))
        draft.ends.append(parse_instant(item["period_end"]))
        draft.reasons.append(REASON_BY_ITEM.get(item["reason"], "subscription_update"))
    issued = {item["id"] for item in items}
    subscription.pending_invoice_items = [i for i in subscription.pending_invoice_items or [] if i["id"] not in issued]

    invoice_id, invoice_date = _invoice_identity(subscription, boundary, items)
    change_type = "invoiced"
    opening = None
    if boundary is not None:
        change_type, opening = _boundary(subscription, billed, draft, invoice_id)
    elif not live:
        _after_cancel(subscription, billed, draft, invoice_id)

    currency = subscription.currency
    credit_before = customer.credit_balance(currency)
    money = _totals(draft.lines, currency, merchant, customer, credit_before)
    if boundary is not None:
        card_needed = money.amount_due > 0 and not collecting.card_of(customer)
        _advance(subscription, opening, boundary, card_needed)
    _reschedule(subscription)
    subscription.updated_at = isoformat(now)
    entry = changes.history_entry(subscription, before, change_type, "system", boundary or now)

    invoice = None
    if draft.lines:
        invoice = _invoice_record(invoice_id, invoice_date, subscription, customer, merchant, draft, money,
                                  credit_before, now)
        collecting.first_attempt(invoice, customer, merchant, now)
        credit_after = money.credit_balance

        def also(write) -> None:
            subscription_store.save_subscription(subscription, entry, write=write)
            for record in draft.billed:
                store.write_billed_usage(write, record)
            if credit_after != credit_before:
                from chalicelib.store import customers as customer_store

                customer_store.credit_balance_update(write, merchant_id, customer.customer_id, currency,
                                                     credit_before, credit_after)

        version_read = int(subscription.version)
        try:
            store.finalize(invoice, prefix=merchant.invoice_prefix, year=_year(now, merchant),
                           finalized_at=isoformat(now), new=True, also=also, then=invoice.status)
        except Conflict:
            subscription.version = version_read
            raise
    else:
        store.advance_without_invoice(subscription, entry, draft.billed)

    for record in draft.billed:
        billed[record.period_start] = record
    changes.report_change(subscription, entry)
    if invoice is not None:
        collecting.invoice_issued(invoice, subscription)
    return _Issued(subscription, billed, invoice, customer)


def _boundary(subscription, billed: dict, draft: _Draft, invoice_id: str):
    """Add the boundary's lines (invoicing.at_boundary) to `draft`. Returns
    (the history's change type, the opening, or None at the end)."""
    from chalicelib.store import usage as usage_store

    closed_end = parse_instant(subscription.current_period_end)
    usage = usage_store.usage_before(subscription.merchant_id, subscription.subscription_id, closed_end)
    rule = invoicing.at_boundary(account_of(subscription), billed_periods(billed), usage,
                                 terms_lookup(subscription.merchant_id, subscription=subscription))
    _take(draft, rule, subscription, billed, invoice_id)
    draft.reasons.append("subscription_cycle")
    if subscription.paused and rule.opening is not None:
        start = invoicing.key(parse_instant(subscription.current_period_start))
        deferred = list(subscription.deferred_usage_periods or [])
        subscription.deferred_usage_periods = deferred if start in deferred else [*deferred, start]
    else:
        subscription.deferred_usage_periods = []
    change_type = "trial_ended" if int(subscription.period_index) < 0 else "renewed"
    if rule.opening is None:
        return "canceled", None
    if rule.opening.plan.offer_id == subscription.offer_id and rule.opening.version != int(subscription.offer_version):
        # A price change migrated it: the new period opens on the offer's new version.
        change_type = "price_migrated"
    return change_type, rule.opening


def _after_cancel(subscription, billed: dict, draft: _Draft, invoice_id: str) -> None:
    """A canceled subscription's late usage (invoicing.after_cancel), added to `draft`."""
    from chalicelib.store import usage as usage_store

    end = parse_instant(subscription.current_period_end)
    usage = usage_store.usage_before(subscription.merchant_id, subscription.subscription_id, end)
    rule = invoicing.after_cancel(account_of(subscription), billed_periods(billed), usage,
                                  terms_lookup(subscription.merchant_id, subscription=subscription))
    if not rule.lines:
        return
    draft.reasons.append("late_usage")
    _take(draft, rule, subscription, billed, invoice_id)
    if rule.billed_inside is not None:
        subscription.usage_billed = usage_billed_field(parse_instant(subscription.current_period_start),
                                                       rule.billed_inside)


def _take(draft: _Draft, rule: invoicing.Draft, subscription, billed: dict, invoice_id: str) -> None:
    """The rule's lines and span on the draft, and its billed periods as the records the invoice's transaction writes."""
    draft.lines += rule.lines
    draft.starts.append(rule.start)
    draft.ends.append(rule.end)
    for start_key, period in rule.billed.items():
        draft.billed.append(store.billed_usage_record(
            subscription.merchant_id, subscription.subscription_id, start_key, dict(period.usage),
            None if period.free else invoice_id, plan=_plan_fields(period), free=period.free,
            previous=billed.get(start_key),
        ))


def _advance(subscription, opening, boundary: datetime, card_needed: bool) -> None:
    """The subscription after its boundary: the next period on the plan it
    runs on (a scheduled change and the phases applied, consumed), or
    canceled when the cancellation was for this boundary."""

    state = lifecycle.transition(
        changes.state_of(subscription), "period_ended",
        lifecycle.Context(at=boundary, card_needed=card_needed),
    )
    subscription.usage_billed = None
    if opening is None or state.status == "canceled":
        subscription.pending_change = None
        changes.set_state(subscription, state, boundary)
        return
    period, plan, version, index = opening.period, opening.plan, opening.version, opening.index
    subscription.current_period_start = isoformat(period.start)
    subscription.current_period_end = isoformat(period.end)
    subscription.period_index = index
    subscription.offer_id = plan.offer_id
    subscription.offer_version = version
    subscription.options = list(plan.options)
    subscription.price_overrides = plan.price_overrides or None
    subscription.phases = [p for p in subscription.phases or [] if p["after_periods"] > index]
    subscription.pending_change = None
    if not subscription.paused:
        subscription.fees_billed_until = isoformat(period.end)
    changes.set_state(subscription, state, boundary)


def _reschedule(subscription) -> None:
    """next_billing_at: the earliest of the queued invoices and, while it
    lives, the end of its current period; none when nothing more is billed."""
    candidates = [parse_instant(item["due_at"]) for item in subscription.pending_invoice_items or []]
    if subscription.status != "canceled":
        candidates.append(parse_instant(subscription.current_period_end))
    subscription.due_at = isoformat(min(candidates)) if candidates else None


def account_of(subscription) -> invoicing.Account:
    """The subscription as the invoice rule sees it."""
    period = Period(parse_instant(subscription.current_period_start), parse_instant(subscription.current_period_end))
    pending = subscription.pending_change
    return invoicing.Account(
        anchor=parse_instant(subscription.anchor),
        interval=Interval(subscription.billing_interval, int(subscription.interval_count)),
        timezone=subscription.timezone,
        period=period,
        period_index=int(subscription.period_index),
        plan=lifecycle.Plan(subscription.offer_id, tuple(subscription.options or []),
                            subscription.price_overrides or None),
        pending_change=None if pending is None else lifecycle.Plan(
            pending["offer_id"], tuple(pending.get("options") or []), pending.get("price_overrides") or None),
        phases=tuple(
            lifecycle.Phase(p["after_periods"], p["offer_id"],
                            None if p.get("options") is None else tuple(p["options"]), p.get("price_overrides"))
            for p in subscription.phases or []
        ),
        paused=bool(subscription.paused),
        cancel_at_period_end=bool(subscription.cancel_at_period_end),
        fees_billed=(subscription.fees_billed_until is not None
                     and parse_instant(subscription.fees_billed_until) >= period.end),
        billed_inside=_billed_inside(subscription, period),
        deferred=tuple(subscription.deferred_usage_periods or []),
    )


def billed_periods(billed: dict) -> dict[str, invoicing.BilledPeriod]:
    """The billed-usage records of a subscription as the invoice rule reads them."""
    periods = {}
    for start_key, record in billed.items():
        fields = record.plan_fields()
        plan = lifecycle.Plan(fields.get("offer_id", ""), tuple(fields.get("options") or []),
                              fields.get("price_overrides") or None)
        period = Period(parse_instant(start_key), parse_instant(fields["period_end"]))
        periods[start_key] = invoicing.BilledPeriod(period, plan, record.meters(), bool(record.free))
    return periods


def terms_lookup(merchant_id: str, *, billing: bool = True, subscription=None) -> invoicing.TermsAt:
    """The merchant's offers in force at an instant, for the invoice rule
    (the billing run's per-container cache, or a plain read). With
    `subscription`: in its currency, and its own offer at the version it
    holds through a grandfathering price change."""
    from chalicelib.services import offers

    read = offers.terms_for_billing if billing else offers.terms_at
    if subscription is None:
        return lambda offer_id, at: read(merchant_id, offer_id, at)
    currency, held_offer, held = subscription.currency, subscription.offer_id, int(subscription.offer_version)
    return lambda offer_id, at: read(merchant_id, offer_id, at, currency, held if offer_id == held_offer else None)


def usage_billed_field(period_start: datetime, inside: proration.BilledUsage) -> dict:
    """The subscription's `usage_billed`: what invoices issued inside its current period billed of its usage."""
    return {
        "period_start": isoformat(period_start),
        "until": isoformat(inside.until),
        "meters": {
            meter: {
                "total": format_decimal(value.total),
                "maximum": None if value.maximum is None else format_decimal(value.maximum),
                "last": None if value.last is None else format_decimal(value.last),
            }
            for meter, value in inside.meters.items()
        },
    }


def _plan_fields(period: invoicing.BilledPeriod) -> dict:
    return {"offer_id": period.plan.offer_id, "options": list(period.plan.options),
            "price_overrides": period.plan.price_overrides, "period_end": isoformat(period.period.end)}


def _billed_inside(subscription, period: Period) -> proration.BilledUsage | None:
    """What invoices issued inside the period (an immediate change or
    cancellation) already billed of its usage (the subscription's `usage_billed`)."""
    billed = subscription.usage_billed
    if not billed or billed.get("period_start") != isoformat(period.start):
        return None
    meters = {
        meter: MeterUsage(Decimal(value["total"]),
                          None if value.get("maximum") is None else Decimal(value["maximum"]),
                          None if value.get("last") is None else Decimal(value["last"]))
        for meter, value in billed["meters"].items()
    }
    return proration.BilledUsage(parse_instant(billed["until"]), meters)


def _totals(lines, currency: str, merchant, customer, credit: Decimal) -> InvoiceTotals:
    rate = merchant.tax_rate_table().get(customer.country)
    return totals(lines, currency, None if rate is None else Decimal(rate), reverse_charge(merchant, customer), credit)


def reverse_charge(merchant, customer) -> bool:
    """Whether the customer accounts for the VAT (domain/legal.py): marked
    tax_exempt, or a business of another EU member state than the merchant's."""
    from chalicelib.domain import legal

    return legal.reverse_charge_applies(
        seller_country=legal.seller_country(merchant.address_dict(), merchant.vat_number),
        buyer_country=customer.country, buyer_vat_number=customer.vat_number, tax_exempt=bool(customer.tax_exempt))


def _invoice_identity(subscription, boundary: datetime | None, items: list[dict]) -> tuple[str, datetime]:
    """The invoice's id and date: from the boundary it bills, or from the
    queued invoices it issues without one. Whoever bills the same thing
    names the same invoice."""
    if boundary is not None:
        return store.invoice_id_for(subscription.merchant_id, subscription.subscription_id, boundary), boundary
    # The earliest queued invoice's due time: what the subscription's
    # next_billing_at was, so a message for it can name this invoice again.
    if not items:
        # A canceled subscription's late usage: named by when it was marked due.
        date = parse_instant(subscription.due_at)
        return store.invoice_id_for(subscription.merchant_id, subscription.subscription_id, date, "late"), date
    date = min(parse_instant(item["due_at"]) for item in items)
    return store.invoice_id_for(subscription.merchant_id, subscription.subscription_id, date, "queued"), date


def _invoice_record(invoice_id: str, invoice_date: datetime, subscription, customer, merchant, draft: _Draft,
                    money: InvoiceTotals, credit_before: Decimal, now: datetime) -> store.InvoiceRecord:
    merchant_id = subscription.merchant_id
    currency = subscription.currency
    reason = next((r for r in ("subscription_create", "subscription_cycle", "subscription_cancel",
                               "subscription_update", "late_usage") if r in draft.reasons), "subscription_update")
    return store.InvoiceRecord(
        *store.InvoiceRecord.key(merchant_id, invoice_id),
        merchant_id=merchant_id,
        invoice_id=invoice_id,
        status="draft",
        billing_reason=reason,
        customer_id=subscription.customer_id,
        subscription_id=subscription.subscription_id,
        currency=currency,
        invoice_date=isoformat(invoice_date),
        period_start=isoformat(min(draft.starts)) if draft.starts else None,
        period_end=isoformat(max(draft.ends)) if draft.ends else None,
        lines=_json(labelled_lines(draft.lines, customer.locale or merchant.locale, merchant.timezone)),
        tax=_json(money.as_dict()["tax"]),
        subtotal=format_amount(money.subtotal, currency),
        tax_amount=format_amount(money.tax_amount, currency),
        total=format_amount(money.total, currency),
        credit_applied=format_amount(money.credit_applied, currency),
        amount_due=format_amount(money.amount_due, currency),
        amount_paid=format_amount(ZERO, currency),
        starting_balance=format_amount(credit_before, currency),
        ending_balance=format_amount(money.credit_balance, currency),
        reverse_charge=money.reverse_charge,
        seller=_json({"name": merchant.name, "timezone": merchant.timezone or "UTC",
                      "locale": merchant.locale or "en", "currency": merchant.default_currency,
                      **merchant.legal_identity()}),
        buyer=_json({"name": customer.name, "email": customer.email, "country": customer.country,
                     "tax_exempt": bool(customer.tax_exempt), "address": customer.address_dict(),
                     "vat_number": customer.vat_number, "external_id": customer.external_id}),
        locale=customer.locale or merchant.locale or "en",
        payment_attempts="[]",
        created_at=isoformat(now),
        version=1,
    )


def labelled_lines(lines, locale: str | None, timezone: str | None) -> list[dict]:
    """The lines as the invoice keeps them, each with its `label` in the
    customer's language (domain/invoice_labels.py): fixed with the invoice."""
    from chalicelib.domain import invoice_labels
    from chalicelib.domain.document_format import language_of

    language = language_of(locale)
    out = []
    for line in lines:
        data = line.as_dict()
        data["label"] = invoice_labels.line_label(data, language, timezone or "UTC")
        out.append(data)
    return out


def _year(now: datetime, merchant) -> int:
    return now.astimezone(ZoneInfo(merchant.timezone or "UTC")).year


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)
