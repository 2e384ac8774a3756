"""The e-invoices of finalized invoices and credit notes: Factur-X (a PDF/A-3
carrying its EN 16931 CII XML as factur-x.xml) and UBL (Peppol BIS Billing
3.0), and their hand-over to an e-invoicing platform.

Both are written from one legal document (domain/legal_document.py) built
from what the invoice holds as it was issued (its lines, totals and the
seller's and buyer's snapshots), so they never change afterwards and agree
with the PDF. A draft has no number yet: no e-invoice (409). An invoice
issued while the seller's or the buyer's identity lacked what EN 16931
requires (the merchant's address, SIREN or company id, VAT number; a
reverse-charge buyer's VAT number) gets none either (409
`legal_identity_incomplete`, naming what was missing): an e-invoice a
platform would reject is worse than none.

Hand-over (docs/api.md, "Legal invoices"): one small interface, an S3 drop,
that any platform's connector can read without this backend knowing the
vendor: `s3://{EINVOICE_BUCKET}/{merchant_id}/{invoices|credit-notes}/{number}/`
receives `facturx.pdf`, `ubl.xml`, then `manifest.json` (written last: its
presence says the folder is complete).
"""
from __future__ import annotations

import hashlib
import json

from chalicelib import config
from chalicelib.domain.document_format import language_of
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.legal_document import (
    LegalDocument, credit_note_document, invoice_document, missing_for_einvoice,
)
from chalicelib.services import credit_notes, invoices
from chalicelib.store import credit_notes as credit_note_store
from chalicelib.store import invoices as invoice_store

XML = "application/xml"


def invoice_facturx(merchant_id: str, invoice_id: str) -> tuple[bytes, str]:
    """The invoice as Factur-X, and a file name for it."""
    document, parts = _invoice(merchant_id, invoice_id)
    return _facturx_pdf(document, parts), f"{document.number}-facturx.pdf"


def invoice_ubl(merchant_id: str, invoice_id: str) -> tuple[bytes, str]:
    """The invoice as Peppol UBL, and a file name for it."""
    from chalicelib.services.einvoice_ubl import ubl_xml

    document, _ = _invoice(merchant_id, invoice_id)
    return ubl_xml(document), f"{document.number}.xml"


def credit_note_facturx(merchant_id: str, credit_note_id: str) -> tuple[bytes, str]:
    document, parts = _credit_note(merchant_id, credit_note_id)
    return _facturx_pdf(document, parts), f"{document.number}-facturx.pdf"


def credit_note_ubl(merchant_id: str, credit_note_id: str) -> tuple[bytes, str]:
    from chalicelib.services.einvoice_ubl import ubl_xml

    document, _ = _credit_note(merchant_id, credit_note_id)
    return ubl_xml(document), f"{document.number}.xml"


def drop(merchant_id: str, document_id: str) -> dict | None:
    """Hand a finalized invoice (`inv_…`) or credit note (`cn_…`) to the
    e-invoicing platform: its Factur-X and UBL, then its manifest, in the
    drop bucket (module docstring). None when no bucket is set. Safe to
    repeat: the same keys are written again."""
    bucket = config.settings().einvoice_bucket
    if not bucket:
        return None
    from chalicelib import aws
    from chalicelib.services.einvoice_ubl import ubl_xml

    credit = document_id.startswith("cn_")
    document, parts = (_credit_note if credit else _invoice)(merchant_id, document_id)
    folder = f"{merchant_id}/{'credit-notes' if credit else 'invoices'}/{document.number}"
    files = {"facturx.pdf": (_facturx_pdf(document, parts), "application/pdf"), "ubl.xml": (ubl_xml(document), XML)}

    s3 = aws.client("s3")
    for name, (body, media_type) in files.items():
        s3.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=body, ContentType=media_type)
    manifest = {
        "object": "einvoice_drop", "type": document.kind, "id": document_id, "number": document.number,
        "merchant_id": merchant_id, "issue_date": document.issue_date.isoformat(), "currency": document.currency,
        "total": str(document.grand_total), "seller": {"siren": document.seller.siren,
                                                       "vat_number": document.seller.vat_number},
        "buyer": {"name": document.buyer.name, "vat_number": document.buyer.vat_number},
        "files": {name: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body), "media_type": media_type}
                  for name, (body, media_type) in files.items()},
        "formats": {"facturx.pdf": "Factur-X 1.0 EN 16931, PDF/A-3", "ubl.xml": "Peppol BIS Billing 3.0"},
    }
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest.json", Body=json.dumps(manifest, indent=2).encode(),
                  ContentType="application/json")
    return {"bucket": bucket, "prefix": folder, "files": sorted([*files, "manifest.json"])}


