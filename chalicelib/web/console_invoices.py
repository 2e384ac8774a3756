"""The console's invoices: the merchant's list (by status, pages by
cursor) and one invoice with its lines, totals, payments, attempts and
credit notes, and what staff do for a customer who is not online: retry
the card now, void, issue a credit note (an amount or per line, to the
card, the credit balance or nothing), record a payment received in cash,
by cheque or by bank transfer, e-mail the customer a payment link.

The same services as `POST /invoices/{id}/...`; forms checked by the API's
request models; each post runs once per one-time form token
(billing_forms.py), which is also the service's request key for a payment
or a credit note: a double submit records one. The PDF is
`/console/invoices/{id}/pdf` (console_customer_page.py).
"""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from chalice import Blueprint

from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.web.billing_forms import (
    FieldProblem, StateProblem, day_to_instant, decimal_input, explained, form_token, left_to_credit, new_form_token,
    run_form, valid,
)
from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

PAGE_SIZE = 25
# API.md's invoice statuses.
STATUSES = ("draft", "open", "paid", "void", "uncollectible")
CREDIT_REASONS = ("duplicate", "product_unsatisfactory", "order_change", "goodwill")
REFUNDS = ("none", "credit_balance", "card")
METHODS = ("cash", "cheque", "bank_transfer")
NOTICES = ("billing_done_invoice_paid", "billing_done_invoice_pay_failed", "billing_done_voided",
           "billing_done_credit_note", "billing_done_payment", "billing_done_link_sent", "billing_done_link_queued")
FORMS = {
    "credit_note": {"amount": "cn_amount", "lines": "cn_amount", "reason": "cn_reason", "refund": "cn_refund",
                    "memo": "cn_memo"},
    "payment": {"amount": "pay_amount", "method": "pay_method", "reference": "pay_reference",
                "received_at": "pay_received"},
}


@page(blueprint, "/console/invoices")
def invoice_list(visit: Visit):
    from chalicelib.services import customers, invoices

    status = visit.query("status") or ""
    cursor = visit.query("cursor") or None
    errors, rows, next_cursor = {}, [], None
    if status and status not in STATUSES:
        errors["status"] = text(visit.lang, "billing_choose_status")
    else:
        rows, next_cursor = invoices.list_invoices(visit.merchant_id, customer_id=None, subscription_id=None,
                                                   status=status or None, limit=PAGE_SIZE, cursor=cursor)
    names = customers.customer_names(visit.merchant_id, [row["customer_id"] for row in rows])
    return render(visit, "invoices.html", status=400 if errors else 200, rows=rows, names=names, chosen=status,
                  statuses=STATUSES, errors=errors, tz=_timezone(visit),
                  first_page=_list_url(status, None) if cursor else None,
                  next_page=_list_url(status, next_cursor) if next_cursor else None)


def _list_url(status: str, cursor: str | None) -> str:
    query = urlencode({k: v for k, v in (("status", status), ("cursor", cursor)) if v})
    return "/console/invoices" + (f"?{query}" if query else "")


@page(blueprint, "/console/invoices/{invoice_id}")
def invoice_page(visit: Visit, invoice_id: str):
    done = visit.query("done")
    return _page(visit, invoice_id, notice=done if done in NOTICES else None)


def _page(visit: Visit, invoice_id: str, *, form: str | None = None, errors: dict | None = None,
          problem: str | None = None, values: dict | None = None, notice: str | None = None, status: int = 200):
    from chalicelib.services import customers, invoices

    invoice = invoices.get_invoice(visit.merchant_id, invoice_id)
    customer = customers.customer_details(visit.merchant_id, invoice["customer_id"])
    collectible = invoice["status"] in ("open", "uncollectible")
    return render(
        visit, "invoice.html", status=status, invoice=invoice, customer=customer, tz=_timezone(visit),
        notice=notice, problem=problem, form=form, errors=errors or {}, values=values or {},
        credit_left=left_to_credit(invoice), may_serve=visit.session.may("serve"),
        can_pay=collectible and Decimal(invoice["amount_due"]) > 0, can_void=invoice["status"] == "open",
        can_credit=invoice["status"] in ("open", "paid", "uncollectible") and left_to_credit(invoice) > 0,
        can_record=collectible, reasons=CREDIT_REASONS, refunds=REFUNDS if invoice["status"] == "paid" else ("none",),
        methods=METHODS, new_token=new_form_token,
    )


# ---------------------------------------------------------------------------
# Actions


@page(blueprint, "/console/invoices/{invoice_id}/pay", methods=("POST",), action="serve")
def retry_card_now(visit: Visit, invoice_id: str):
    from chalicelib.services import invoice_actions

    def run():
        paid = invoice_actions.pay_invoice(visit.merchant_id, invoice_id)
        return "billing_done_invoice_paid" if paid["status"] == "paid" else "billing_done_invoice_pay_failed"

    return _act(visit, invoice_id, None, run)


