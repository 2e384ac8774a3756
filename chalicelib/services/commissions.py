"""Accruals of commissions and royalties, from the domain events of the bus.

The commission feed (`commission_feed`: CommissionRule on the bus ->
CommissionQueue -> this module) hears `invoice.paid`, `credit_note.created`
and `credit_note.refunded`, and for the invoice the event names, books what
each payee earns on it (domain/commissions.py): its customer's reseller's
rules and every licensor's. It depends on no payment service, only on what
the event names and on the records as they are now, read consistently:
- an event is a reminder, not the data: the invoice and its credit notes
  are read again, so events arriving late, twice or out of order (a credit
  note heard before its invoice's payment) book the same lines;
- every accrual and reversal is booked once (store/commissions.py: a marker
  per payee and invoice line or credit note line, put if absent in the same
  transaction as the line), so a redelivered event, two workers on the same
  invoice or two payments heard at once never double one;
- an accrual is booked in the month the invoice was paid, a reversal in its
  credit note's month (never before the payment's), on the merchant's
  calendar; a month whose statement is issued passes it to the next.

A payee earns on invoices paid after it was created. Rules are fixed once
the payee exists, so an invoice's accruals and their reversals are the same
whenever they are computed.
"""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from chalicelib.clock import isoformat, clock
from chalicelib.domain import commissions as domain
from chalicelib.domain.errors import NotFound
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.domain.periods import parse_instant_text
from chalicelib.observability import logger
from chalicelib.store import commissions as store
from chalicelib.store import payees as payee_store

# The bus's events that move accruals, and where each names its object.
HANDLED_EVENTS = {"invoice.paid": "invoice", "credit_note.created": "credit_note",
                  "credit_note.refunded": "credit_note"}


def accrue_for_event(event: dict) -> dict | None:
    """Book the accruals of the invoice an EventBridge event names (its
    `detail-type`, `detail.merchant_id`, `detail.invoice.id` or
    `detail.credit_note.invoice_id`). None for an event of another kind."""
    kind = HANDLED_EVENTS.get(event.get("detail-type"))
    if kind is None:
        return None
    detail = event.get("detail") or {}
    merchant_id = detail.get("merchant_id")
    found = detail.get(kind) or {}
    invoice_id = found.get("id") if kind == "invoice" else found.get("invoice_id")
    if not merchant_id or not invoice_id:
        raise ValueError(f"a {event.get('detail-type')} event without merchant_id or its invoice")
    try:
        result = accrue_invoice(merchant_id, invoice_id)
    except NotFound:
        # No such invoice (of this merchant): it never will be; nothing to retry.
        logger.warning("commission event names no invoice", extra={"event_id": event.get("id"),
                                                                   "invoice_id": invoice_id})
        return {"booked": 0, "already": 0, "payees": 0, "missing": invoice_id}
    logger.info("commissions accrued", extra={"event_id": event.get("id"), "detail_type": event.get("detail-type"),
                                              "invoice_id": invoice_id, **result})
    return result


