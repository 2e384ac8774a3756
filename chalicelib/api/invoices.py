"""/invoices: list, read, the PDF, pay now, void."""
from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import Call, endpoint, listing
from chalicelib.domain.errors import InvalidRequest
from chalicelib.services import collecting, invoices

blueprint = Blueprint(__name__)

PDF = "application/pdf"


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
    # API Gateway returns a binary body only to a client that accepts it
    # (chalice checks the same): say so in our own error format.
    accept = (call.request.headers or {}).get("accept", "")
    if PDF not in accept and "*/*" not in accept:
        raise InvalidRequest(f"send Accept: {PDF} to receive the invoice as a PDF", param="Accept")
    document, filename = invoices.invoice_pdf(call.merchant_id, invoice_id)
    return Response(
        body=document,
        status_code=200,
        headers={"Content-Type": PDF, "Content-Disposition": f'inline; filename="{filename}"'},
    )


@endpoint(blueprint, "/invoices/{invoice_id}/pay", methods=("POST",), response="Invoice")
def pay_invoice(call: Call, invoice_id: str):
    return collecting.pay_invoice(call.merchant_id, invoice_id)


@endpoint(blueprint, "/invoices/{invoice_id}/void", methods=("POST",), response="Invoice")
def void_invoice(call: Call, invoice_id: str):
    return collecting.void_invoice(call.merchant_id, invoice_id)