@page(blueprint, "/console/invoices/{invoice_id}/void", methods=("POST",), action="serve")
def void_from_console(visit: Visit, invoice_id: str):
    from chalicelib.services import invoice_actions, invoices

    def run():
        try:
            invoice_actions.void_invoice(visit.merchant_id, invoice_id)
        except Conflict as refused:
            if invoices.get_invoice(visit.merchant_id, invoice_id)["status"] != "paid":
                raise
            # Stripe had taken the money (the contract's 409): the invoice is paid.
            raise StateProblem(text(visit.lang, "billing_void_refused_paid")) from refused
        return "billing_done_voided"

    return _act(visit, invoice_id, None, run)


@page(blueprint, "/console/invoices/{invoice_id}/credit-note", methods=("POST",), action="serve")
def issue_credit_note(visit: Visit, invoice_id: str):
    from chalicelib.api.credit_notes import NewCreditNote
    from chalicelib.services import credit_notes, invoices

    def run():
        invoice = invoices.get_invoice(visit.merchant_id, invoice_id)
        # Per line (pre-tax), the rows left empty are not credited; or one amount, tax included.
        rows = [(i, line["id"], decimal_input(visit.form(f"lines[{i}].amount")))
                for i, line in enumerate(invoice["lines"])]
        rows = [row for row in rows if row[2]]
        body = {"reason": visit.form("cn_reason"), "refund": visit.form("cn_refund") or "none"}
        if visit.form("cn_memo"):
            body["memo"] = visit.form("cn_memo")
        if visit.form("cn_amount"):
            body["amount"] = decimal_input(visit.form("cn_amount"))
        if rows:
            body["lines"] = [{"invoice_line_id": line_id, "amount": amount} for _, line_id, amount in rows]
        try:
            model = valid(NewCreditNote, body)
            if model.lines is None and model.amount is None:
                raise FieldProblem("cn_amount", text(visit.lang, "billing_credit_note_needs_amount"))
            if model.lines is not None and model.amount is not None:
                raise FieldProblem("cn_amount", text(visit.lang, "billing_credit_note_one_way"))
            credit_notes.create_credit_note(
                visit.merchant_id, invoice_id, reason=model.reason, refund=model.refund, memo=model.memo,
                lines=None if model.lines is None else [(line.invoice_line_id, line.amount) for line in model.lines],
                amount=model.amount, request_key=form_token(visit))
        except InvalidRequest as error:
            raise _on_form_row(visit, error, [i for i, _, _ in rows]) from None
        return "billing_done_credit_note"

    return _act(visit, invoice_id, "credit_note", run)


def _on_form_row(visit: Visit, error: InvalidRequest, form_rows: list[int]) -> Exception:
    """An error on `lines[k]` of the API's body is shown beside the amount
    of the form's row it came from (rows left empty are not sent)."""
    param = error.param or ""
    if param.startswith("lines[") and "]" in param:
        k = int(param[len("lines["):param.index("]")])
        if k < len(form_rows):
            return FieldProblem(f"lines[{form_rows[k]}].amount", explained(visit, error))
    return error


@page(blueprint, "/console/invoices/{invoice_id}/payment", methods=("POST",), action="serve")
def record_offline_payment(visit: Visit, invoice_id: str):
    from chalicelib.api.invoices import OfflinePayment
    from chalicelib.services import offline_payments

    def run():
        body = {"method": visit.form("pay_method"), "amount": decimal_input(visit.form("pay_amount"))}
        if visit.form("pay_reference"):
            body["reference"] = visit.form("pay_reference")
        received_at = day_to_instant(visit.form("pay_received"), _timezone(visit))
        if received_at is not None:
            body["received_at"] = received_at
        model = valid(OfflinePayment, body)
        offline_payments.record_payment(visit.merchant_id, invoice_id, method=model.method, amount=model.amount,
                                        reference=model.reference, received_at=model.received_at,
                                        request_key=form_token(visit))
        return "billing_done_payment"

    return _act(visit, invoice_id, "payment", run)


@page(blueprint, "/console/invoices/{invoice_id}/payment-link", methods=("POST",), action="serve")
def e_mail_invoice_payment_link(visit: Visit, invoice_id: str):
    from chalicelib.services import invoices, payment_link_mail

    def run():
        invoice = invoices.get_invoice(visit.merchant_id, invoice_id)
        if invoice["status"] not in ("open", "uncollectible"):
            raise StateProblem(text(visit.lang, "billing_link_nothing_due"))
        sent = payment_link_mail.send_payment_link(visit.merchant_id, invoice["customer_id"],
                                                   request_key=form_token(visit), invoice=invoice)
        return "billing_done_link_sent" if sent["status"] == "sent" else "billing_done_link_queued"

    return _act(visit, invoice_id, None, run)


def _act(visit: Visit, invoice_id: str, form: str | None, run):
    def again(**problems):
        return _page(visit, invoice_id, form=form, values=dict(visit.form_pairs()), **problems)

    fields = FORMS.get(form, {})
    return run_form(visit, form, fields, run, done_at=f"/console/invoices/{invoice_id}", again=again)


def _timezone(visit: Visit) -> str:
    """The merchant's time zone, read once per request."""
    from chalicelib.services import merchants

    if not hasattr(visit, "merchant"):
        visit.merchant = merchants.get_merchant(visit.merchant_id)
    return visit.merchant.get("timezone") or "UTC"