def accrue_invoice(merchant_id: str, invoice_id: str) -> dict:
    """Book every accrual and reversal of a paid invoice not booked yet;
    returns how many were booked and how many were there already."""
    from chalicelib.store import credit_notes as credit_note_store
    from chalicelib.store import invoices as invoice_store

    invoice = invoice_store.get_invoice(merchant_id, invoice_id)
    if not invoice.paid_at:
        return {"booked": 0, "already": 0, "payees": 0}
    paid_at = parse_instant_text(invoice.paid_at)
    payees = [payee for payee in _payees_of(merchant_id, invoice.customer_id)
              if parse_instant_text(payee.created_at) <= paid_at]
    if not payees:
        return {"booked": 0, "already": 0, "payees": 0}
    tz, start_at, new_subscription = _subscription_facts(invoice)
    lines = _paid_lines(invoice, start_at, tz)
    notes = [note for note in (credit_note_store.find_credit_note(merchant_id, entry["id"])
                               for entry in invoice.credit_note_entries()) if note is not None]
    notes.sort(key=lambda note: note.credit_note_id)
    booked = already = 0
    for payee in payees:
        rules = [domain.rule_from_dict(rule) for rule in payee.rule_list()]
        accruals = domain.accrue(rules, lines, invoice.currency, new_subscription=new_subscription)
        if not accruals:
            continue
        for accrual in accruals:
            line = _line(payee, invoice, "accrual", accrual.key, accrual.amount, accrual.base_amount,
                         accrual.description, {"parts": [part.as_dict() for part in accrual.parts]})
            month = domain.month_of(paid_at, tz)
            done = store.book(line, invoice.invoice_id, month, domain.next_month)
            booked, already = (booked + 1, already) if done else (booked, already + 1)
        line_amounts = {line.line_id: line.amount for line in lines}
        subtotal = Decimal(invoice.subtotal)
        reversals = domain.reverse(accruals, [_credit_note(note) for note in notes], line_amounts, subtotal,
                                   invoice.currency)
        by_id = {note.credit_note_id: note for note in notes}
        accrued = {accrual.key: accrual for accrual in accruals}
        for reversal in reversals:
            note = by_id[reversal.credit_note_id]
            line = _line(payee, invoice, "reversal", reversal.key, reversal.amount,
                         accrued[reversal.key].base_amount, accrued[reversal.key].description,
                         {"fraction": str(reversal.fraction)}, note=note)
            month = domain.month_of(max(parse_instant_text(note.created_at), paid_at), tz)
            done = store.book(line, note.credit_note_id, month, domain.next_month)
            booked, already = (booked + 1, already) if done else (booked, already + 1)
    return {"booked": booked, "already": already, "payees": len(payees)}


def _payees_of(merchant_id: str, customer_id: str) -> list:
    """The payees who earn on a customer's invoices: every licensor, and the customer's reseller."""
    from chalicelib.store import customers as customer_store

    reseller_id = customer_store.get_customer(merchant_id, customer_id).reseller_id
    return [payee for payee in payee_store.all_payees(merchant_id)
            if payee.kind == "licensor" or payee.payee_id == reseller_id]


def _subscription_facts(invoice) -> tuple[str, datetime | None, bool]:
    """(the calendar's time zone, the subscription's start, whether this
    invoice opened the subscription)."""
    from chalicelib.store import merchants as merchant_store
    from chalicelib.store import subscriptions as subscription_store

    new_subscription = invoice.billing_reason == "subscription_create"
    if invoice.subscription_id:
        subscription = subscription_store.get_subscription(invoice.merchant_id, invoice.subscription_id)
        return subscription.timezone or "UTC", parse_instant_text(subscription.start_at), new_subscription
    return merchant_store.get_merchant(invoice.merchant_id).timezone or "UTC", None, new_subscription


def _paid_lines(invoice, start_at: datetime | None, tz: str) -> list[domain.PaidLine]:
    from chalicelib.services import invoices

    lines = []
    for line in invoices.lines_with_ids(invoice):
        age = 0
        if start_at is not None and line.get("period_start"):
            age = domain.subscription_age_months(start_at, parse_instant_text(line["period_start"]), tz)
        lines.append(domain.PaidLine(
            line_id=line["id"], amount=Decimal(line["amount"]), kind=line.get("kind") or "fee",
            offer_code=line.get("offer_code"), component=line.get("component"),
            quantity=Decimal(line.get("quantity") or "0"), age_months=age,
            description=line.get("description") or ""))
    return lines


def _credit_note(note) -> domain.CreditNote:
    by_line: dict[str, Decimal] = {}
    unattributed = ZERO
    for line in note.line_items():
        amount = Decimal(line["amount"])
        if line.get("invoice_line_id"):
            by_line[line["invoice_line_id"]] = by_line.get(line["invoice_line_id"], ZERO) + amount
        else:
            unattributed += amount
    return domain.CreditNote(note.credit_note_id, by_line, unattributed)


def _line(payee, invoice, kind: str, key: str, amount: Decimal, base: Decimal, description: str, detail: dict,
          note=None) -> store.AccrualLine:
    return store.AccrualLine(
        merchant_id=payee.merchant_id, payee_id=payee.payee_id, kind=kind, invoice_id=invoice.invoice_id,
        invoice_number=invoice.number, credit_note_id=note.credit_note_id if note else None,
        credit_note_number=note.number if note else None, customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id, key=key, description=description[:500],
        currency=invoice.currency, base_amount=format_amount(base, invoice.currency),
        amount=format_amount(amount, invoice.currency), detail=json.dumps(detail, separators=(",", ":")),
        booked_at=isoformat(clock().now()), month="",
    )
