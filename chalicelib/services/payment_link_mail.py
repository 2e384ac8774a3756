"""A payment link e-mailed to a customer at the merchant's request (the
console: a customer at the counter or on the phone, with no card on file or
an invoice to pay).

The e-mail is a customer notice of the alerts' machinery (services/alerts.py,
kind `payment_link`): recorded once per request, sent now through
chalicelib.notify (SES) with a fresh link (services/payment_links.py), and,
if SES cannot take it now, queued and retried like any alert. It is listed
among the customer's e-mails; it is never an open alert. The request's
one-time key makes its fact: the same request sent twice (a double click)
sends one e-mail.
"""
from __future__ import annotations

import hashlib

from chalicelib.domain.errors import InvalidRequest
from chalicelib.services import alerts
from chalicelib.store import alerts as alert_store
from chalicelib.store import customers as customer_store

KIND = "payment_link"


def send_payment_link(merchant_id: str, customer_id: str, *, request_key: str, invoice: dict | None = None) -> dict:
    """E-mail the customer a payment link, about `invoice` (the API's
    invoice object, whose amount due the e-mail states) or about its card
    alone. Returns `{"status": "sent" | "queued" | ..., "to": address}`:
    `queued` when SES did not take it now (it is retried)."""
    if not request_key:
        raise InvalidRequest("a payment link e-mail needs the request's one-time key", param="form_token")
    customer = customer_store.get_customer(merchant_id, customer_id)
    if invoice is not None and invoice["customer_id"] != customer_id:
        raise InvalidRequest("invoice: not this customer's invoice", param="invoice_id")
    digest = hashlib.sha256(f"{merchant_id}|{customer_id}|{request_key}".encode()).hexdigest()[:32]
    fact = f"{KIND}#{customer_id}#{digest}"
    details = {
        "customer_name": customer.name,
        "customer_email": customer.email,
        "invoice_id": invoice["id"] if invoice else None,
        "invoice_number": invoice["number"] if invoice else None,
        "amount_due": invoice["amount_due"] if invoice else None,
        "currency": invoice["currency"] if invoice else None,
    }
    alert = alerts.record(merchant_id, fact, KIND, customer_id=customer_id, details=details,
                          audiences=(alerts.CUSTOMER,), queue=False)
    if alert is None:
        # Recorded by the same request before (or not recorded at all: then
        # there is nothing to send, and the caller is told).
        alert = alert_store.get_alert(merchant_id, alert_store.alert_id_of(f"{merchant_id}#{fact}"))
        if alert is None:
            return {"status": "not_recorded", "to": customer.email}
        return {"status": _status(alert), "to": customer.email}
    try:
        alerts.deliver(alerts.alert_message(alert))
    except alerts.AlertNotDelivered:
        alerts.enqueue([alerts.alert_message(alert)])
        return {"status": "queued", "to": customer.email}
    return {"status": "sent", "to": customer.email}


def _status(alert: alert_store.AlertRecord) -> str:
    delivery = alert.deliveries().get(alerts.CUSTOMER) or {}
    return "sent" if delivery.get("status") == "sent" else "queued"
