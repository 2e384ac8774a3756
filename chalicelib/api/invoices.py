"""/invoices: list, read, the PDF, pay now, void, record an offline payment."""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint
from pydantic import BaseModel, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import XML, Call, endpoint, listing, pdf_response, xml_response
from chalicelib.domain.catalog import Instant, PositiveAmount
from chalicelib.services import invoice_actions, invoices

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/invoices", response="InvoiceList")
def list_invoices(call: Call):
    items, next_cursor = invoices.list_invoices(
        call.merchant_id,
        customer_id=call.query("customer_id"),
        subscription_id=call.query("subscription_id"),
        status=call.query("status"),
        limit=call.limit(),
        cursor=call.query("cursor"),
    )
    return listing(items, next_cursor)


@endpoint(blueprint, "/invoices/{invoice_id}", response="Invoice")
def get_invoice(call: Call, invoice_id: str):
    return invoices.get_invoice(call.merchant_id, invoice_id)


@endpoint(blueprint, "/invoices/{invoice_id}/pdf", response="application/pdf")
def get_invoice_pdf(call: Call, invoice_id: str):
    return pdf_response(call, "the invoice as a PDF", lambda: invoices.invoice_pdf(call.merchant_id, invoice_id))


@endpoint(blueprint, "/invoices/{invoice_id}/facturx.pdf", response="application/pdf")
def get_invoice_facturx(call: Call, invoice_id: str):
    from chalicelib.services import einvoices

    return pdf_response(call, "the invoice as Factur-X",
                        lambda: einvoices.invoice_facturx(call.merchant_id, invoice_id))


@endpoint(blueprint, "/invoices/{invoice_id}/ubl.xml", response=XML)
def get_invoice_ubl(call: Call, invoice_id: str):
    from chalicelib.services import einvoices

    return xml_response(call, "the invoice as UBL", lambda: einvoices.invoice_ubl(call.merchant_id, invoice_id))


@endpoint(blueprint, "/invoices/{invoice_id}/pay", methods=("POST",), response="Invoice")
def pay_invoice(call: Call, invoice_id: str):
    return invoice_actions.pay_invoice(call.merchant_id, invoice_id)


@endpoint(blueprint, "/invoices/{invoice_id}/void", methods=("POST",), response="Invoice")
def void_invoice(call: Call, invoice_id: str):
    return invoice_actions.void_invoice(call.merchant_id, invoice_id)


class OfflinePayment(BaseModel):
    """A payment received outside Stripe."""

    model_config = STRICT

    method: Literal["cash", "cheque", "bank_transfer"]
    amount: PositiveAmount
    reference: Annotated[str, StringConstraints(max_length=200)] | None = None
    received_at: Instant | None = None


@endpoint(blueprint, "/invoices/{invoice_id}/payments", methods=("POST",), status=201, response="Payment")
def record_payment(call: Call, invoice_id: str):
    from chalicelib.services import offline_payments

    body = call.body(OfflinePayment)
    return offline_payments.record_payment(
        call.merchant_id, invoice_id, method=body.method, amount=body.amount, reference=body.reference,
        received_at=body.received_at, request_key=(call.request.headers or {}).get("idempotency-key"),
    )
