"""/credit-notes, and issuing one on an invoice (`POST /invoices/{id}/credit-notes`)."""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint
from pydantic import BaseModel, Field, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import XML, Call, endpoint, listing, pdf_response, xml_response
from chalicelib.domain.catalog import PositiveAmount
from chalicelib.domain.errors import InvalidRequest
from chalicelib.services import credit_notes

blueprint = Blueprint(__name__)

PDF = "application/pdf"
MAX_LINES = 200

LineId = Annotated[str, StringConstraints(pattern=r"^il_[0-9a-z]{1,40}_\d{1,6}$")]


class CreditNoteLine(BaseModel):
    model_config = STRICT

    invoice_line_id: LineId
    amount: PositiveAmount = Field(description="pre-tax amount credited on the line")


class NewCreditNote(BaseModel):
    model_config = STRICT

    lines: Annotated[list[CreditNoteLine], Field(min_length=1, max_length=MAX_LINES)] | None = None
    amount: PositiveAmount | None = Field(default=None,
                                          description="the credit note's total, tax included (without lines)")
    reason: Literal["duplicate", "product_unsatisfactory", "order_change", "goodwill"]
    refund: Literal["card", "credit_balance", "none"]
    memo: Annotated[str, StringConstraints(max_length=500)] | None = None


@endpoint(blueprint, "/invoices/{invoice_id}/credit-notes", methods=("POST",), status=201, response="CreditNote")
def create_credit_note(call: Call, invoice_id: str):
    body = call.body(NewCreditNote)
    if body.lines is None and body.amount is None:
        raise InvalidRequest("lines: give the lines to credit, or amount", param="lines")
    if body.lines is not None and body.amount is not None:
        raise InvalidRequest("amount: give lines or amount, not both", param="amount")
    return credit_notes.create_credit_note(
        call.merchant_id, invoice_id, reason=body.reason, refund=body.refund, memo=body.memo,
        lines=None if body.lines is None else [(line.invoice_line_id, line.amount) for line in body.lines],
        amount=body.amount, request_key=(call.request.headers or {}).get("idempotency-key"),
    )


@endpoint(blueprint, "/credit-notes", response="CreditNoteList")
def list_credit_notes(call: Call):
    items, next_cursor = credit_notes.list_credit_notes(
        call.merchant_id,
        customer_id=call.query("customer_id"),
        invoice_id=call.query("invoice_id"),
        limit=call.limit(),
        cursor=call.query("cursor"),
    )
    return listing(items, next_cursor)


@endpoint(blueprint, "/credit-notes/{credit_note_id}", response="CreditNote")
def get_credit_note(call: Call, credit_note_id: str):
    return credit_notes.get_credit_note(call.merchant_id, credit_note_id)


@endpoint(blueprint, "/credit-notes/{credit_note_id}/pdf", response="application/pdf")
def get_credit_note_pdf(call: Call, credit_note_id: str):
    return pdf_response(call, "the credit note as a PDF",
                        lambda: credit_notes.credit_note_pdf(call.merchant_id, credit_note_id))


@endpoint(blueprint, "/credit-notes/{credit_note_id}/facturx.pdf", response="application/pdf")
def get_credit_note_facturx(call: Call, credit_note_id: str):
    from chalicelib.services import einvoices

    return pdf_response(call, "the credit note as Factur-X",
                        lambda: einvoices.credit_note_facturx(call.merchant_id, credit_note_id))


@endpoint(blueprint, "/credit-notes/{credit_note_id}/ubl.xml", response=XML)
def get_credit_note_ubl(call: Call, credit_note_id: str):
    from chalicelib.services import einvoices

    return xml_response(call, "the credit note as UBL",
                        lambda: einvoices.credit_note_ubl(call.merchant_id, credit_note_id))
