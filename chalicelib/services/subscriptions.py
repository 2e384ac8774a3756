"""Subscriptions: subscribe, change, cancel, reactivate, pause, resume, the
history of every change, and the upcoming invoice.

Every use case reads the subscription consistently, lets the domain decide
(`lifecycle.transition` for the state, `proration` and `rating` for money),
and saves the next version with its history record in one conditional
transaction (`store.save_subscription`): a concurrent change loses with 409
`version_conflict` and nothing of it is written. The domain event is
derived from the history record written (services/domain_events.py): none
for a change that was not written, and never lost for one that was.

Invoices to issue now (the first period's fees, an immediate change or
cancellation, a resume into an unpaid period) are computed here with the
domain and kept on the subscription as `pending_invoice_items`, with
`next_billing_at` (the due index) set to when they are due: the billing run
issues them, together with the boundary invoice when that is due too, one
invoice per billing of a subscription. Until it has, the upcoming invoice
shows them.

Actors in the history: "key:<key prefix>", "user:<email>", "operator", "system".
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from chalicelib.clock import clock, isoformat
from chalicelib.domain import catalog, invoicing, lifecycle, proration
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.invoices import totals
from chalicelib.domain.money import ZERO
from chalicelib.domain.periods import Interval, Period, period_bounds, period_start
from chalicelib.domain.rating import InvoiceLine, MeterUsage
from chalicelib.ids import new_id
from chalicelib.services import collecting, invoice_actions, invoices, issuing, offers
from chalicelib.services.subscription_changes import (
    commit, history_entry, public_fields, report_change, serialize, set_state, state_of,
)
from chalicelib.store import customers as customers_store
from chalicelib.store import merchants as merchants_store
from chalicelib.store import subscriptions as store
from chalicelib.store import invoices as invoice_store
from chalicelib.store import usage as usage_store
from chalicelib.observability import logger

# How far in the past a subscription may start: a merchant's "today" sent a
# little late, never a backdated history to invoice.
MAX_BACKDATE = timedelta(days=1)

# ---------------------------------------------------------------------------
# Use cases of the API


def create_subscription(merchant_id: str, fields: dict, actor: str, *, subscription_id: str | None = None) -> dict:
    """Subscribe a customer to an offer.

    `fields`: customer_id, offer_id, options, price_overrides, start_at
    (default now), trial_days (default the offer's), phases. Refused: an
    unknown customer or offer (404 naming the field), an archived offer
    (409 `offer_archived`), options or overrides the offer does not have
    (400 naming them), phases that are not ascending or whose offers bill
    another currency or interval (400). `subscription_id`: an id reserved
    beforehand (a checkout's), so that whoever finishes a crashed attempt
    finds the subscription it made."""
    now = clock().now()
    customer = _referenced(lambda: customers_store.get_customer(merchant_id, fields["customer_id"]), "customer_id")
    offer_id = fields["offer_id"]
    offer = _offer_for_new_terms(merchant_id, offer_id, "offer_id")
    merchant = merchants_store.get_merchant(merchant_id)
    tz = merchant.timezone or "UTC"

    start = fields.get("start_at") or now
    if start < now - MAX_BACKDATE:
        raise InvalidRequest("start_at: may be at most one day in the past", param="start_at")
    trial_days = offer.trial_days if fields.get("trial_days") is None else fields["trial_days"]
    anchor = period_start(start, Interval("day", trial_days), 1, tz) if trial_days else start
    if trial_days:
        current = Period(start, anchor)
        period_index = -1
    else:
        current = period_bounds(anchor, offer.interval, 0, tz)
        period_index = 0
    commitment_ends_at = (
        period_start(anchor, Interval("month", offer.commitment_months), 1, tz) if offer.commitment_months else None
    )

    options = list(fields.get("options") or [])
    overrides = fields.get("price_overrides") or None
    currency = billing_currency(customer, merchant, offer)
    version, terms = offers.terms_at(merchant_id, offer_id, current.start, currency)
    _check_choices(terms, options, overrides)
    phases = _checked_phases(merchant_id, offer, options, overrides, fields.get("phases") or [])

    subscription_id = subscription_id or new_id("sub")
    record = store.SubscriptionRecord(
        *store.SubscriptionRecord.key(merchant_id, subscription_id),
        merchant_id=merchant_id,
        subscription_id=subscription_id,
        customer_id=customer.customer_id,
        status="trialing",
        paused=False,
        cancel_at_period_end=False,
        offer_id=offer_id,
        offer_version=version,
        currency=terms.currency,
        options=options,
        price_overrides=overrides,
        billing_interval=offer.billing_interval,
        interval_count=offer.interval_count,
        timezone=tz,
        start_at=isoformat(start),
        trial_end=isoformat(anchor) if trial_days else None,
        anchor=isoformat(anchor),
        current_period_start=isoformat(current.start),
        current_period_end=isoformat(current.end),
        period_index=period_index,
        commitment_ends_at=isoformat(commitment_ends_at) if commitment_ends_at else None,
        phases=phases,
        pending_change=None,
        pending_invoice_items=[],
        created_at=isoformat(now),
        updated_at=isoformat(now),
    )
    if trial_days:
        # Nothing is due before the trial ends: the run bills the first
        # period's fees at the trial's end.
        record.due_at = isoformat(anchor)
    else:
        # The first invoice holds the first period's fees, in advance.
        plan = lifecycle.Plan(offer_id, tuple(options), overrides or None)
        terms_read = lambda _offer_id, _at: (version, terms)  # noqa: E731  (the version just read)
        opening = list(invoicing.first_invoice(plan, current, terms_read).lines)
        _add_pending_item(record, "opening", opening, current, due=start, at=now)
        record.fees_billed_until = isoformat(current.end)
        if record.due_at is None:
            record.due_at = isoformat(current.end)
        due_now = sum((line.amount for line in opening), ZERO) > 0
        record.status = "incomplete" if due_now and customer.default_card is None else "active"
    entry = history_entry(record, None, "created", actor, now)
    store.create_subscription(record, entry)
    report_change(record, entry)
    return _issue_now(record)


def get_subscription(merchant_id: str, subscription_id: str) -> dict:
    return serialize(store.get_subscription(merchant_id, subscription_id))


def list_subscriptions(
    merchant_id: str, *, customer_id: str | None = None, status: str | None = None, limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[dict], str | None]:
    """The merchant's subscriptions, or one customer's, optionally of one status."""
    if status is not None and status not in lifecycle.STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(lifecycle.STATUSES)}", param="status")
    if customer_id is not None:
        # A customer the merchant does not have is 404, not an empty list: a
        # mistyped id is told, and nothing is told about other merchants'.
        _referenced(lambda: customers_store.get_customer(merchant_id, customer_id), "customer_id")
        records, next_cursor = store.customer_subscriptions(
            merchant_id, customer_id, status=status, limit=limit, cursor=cursor
        )
    else:
        records, next_cursor = store.list_subscriptions(merchant_id, status, limit, cursor)
    return [serialize(record) for record in records], next_cursor


def customer_subscriptions(merchant_id: str, customer_id: str) -> list[dict]:
    """Every subscription of the customer, newest first (the customer page)."""
    records, _ = store.customer_subscriptions(merchant_id, customer_id)
    return [serialize(record) for record in records]


def change_subscription(merchant_id: str, subscription_id: str, fields: dict, actor: str, *,
                        reason: str | None = None) -> dict:
    """Change the offer, options or price overrides (an option granted free
    is `{"<option>": {"amount": "0.00"}}`), `effective`
    "immediately" (an invoice now: usage so far under the old terms, credit
    of the old fees' unused part, new fees for the rest of the period) or at
    "period_end" (scheduled; a later change replaces it, and scheduling the
    current terms removes it).

    Changing the offer drops the phases still to come (the merchant chose
    the terms by hand); changing only options or overrides keeps them. The
    new offer must be live and bill the same currency and interval.
    `reason` (a compensation...) is kept on the change's history entry."""
    now = clock().now()
    record = _caught_up(merchant_id, subscription_id, now)
    before = public_fields(record)
    lifecycle.transition(state_of(record), "change", lifecycle.Context(at=now))
    if not any(name in fields for name in ("offer_id", "options", "price_overrides")):
        raise InvalidRequest("give offer_id, options or price_overrides to change", param="offer_id")

    current = _plan(record)
    offer_id = fields.get("offer_id", record.offer_id)
    if offer_id != record.offer_id:
        offer = _offer_for_new_terms(merchant_id, offer_id, "offer_id")
        _check_same_billing(record, offer, "offer_id")
    options = list(fields["options"]) if "options" in fields else list(record.options or [])
    overrides = fields["price_overrides"] if "price_overrides" in fields else record.price_overrides
    new = lifecycle.Plan(offer_id, tuple(options), overrides or None)
    period = _current_period(record)

    if fields["effective"] == "period_end":
        _, terms = offers.terms_at(merchant_id, offer_id, period.end, record.currency,
                                   record.offer_version if offer_id == record.offer_id else None)
        _check_choices(terms, options, overrides)
        if new == current:
            if record.pending_change is None:
                raise InvalidRequest("the subscription already has these terms", param="offer_id")
            record.pending_change = None
        else:
            if offer_id != record.offer_id:
                record.phases = []
            record.pending_change = {
                "offer_id": offer_id,
                "options": options,
                "price_overrides": overrides or None,
                "requested_at": isoformat(now),
                "effective_at": isoformat(period.end),
            }
        return commit(record, before, "change_scheduled", actor, now, reason)

    new_version, new_terms = offers.terms_at(merchant_id, offer_id, period.start, record.currency,
                                             record.offer_version if offer_id == record.offer_id else None)
    _check_choices(new_terms, options, overrides)
    if new == current and record.pending_change is None:
        raise InvalidRequest("the subscription already has these terms", param="offer_id")
    if record.status != "trialing" and new != current:
        draft = invoicing.change_now(issuing.account_of(record), _usage(record, period),
                                     issuing.terms_lookup(merchant_id, billing=False, subscription=record), now, new)
        if now < period.start:
            # Nothing has started: the first invoice is simply the new terms'.
            record.pending_invoice_items = [i for i in record.pending_invoice_items or []
                                            if i["reason"] != "opening"]
            _add_pending_item(record, "opening", list(draft.lines), period, due=period.start, at=now)
        else:
            if proration.worth_invoicing(list(draft.lines)):
                _add_pending_item(record, "change", list(draft.lines), period, due=now, at=now)
            # Usage so far belongs to the old terms, invoiced or not (free in its included units).
            record.usage_billed = issuing.usage_billed_field(period.start, draft.billed_inside)
    if offer_id != record.offer_id:
        record.phases = []
    record.offer_id = offer_id
    record.offer_version = new_version
    record.options = options
    record.price_overrides = overrides or None
    record.pending_change = None
    commit(record, before, "changed", actor, now, reason)
    return _issue_now(record)


def cancel_subscription(
    merchant_id: str, subscription_id: str, *, at_period_end: bool = True, reason: str | None = None,
    force: bool = False, actor: str,
) -> dict:
    """Cancel at the period end (default: the subscription stays live until
    then, its last invoice holds the last period's usage) or now (an invoice
    now with the usage so far and a credit for the unused fees).

    Before `commitment_ends_at` a cancellation is refused (409
    `commitment_active`) unless `force` (the platform operator only: the
    API passes it from /admin routes)."""
    now = clock().now()
    record = _caught_up(merchant_id, subscription_id, now)
    if not at_period_end and record.status == "incomplete":
        record = _void_unpaid_opening(record)
    before = public_fields(record)
    period = _current_period(record)
    context = lifecycle.Context(
        at=now, period_end=period.end, commitment_ends_at=_instant_or_none(record.commitment_ends_at), forced=force
    )
    action = "cancel_at_period_end" if at_period_end else "cancel_now"
    state = lifecycle.transition(state_of(record), action, context)
    record.cancellation_reason = "operator" if actor == "operator" else "customer"
    record.cancellation_comment = reason
    if at_period_end:
        set_state(record, state, now)
        record.cancel_at = isoformat(period.end)
        return commit(record, before, "cancellation_scheduled", actor, now, reason)
    if record.status == "incomplete" or now < period.start:
        # Never started (not yet, or its first invoice never paid and now
        # void): its first invoice is dropped, there is nothing to credit.
        record.pending_invoice_items = [i for i in record.pending_invoice_items or [] if i["reason"] != "opening"]
        record.fees_billed_until = None
    draft = invoicing.cancel_now(issuing.account_of(record), _usage(record, period),
                                 issuing.terms_lookup(merchant_id, billing=False, subscription=record), now)
    if proration.worth_invoicing(list(draft.lines)):
        _add_pending_item(record, "cancel", list(draft.lines), period, due=now, at=now)
    if draft.billed_inside is not None:
        record.usage_billed = issuing.usage_billed_field(period.start, draft.billed_inside)
    set_state(record, state, now)
    if record.deferred_usage_periods:
        # Usage of periods closed while paused waits for no resume now: the
        # last invoice (issued below) bills it.
        record.due_at = isoformat(now)
    commit(record, before, "canceled", actor, now, reason)
    return _issue_now(record)


def reactivate_subscription(merchant_id: str, subscription_id: str, actor: str) -> dict:
    """Undo a scheduled cancellation."""
    now = clock().now()
    record = store.get_subscription(merchant_id, subscription_id, consistent=True)
    before = public_fields(record)
    state = lifecycle.transition(state_of(record), "reactivate", lifecycle.Context(at=now))
    set_state(record, state, now)
    record.cancel_at = None
    record.cancellation_reason = None
    record.cancellation_comment = None
    return commit(record, before, "reactivated", actor, now)


def pause_subscription(merchant_id: str, subscription_id: str, actor: str) -> dict:
    """No fees from the next boundary on (the current period, paid in
    advance, is not refunded); usage keeps being recorded and goes on the
    first invoice after the resume."""
    now = clock().now()
    record = _caught_up(merchant_id, subscription_id, now)
    before = public_fields(record)
    state = lifecycle.transition(state_of(record), "pause", lifecycle.Context(at=now))
    set_state(record, state, now)
    record.paused_at = isoformat(now)
    return commit(record, before, "paused", actor, now)


def resume_subscription(merchant_id: str, subscription_id: str, actor: str) -> dict:
    """Fees again from now: a period that opened while paused is billed for
    its rest (prorated); in the period the pause began nothing is billed."""
    now = clock().now()
    record = _caught_up(merchant_id, subscription_id, now)
    before = public_fields(record)
    state = lifecycle.transition(state_of(record), "resume", lifecycle.Context(at=now))
    period = _current_period(record)
    fees_billed = _fees_billed(record, period)
    lines = list(invoicing.resume_now(issuing.account_of(record), issuing.terms_lookup(merchant_id, billing=False, subscription=record),
                                      now).lines)
    if proration.worth_invoicing(lines):
        _add_pending_item(record, "resume", lines, period, due=now, at=now)
    if not fees_billed:
        record.fees_billed_until = isoformat(period.end)
    set_state(record, state, now)
    record.paused_at = None
    commit(record, before, "resumed", actor, now)
    return _issue_now(record)


def subscription_history(
    merchant_id: str, subscription_id: str, *, limit: int = 20, cursor: str | None = None,
    newest_first: bool = False,
) -> tuple[list[dict], str | None]:
    """Every change, oldest first (the console reads the newest first):
    {at, type, actor, before, after, reason}."""
    store.get_subscription(merchant_id, subscription_id)
    records, next_cursor = store.history(merchant_id, subscription_id, limit, cursor, newest_first=newest_first)
    return [
        {
            "version": int(entry.version),
            "at": entry.at,
            "type": entry.type,
            "actor": entry.actor,
            "before": entry.before,
            "after": entry.after,
            "reason": entry.reason,
        }
        for entry in records
    ], next_cursor


def upcoming_invoice(merchant_id: str, subscription_id: str) -> dict:
    """The next invoice the billing run will issue, as it stands now.

    With invoices pending (the first period's fees, an immediate change or
    cancellation, a resume), that is them, due now. Otherwise it is the
    boundary invoice at the current period's end: the closed period's usage
    in arrears (the trial's is not charged; usage already billed inside the
    period is not billed again; periods closed while paused are added after
    a resume) and the next period's fees and options in advance, under the
    terms of that period (a scheduled change, a phase, the offer's version
    in force at its start), none when a cancellation is scheduled. Tax at the
    merchant's rate for the customer's country, then the customer's credit.

    409 `no_upcoming_invoice`: canceled with nothing pending, or paused
    (nothing is billed until it resumes)."""
    record, billed = invoice_store.subscription_for_billing(merchant_id, subscription_id)
    items = record.pending_invoice_items or []
    period = _current_period(record)
    if items:
        lines = [InvoiceLine.from_dict(line) for item in items for line in item["lines"]]
        billing_at = min(_instant(item["due_at"]) for item in items)
        starts = [_instant(item["period_start"]) for item in items]
        ends = [_instant(item["period_end"]) for item in items]
        invoice_period = Period(min(starts), max(ends))
    elif record.status == "canceled":
        raise Conflict("the subscription is canceled: no invoice will follow", code="no_upcoming_invoice")
    elif record.paused:
        raise Conflict(
            "the subscription is paused: nothing is billed until it resumes; its usage goes on the first "
            "invoice after the resume",
            code="no_upcoming_invoice",
        )
    else:
        usage = usage_store.usage_before(merchant_id, subscription_id, period.end)
        lines = list(invoicing.at_boundary(issuing.account_of(record), issuing.billed_periods(billed), usage,
                                           issuing.terms_lookup(merchant_id, billing=False, subscription=record)).lines)
        billing_at = period.end
        invoice_period = period
    customer = customers_store.get_customer(merchant_id, record.customer_id)
    merchant = merchants_store.get_merchant(merchant_id)
    rate = merchant.tax_rate_table().get(customer.country)
    money = totals(
        lines,
        record.currency,
        None if rate is None else Decimal(rate),
        issuing.reverse_charge(merchant, customer),
        customer.credit_balance(record.currency),
    )
    return {
        "object": "invoice",
        "id": None,
        "status": "upcoming",
        "customer_id": record.customer_id,
        "subscription_id": record.subscription_id,
        "currency": record.currency,
        "billing_at": isoformat(billing_at),
        "period_start": isoformat(invoice_period.start),
        "period_end": isoformat(invoice_period.end),
        "lines": issuing.labelled_lines(lines, customer.locale or merchant.locale, merchant.timezone),
        **money.as_dict(),
        "note": money.note,
    }


# ---------------------------------------------------------------------------
# For the billing run and the payments


# ---------------------------------------------------------------------------
# Internals


def _plan(record) -> lifecycle.Plan:
    return lifecycle.Plan(record.offer_id, tuple(record.options or []), record.price_overrides or None)


def _current_period(record) -> Period:
    return Period(_instant(record.current_period_start), _instant(record.current_period_end))


def _fees_billed(record, period: Period) -> bool:
    return record.fees_billed_until is not None and _instant(record.fees_billed_until) >= period.end


def _usage(record, period: Period) -> dict[str, dict[str, MeterUsage]]:
    """The current period's usage, keyed as the invoice rule reads it."""
    key = invoicing.key(period.start)
    return {key: usage_store.usage_for(record.merchant_id, record.subscription_id, key)}


def _caught_up(merchant_id: str, subscription_id: str, now: datetime) -> store.SubscriptionRecord:
    """The subscription, read consistently, once every boundary that has
    passed is invoiced: a change or cancellation a few minutes after a
    boundary, before the run billed it, applies to the period it falls in."""
    record = store.get_subscription(merchant_id, subscription_id, consistent=True)
    if record.status != "canceled" and _instant(record.current_period_end) <= now:
        issuing.bill_subscription(merchant_id, subscription_id, now=now)
        record = store.get_subscription(merchant_id, subscription_id, consistent=True)
    return record


def _void_unpaid_opening(record) -> store.SubscriptionRecord:
    """A subscription whose first invoice was never paid is canceled with
    that invoice void: it never started, the customer owes nothing for it.
    If Stripe took the money meanwhile, the void is refused and the
    subscription is active: it is then canceled like any other."""
    for invoice in invoices.open_invoices_of_subscription(record.merchant_id, record.customer_id,
                                                          record.subscription_id):
        if invoice["billing_reason"] == "subscription_create" and not Decimal(invoice["amount_paid"]):
            try:
                invoice_actions.void_invoice(record.merchant_id, invoice["id"])
            except Conflict:
                pass
    return store.get_subscription(record.merchant_id, record.subscription_id, consistent=True)


def _issue_now(record) -> dict:
    """Issue (and charge) what the subscription queued for now, as Stripe
    does, without waiting for the run; the answer shows the subscription
    after it. A failure here loses nothing: the queued invoice stays due
    and the next run issues it."""
    now = clock().now()
    due = [item for item in record.pending_invoice_items or [] if _instant(item["due_at"]) <= now]
    final = record.status == "canceled" and record.due_at is not None and _instant(record.due_at) <= now
    if not due and not final:
        return serialize(record)
    try:
        with collecting.interactive():
            issuing.bill_subscription(record.merchant_id, record.subscription_id)
    except Exception:  # the change is saved; the billing run issues what is still due
        logger.exception("invoice not issued now; the billing run will", extra={
            "subscription_id": record.subscription_id})
        return serialize(record)
    return serialize(store.get_subscription(record.merchant_id, record.subscription_id, consistent=True))


def _add_pending_item(record, reason: str, lines: list[InvoiceLine], period: Period, *, due: datetime,
                      at: datetime) -> None:
    if not lines:
        return
    due = max(due, _instant(record.start_at))
    item = {
        "id": new_id("pii"),
        "reason": reason,
        "created_at": isoformat(at),
        "due_at": isoformat(due),
        "currency": record.currency,
        "period_start": isoformat(period.start),
        "period_end": isoformat(period.end),
        "lines": [line.as_dict() for line in lines],
    }
    record.pending_invoice_items = [*(record.pending_invoice_items or []), item]
    if record.due_at is None or _instant(record.due_at) > due:
        record.due_at = isoformat(due)


def _referenced(load, param: str):
    """A record the request names by id: 404 naming the field when absent."""
    try:
        return load()
    except NotFound as error:
        raise NotFound(error.message, param=param) from None


def _offer_for_new_terms(merchant_id: str, offer_id: str, param: str) -> catalog.Offer:
    """The offer (latest version) a subscription is about to use: 404 when
    unknown, 409 `offer_archived` when archived (it still exists, but takes
    no new subscriptions)."""
    offer = _referenced(lambda: offers.load_offer(merchant_id, offer_id), param)
    if offers.offer_archived(merchant_id, offer_id):
        raise Conflict(f"{param}: offer {offer_id} is archived and takes no new subscriptions",
                       param=param, code="offer_archived")
    return offer


def billing_currency(customer, merchant, offer: catalog.Offer) -> str:
    """The currency a new subscription bills in: the customer's `currency`,
    else the merchant's price list for the customer's country, else the
    offer's own; the offer must have prices in it (`currency_options`)."""
    priced = {offer.currency, *(offer.currency_options or {})}
    if customer.currency:
        if customer.currency not in priced:
            raise InvalidRequest(
                f"offer_id: the customer pays in {customer.currency} and offer {offer.code!r} has no prices in it "
                f"(it bills in {', '.join(sorted(priced))}); amounts are never converted", param="offer_id")
        return customer.currency
    listed = merchant.price_list_table().get(customer.country or "")
    # A price list names the currency where the offer has prices in it; else the offer's own.
    return listed if listed in priced else offer.currency


def _check_same_billing(record_or_offer, offer: catalog.Offer, param: str) -> None:
    currency = record_or_offer.currency
    interval = (record_or_offer.billing_interval, int(record_or_offer.interval_count))
    if offer.currency != currency and currency not in (offer.currency_options or {}):
        raise InvalidRequest(
            f"{param}: the offer bills in {offer.currency}, the subscription in {currency}; "
            "amounts are never converted", param=param,
        )
    if (offer.billing_interval, offer.interval_count) != interval:
        raise InvalidRequest(
            f"{param}: the offer bills every {offer.interval_count} {offer.billing_interval}, the subscription "
            f"every {interval[1]} {interval[0]}; its periods step from one anchor with one interval",
            param=param,
        )


def _check_choices(terms: catalog.Offer, options, overrides, *, where: str = "") -> None:
    catalog.check_options(terms, options, param=f"{where}options")
    catalog.apply_price_overrides(terms.currency, terms, overrides, param=f"{where}price_overrides")


def _checked_phases(merchant_id: str, offer: catalog.Offer, options: list, overrides, phases: list) -> list[dict]:
    """The phases as stored, each checked: ascending after_periods, a live
    offer billing like the subscription's, options and overrides it has."""
    checked = []
    previous = 0
    for i, phase in enumerate(phases):
        where = f"phases[{i}]"
        after = phase["after_periods"]
        if after <= previous:
            raise InvalidRequest(f"{where}.after_periods: phases must have strictly ascending after_periods "
                                 f"({after} after {previous})", param=f"{where}.after_periods")
        previous = after
        phase_offer = _offer_for_new_terms(merchant_id, phase["offer_id"], f"{where}.offer_id")
        _check_same_billing(offer, phase_offer, f"{where}.offer_id")
        own_options = phase.get("options")
        own_overrides = phase.get("price_overrides")
        try:
            _check_choices(
                phase_offer,
                options if own_options is None else own_options,
                overrides if own_overrides is None else own_overrides,
                where=f"{where}.",
            )
        except InvalidRequest as error:
            if own_options is None and error.param and error.param.startswith(f"{where}.options"):
                raise InvalidRequest(
                    f"{where}.offer_id: the offer of this phase does not have the subscription's options "
                    f"({error.message}); give the phase its own options", param=f"{where}.offer_id",
                ) from None
            if own_overrides is None and error.param and error.param.startswith(f"{where}.price_overrides"):
                raise InvalidRequest(
                    f"{where}.offer_id: the subscription's price_overrides do not fit the offer of this phase "
                    f"({error.message}); give the phase its own price_overrides", param=f"{where}.offer_id",
                ) from None
            raise
        stored = {"after_periods": after, "offer_id": phase["offer_id"]}
        if own_options is not None:
            stored["options"] = list(own_options)
        if own_overrides is not None:
            stored["price_overrides"] = own_overrides
        checked.append(stored)
    return checked


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _instant_or_none(text: str | None) -> datetime | None:
    return None if text is None else _instant(text)
