"""Monthly statements of payees: what each earned in a month, line by line.

A statement is the accrual lines booked in its month (store/commissions.py),
grouped by invoice, its totals summed from them (each line rounded once
when it was booked: the total is their exact sum). States:
- `draft` while the month is open to accruals;
- `issued` (`POST /payees/{id}/statements/{month}/issue`, once the month is
  over): numbered `{prefix}ST{YYYY}-{000001}`, gapless per merchant (the
  counter moved in the same transaction), its lines fixed (an accrual that
  arrives later is booked in the next draft month), PDF and CSV; the payee
  is e-mailed (the alerts' mail path: recorded once, queued, retried);
- `paid` (`POST .../paid` `{"reference"}`): the payout's reference.

`statement.issued` and `statement.paid` are domain events of the head's
write (its status moved), as every event is.
"""
from __future__ import annotations

import csv
import io
import re
from collections import OrderedDict
from decimal import Decimal

from chalicelib.clock import clock, isoformat
from chalicelib.domain import commissions as domain
from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.store import commissions as store
from chalicelib.store import payees as payee_store

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
PAYEE = "payee"
STATEMENT_MAIL = "statement_issued"


def check_month(month: str | None) -> str:
    if month is None:
        raise InvalidRequest("month: required, as YYYY-MM", param="month")
    if not isinstance(month, str) or not MONTH.match(month):
        raise InvalidRequest(f"month: {month!r} is not a month (YYYY-MM)", param="month")
    return month


def get_statement(merchant_id: str, payee_id: str, month: str | None) -> dict:
    """The payee's statement of `month` (default: the current month on the
    merchant's calendar), whatever its state (a month with nothing booked is
    an empty draft)."""
    payee = payee_store.get_payee(merchant_id, payee_id)
    if month is None:
        from chalicelib.store import merchants as merchant_store

        month = domain.month_of(clock().now(), merchant_store.get_merchant(merchant_id).timezone)
    month = check_month(month)
    head = store.get_statement(merchant_id, payee_id, month)
    lines = store.statement_lines(merchant_id, payee_id, month)
    return serialize(payee, month, head, lines)


def issue_statement(merchant_id: str, payee_id: str, month: str) -> dict:
    """Number the statement of a month that is over and e-mail it to the payee.
    Issuing an issued statement answers it as it is (safe to retry)."""
    from chalicelib.store import merchants as merchant_store

    payee = payee_store.get_payee(merchant_id, payee_id)
    month = check_month(month)
    merchant = merchant_store.get_merchant(merchant_id)
    now = clock().now()
    if domain.month_of(now, merchant.timezone) <= month:
        raise Conflict(f"the month {month} is not over yet: a statement is issued once its month has ended",
                       code="month_not_over")
    for _ in range(5):
        head = store.get_statement(merchant_id, payee_id, month)
        if head is not None and head.status != "draft":
            return serialize(payee, month, head, store.statement_lines(merchant_id, payee_id, month))
        lines = store.statement_lines(merchant_id, payee_id, month)
        totals = _totals(lines)
        try:
            store.issue(merchant_id, payee_id, month, revision=None if head is None else int(head.revision),
                        year=int(domain.month_of(now, merchant.timezone)[:4]), prefix=merchant.invoice_prefix,
                        totals=totals, line_count=len(lines), issued_at=isoformat(now),
                        number_of=domain.statement_number)
        except Conflict as error:
            if error.code != "version_conflict":
                raise
            continue  # a line was booked meanwhile: sum again
        head = store.get_statement(merchant_id, payee_id, month)
        statement = serialize(payee, month, head, lines)
        _mail_payee(merchant_id, payee, statement)
        return statement
    raise Conflict("the statement kept changing while it was issued; retry", code="version_conflict")


def mark_paid(merchant_id: str, payee_id: str, month: str, reference: str) -> dict:
    """Record the payout of an issued statement (the same reference again: answered as it is)."""
    payee = payee_store.get_payee(merchant_id, payee_id)
    month = check_month(month)
    head = store.get_statement(merchant_id, payee_id, month)
    if head is not None and head.status == "paid" and head.reference == reference:
        return serialize(payee, month, head, store.statement_lines(merchant_id, payee_id, month))
    if head is None or head.status != "issued" or not store.mark_paid(
            merchant_id, payee_id, month, reference=reference, paid_at=isoformat(clock().now())):
        state = "draft" if head is None else head.status
        raise Conflict(f"the statement is {state}: only an issued statement is paid", code="invalid_state")
    return get_statement(merchant_id, payee_id, month)