# The bus's events that make a document final, and where each carries it.
DROPPED_EVENTS = {"invoice.finalized": "invoice", "credit_note.created": "credit_note"}


def drop_for_event(event: dict) -> dict | None:
    """Drop the document an EventBridge event names (its `detail-type`,
    `detail.merchant_id` and `detail.invoice|credit_note.id`). None for an
    event of another kind, or a document that cannot be an e-invoice (its
    parties lack what EN 16931 needs: logged with what is missing)."""
    kind = DROPPED_EVENTS.get(event.get("detail-type"))
    detail = event.get("detail") or {}
    if kind is None:
        return None
    merchant_id, document_id = detail.get("merchant_id"), (detail.get(kind) or {}).get("id")
    if not merchant_id or not document_id:
        raise ValueError(f"a {event.get('detail-type')} event without merchant_id or {kind}.id")
    try:
        return drop(merchant_id, document_id)
    except Conflict as error:
        if error.code != "legal_identity_incomplete":
            raise
        from chalicelib.observability import logger, metrics

        logger.warning("not handed to the e-invoicing platform", extra={"document_id": document_id,
                                                                        "reason": error.message})
        metrics.add_metric(name="EInvoiceIncomplete", unit="Count", value=1)
        return None


def _invoice(merchant_id: str, invoice_id: str) -> tuple[LegalDocument, tuple]:
    record = invoice_store.get_invoice(merchant_id, invoice_id)
    if record.status == "draft" or not record.number:
        raise Conflict("the invoice is a draft: its e-invoice exists once it is finalized", code="invalid_state")
    seller, buyer = record.party("seller"), record.party("buyer")
    language, timezone = language_of(record.locale), seller.get("timezone") or "UTC"
    invoice = invoices.serialize(record)
    document = invoice_document(invoice, seller, buyer, language=language, timezone=timezone)
    _complete(document)
    return document, ("invoice", invoice, seller, buyer, language, timezone, None)


def _credit_note(merchant_id: str, credit_note_id: str) -> tuple[LegalDocument, tuple]:
    record = credit_note_store.find_credit_note(merchant_id, credit_note_id)
    if record is None:
        raise NotFound(f"no credit note {credit_note_id}")
    seller, buyer = record.party("seller"), record.party("buyer")
    language, timezone = language_of(record.locale), seller.get("timezone") or "UTC"
    note = credit_notes.serialize(record)
    invoice = invoices.serialize(invoice_store.get_invoice(merchant_id, record.invoice_id))
    document = credit_note_document(note, invoice, seller, buyer, language=language, timezone=timezone)
    _complete(document)
    return document, ("credit_note", note, seller, buyer, language, timezone, invoice)


def _complete(document: LegalDocument) -> None:
    missing = missing_for_einvoice(document)
    if missing:
        raise Conflict(
            f"this {document.kind.replace('_', ' ')} was issued without what an EN 16931 e-invoice needs: "
            f"{', '.join(missing)}; set them (PATCH /merchant, PATCH /customers/{{id}}) and the next documents "
            "will have them (an issued one never changes)", code="legal_identity_incomplete")


def _facturx_pdf(document: LegalDocument, parts: tuple) -> bytes:
    from chalicelib.services.einvoice_cii import cii_xml
    from chalicelib.services.invoice_pdf import render_credit_note_pdf, render_invoice_pdf

    kind, data, seller, buyer, language, timezone, invoice = parts
    xml = cii_xml(document)
    if kind == "invoice":
        return render_invoice_pdf(data, seller, buyer, language=language, timezone=timezone, facturx_xml=xml)
    return render_credit_note_pdf(data, seller, buyer, language=language, timezone=timezone, invoice=invoice,
                                  facturx_xml=xml)