def statement_csv(merchant_id: str, payee_id: str, month: str) -> tuple[str, str]:
    """The statement's lines as CSV (one row per accrual line), and a file name."""
    statement = get_statement(merchant_id, payee_id, month)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["statement", "month", "payee_id", "kind", "invoice_number", "invoice_id",
                     "credit_note_number", "invoice_line_id", "description", "base_amount", "rates", "amount",
                     "currency"])
    for line in statement["lines"]:
        rates = " + ".join(f"{p['basis']} {p['rate']}" for p in line["parts"]) or line.get("fraction") or ""
        writer.writerow([statement["number"] or "draft", month, payee_id, line["kind"], line["invoice_number"],
                         line["invoice_id"], line["credit_note_number"] or "", line["invoice_line_id"] or "",
                         line["description"], line["base_amount"], rates, line["amount"], line["currency"]])
    for currency, total in statement["totals"].items():
        writer.writerow(["total", month, payee_id, "", "", "", "", "", "", "", "", total, currency])
    return out.getvalue(), f"{statement['number'] or f'statement-{month}'}.csv"


def statement_pdf(merchant_id: str, payee_id: str, month: str) -> tuple[bytes, str]:
    from chalicelib.services.statement_pdf import render_statement_pdf
    from chalicelib.store import merchants as merchant_store

    statement = get_statement(merchant_id, payee_id, month)
    merchant = merchant_store.get_merchant(merchant_id)
    payee = payee_store.get_payee(merchant_id, payee_id)
    document = render_statement_pdf(statement, merchant_name=merchant.legal_name or merchant.name,
                                    payee_name=payee.name, language=merchant.locale or "en",
                                    timezone=merchant.timezone or "UTC")
    return document, f"{statement['number'] or f'statement-{month}'}.pdf"


def _totals(lines: list[store.AccrualLine]) -> dict[str, str]:
    from chalicelib.domain.money import format_amount

    by_currency: dict[str, list[Decimal]] = {}
    for line in lines:
        by_currency.setdefault(line.currency, []).append(Decimal(line.amount))
    return {currency: format_amount(domain.statement_total(amounts, currency), currency)
            for currency, amounts in sorted(by_currency.items())}


def _mail_payee(merchant_id: str, payee, statement: dict) -> None:
    """The payee hears of its issued statement once (an alert of its own
    audience, services/alerts.py: recorded once per statement, queued, retried)."""
    from chalicelib.services import alerts

    details = {"payee_name": payee.name, "payee_email": payee.email, "number": statement["number"],
               "month": statement["month"], "totals": statement["totals"], "payee_id": payee.payee_id}
    alerts.record(merchant_id, f"{STATEMENT_MAIL}#{payee.payee_id}#{statement['month']}", STATEMENT_MAIL,
                  customer_id=None, details=details, audiences=(PAYEE,))


def serialize(payee, month: str, head: store.StatementRecord | None, lines: list[store.AccrualLine]) -> dict:
    shown = [_line(line) for line in lines]
    totals = head.total_table() if head is not None and head.status != "draft" else _totals(lines)
    invoices: OrderedDict[str, dict] = OrderedDict()
    for line in shown:
        entry = invoices.setdefault(line["invoice_id"], {"invoice_id": line["invoice_id"],
                                                         "invoice_number": line["invoice_number"],
                                                         "currency": line["currency"], "amounts": []})
        entry["amounts"].append(Decimal(line["amount"]))
    return {
        "object": "statement",
        "payee_id": payee.payee_id,
        "month": month,
        "status": "draft" if head is None else head.status,
        "number": None if head is None else head.number,
        "issued_at": None if head is None else head.issued_at,
        "paid_at": None if head is None else head.paid_at,
        "reference": None if head is None else head.reference,
        "totals": totals,
        "total": next(iter(totals.values())) if len(totals) == 1 else None,
        "currency": next(iter(totals)) if len(totals) == 1 else None,
        "invoices": [{"invoice_id": e["invoice_id"], "invoice_number": e["invoice_number"],
                      "currency": e["currency"],
                      "total": str(domain.statement_total(e.pop("amounts"), e["currency"]))}
                     for e in invoices.values()],
        "lines": shown,
    }


def _line(line: store.AccrualLine) -> dict:
    detail = line.details()
    return {
        "kind": line.kind,
        "invoice_id": line.invoice_id,
        "invoice_number": line.invoice_number,
        "credit_note_id": line.credit_note_id,
        "credit_note_number": line.credit_note_number,
        "customer_id": line.customer_id,
        "subscription_id": line.subscription_id,
        "invoice_line_id": None if line.key == domain.NEW_SUBSCRIPTION else line.key,
        "description": line.description,
        "base_amount": line.base_amount,
        "parts": detail.get("parts", []),
        "fraction": detail.get("fraction"),
        "amount": line.amount,
        "currency": line.currency,
        "booked_at": line.booked_at,
    }


def event_detail(merchant_id: str, entity_id: str) -> dict:
    """The detail of a statement's domain event (services/domain_events.py):
    the statement as `GET /payees/{id}/statements?month=` shows it."""
    payee_id, _, month = entity_id.partition("#")
    return {"statement": get_statement(merchant_id, payee_id, month)}
