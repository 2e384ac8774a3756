"""Legal invoices through the API (moto, localstripe): the merchant's and the
customer's legal identity, checked and shown; invoices and credit notes
whose PDF carries every French mention; their Factur-X (the CII XML
embedded in a PDF/A-3) and UBL (Peppol BIS 3.0) read back and checked
against the schemas and the EN 16931 rules the `factur-x` library ships
(tests/einvoice_checks.py), for an ordinary invoice, a reverse-charge one
and a credit note; the S3 drop for the e-invoicing platform."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from lxml import etree

from tests.einvoice_checks import check_cii, check_ubl, embedded_xml
from tests.integration.test_billing import CLICO, new_customer, new_offer, pdf_text, subscribe
from tests.integration.test_credit_notes import credit

ROOT = Path(__file__).resolve().parents[2]
CII = {"rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
       "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
       "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"}
UBL = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
       "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"}

IDENTITY = {
    "legal_name": "Optique Durand SAS",
    "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"},
    "siren": "732 829 320",
    "vat_number": "FR44732829320",
    "legal_form": "SAS",
    "share_capital": "10000.00",
    "registration": "RCS Paris B 732 829 320",
}
LABO = {"line1": "3 avenue Foch", "postal_code": "69006", "city": "Lyon", "country": "FR"}
NAMED_CLICO = {**CLICO, "components": [
    {**CLICO["components"][0], "name": "Abonnement Neksia"}, *CLICO["components"][1:]]}
PDF = {"Accept": "application/pdf"}
XML = {"Accept": "application/xml"}


@pytest.fixture
def clock_start():
    """A Paris month boundary: invoices dated 1 December 2026."""
    return datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)


@pytest.fixture
def legal_merchant(new_merchant):
    return new_merchant(**IDENTITY)


def first_invoice(api, **customer):
    customer_id = new_customer(api, **{"address": LABO, "vat_number": "FR40303265045", **customer})
    if getattr(api, "offer_id", None) is None:
        api.offer_id = new_offer(api, NAMED_CLICO)
    sub = subscribe(api, customer_id, api.offer_id, options=["express"])
    [invoice] = api.get(f"/invoices?subscription_id={sub['id']}").json["data"]
    return customer_id, invoice


def facturx_of(api, path: str) -> tuple[bytes, bytes]:
    response = api.get(f"{path}/facturx.pdf", headers=PDF)
    assert response.status == 200, response
    assert response.headers["Content-Type"] == "application/pdf"
    pdf = raw(response)
    name, xml = embedded_xml(pdf)
    assert name == "factur-x.xml"
    return pdf, xml


def ubl_of(api, path: str) -> bytes:
    response = api.get(f"{path}/ubl.xml", headers=XML)
    assert response.status == 200, response
    assert response.headers["Content-Type"].startswith("application/xml")
    return raw(response)


def raw(response) -> bytes:
    """A binary answer's body (the test client's Api gives what is not JSON as it came)."""
    body = response.json
    return body.encode("utf-8") if isinstance(body, str) else body


def text_of(tree, path: str, ns=CII) -> list[str]:
    return [node.text for node in tree.findall(path, ns)]


# -- the legal identity ---------------------------------------------------------------------


def test_the_merchants_legal_identity_is_checked_and_shown(operator, legal_merchant):
    shown = legal_merchant.get("/merchant").json
    assert {key: shown[key] for key in IDENTITY} == {**IDENTITY, "siren": "732829320"}
    # A French VAT number holds its SIREN and a key computed from it.
    for body, param in (({"siren": "732829321"}, "siren"), ({"vat_number": "FR45732829320"}, "vat_number"),
                        ({"vat_number": "FR40303265045"}, "vat_number"), ({"vat_number": "DE12345678"}, "vat_number"),
                        ({"vat_number": "GR123456789"}, "vat_number"),
                        ({"address": {"line1": "x", "postal_code": "7500", "city": "Paris", "country": "FR"}},
                         "address.postal_code"),
                        ({"address": {"line1": "x", "postal_code": "75002", "country": "FR"}}, "address.city"),
                        ({"address": {**LABO, "country": "XX"}}, "address.country"),
                        ({"share_capital": 10000}, "share_capital"), ({"legal_form": ""}, "legal_form")):
        refused = legal_merchant.patch("/merchant", body)
        assert refused.status == 400 and refused.json["error"]["param"] == param, (body, refused)
    changed = legal_merchant.patch("/merchant", {"vat_number": "fr 44 732 829 320", "address": None}).json
    assert changed["vat_number"] == "FR44732829320" and changed["address"] is None
    assert changed["legal_name"] == "Optique Durand SAS"
    created = operator.post("/admin/merchants", {"name": "Opticien Belge", "default_currency": "EUR",
                                                 "company_id": "0123.456.789", "vat_number": "BE0123456789"})
    assert created.status == 201 and created.json["company_id"] == "0123.456.789"
    assert created.json["siren"] is None


def test_the_customers_address_and_vat_number(legal_merchant):
    customer_id = new_customer(legal_merchant, card=None, address={**LABO, "line2": "Bâtiment B"},
                               vat_number="FR40303265045")
    shown = legal_merchant.get(f"/customers/{customer_id}").json
    assert shown["address"] == {**LABO, "line2": "Bâtiment B"} and shown["vat_number"] == "FR40303265045"
    refused = legal_merchant.patch(f"/customers/{customer_id}", {"vat_number": "DE12"})
    assert refused.status == 400 and refused.json["error"]["param"] == "vat_number"
    refused = legal_merchant.patch(f"/customers/{customer_id}", {"address": {"line1": "x"}})
    assert refused.status == 400 and refused.json["error"]["param"].startswith("address.")
    moved = {"line1": "8 quai Saint-Antoine", "postal_code": "69002", "city": "Lyon", "country": "FR"}
    assert legal_merchant.patch(f"/customers/{customer_id}", {"address": moved}).json["address"] == moved
    assert legal_merchant.get(f"/customers/{customer_id}").json["address"] == moved
    cleared = legal_merchant.patch(f"/customers/{customer_id}", {"vat_number": None, "address": None}).json
    assert cleared["vat_number"] is None and cleared["address"] is None


# -- an ordinary invoice ----------------------------------------------------------------------


def test_an_invoice_is_legal_in_pdf_factur_x_and_ubl(legal_merchant, clock):
    customer_id, invoice = first_invoice(legal_merchant)
    base, express = invoice["lines"]
    assert base["label"] == "Clic&O Neksia – Abonnement Neksia" and base["offer_name"] == "Clic&O Neksia"
    assert base["unit"] == "month" and base["description"] == "base"
    assert express["label"] == "Clic&O Neksia – Option 4h on-site"

    text = pdf_text(raw(legal_merchant.get(f"/invoices/{invoice['id']}/pdf", headers=PDF)))
    for expected in ("Facture", invoice["number"], "Optique Durand SAS", "SIREN : 732 829 320",
                     "RCS Paris B 732 829 320", "FR44732829320", "SAS au capital de 10 000,00 €", "12 rue de la Paix",
                     "Labo Martin", "3 avenue Foch", "FR40303265045", "Date d'échéance", "Clic&O Neksia – Abonnement",
                     "mois", "PU HT", "Total HT", "TVA 20,0 %", "Total TTC", "Pas d'escompte",
                     "trois fois le taux d'intérêt légal", "indemnité forfaitaire pour frais de recouvrement de 40 €",
                     "prestation de services"):
        assert expected in text, expected

    pdf, xml = facturx_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_cii(xml)
    tree = etree.fromstring(xml)
    assert text_of(tree, "rsm:ExchangedDocument/ram:ID") == [invoice["number"]]
    assert text_of(tree, "rsm:ExchangedDocument/ram:TypeCode") == ["380"]
    agreement = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"
    assert text_of(tree, f"{agreement}/ram:SellerTradeParty/ram:SpecifiedLegalOrganization/ram:ID") == ["732829320"]
    assert text_of(tree, f"{agreement}/ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == ["FR40303265045"]
    totals = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement/" \
             "ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert text_of(tree, f"{totals}/ram:TaxBasisTotalAmount") == [invoice["subtotal"]]
    assert text_of(tree, f"{totals}/ram:GrandTotalAmount") == [invoice["total"]]
    names = text_of(tree, ".//ram:IncludedSupplyChainTradeLineItem/ram:SpecifiedTradeProduct/ram:Name")
    assert names == [base["label"], express["label"]]
    _is_pdf_a3(pdf)

    ubl = ubl_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_ubl(ubl)
    document = etree.fromstring(ubl)
    assert document.findtext("cbc:ID", namespaces=UBL) == invoice["number"]
    assert document.findtext("cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount", namespaces=UBL) == invoice["total"]
    assert document.find("cac:AccountingSupplierParty/cac:Party/cbc:EndpointID", UBL).get("schemeID") == "0002"
    assert document.findtext("cbc:BuyerReference", namespaces=UBL) == customer_id


def test_a_jpy_invoice_in_factur_x_and_ubl_has_no_decimals(legal_merchant, clock):
    """Yen have no minor unit: the amounts of the CII and the UBL are whole
    yen, in JPY, and still pass the schemas and the EN 16931 rules."""
    from tests.integration.test_currencies import WORLD

    legal_merchant.offer_id = new_offer(legal_merchant, WORLD)
    _, invoice = first_invoice(legal_merchant, currency="JPY")
    assert invoice["currency"] == "JPY"
    assert (invoice["subtotal"], invoice["total"]) == ("12300", "14760")

    _, xml = facturx_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_cii(xml)
    tree = etree.fromstring(xml)
    settlement = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
    assert text_of(tree, f"{settlement}/ram:InvoiceCurrencyCode") == ["JPY"]
    totals = f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert text_of(tree, f"{totals}/ram:GrandTotalAmount") == ["14760"]
    assert text_of(tree, f"{totals}/ram:TaxTotalAmount") == ["2460"]

    ubl = ubl_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_ubl(ubl)
    document = etree.fromstring(ubl)
    assert document.findtext("cbc:DocumentCurrencyCode", namespaces=UBL) == "JPY"
    total = document.find("cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount", UBL)
    assert (total.text, total.get("currencyID")) == ("14760", "JPY")


def _is_pdf_a3(pdf: bytes) -> None:
    """PDF/A-3B as far as it can be read back: identified so in its XMP with
    Factur-X's properties, an sRGB output intent, every font embedded, the
    XML an associated file (Data)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    catalog = reader.trailer["/Root"]
    xmp = catalog["/Metadata"].get_object().get_data().decode("utf-8")
    for expected in ("<pdfaid:part>3</pdfaid:part>", "<pdfaid:conformance>B</pdfaid:conformance>",
                     "<fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>",
                     "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>", "Factur-X PDFA Extension Schema"):
        assert expected in xmp, expected
    assert catalog["/OutputIntents"][0].get_object()["/S"] == "/GTS_PDFA1"
    [spec] = [ref.get_object() for ref in catalog["/AF"]]
    assert (spec["/F"], spec["/AFRelationship"]) == ("factur-x.xml", "/Data")
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            descriptor = font.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"]
            assert "/FontFile2" in descriptor


# -- reverse charge -------------------------------------------------------------------------


def test_a_business_of_another_member_state_is_invoiced_in_reverse_charge(legal_merchant, clock):
    address = {"line1": "Friedrichstraße 1", "postal_code": "10117", "city": "Berlin", "country": "DE"}
    _, invoice = first_invoice(legal_merchant, country="DE", locale="en", address=address,
                               vat_number="DE123456789", name="Optik Schmidt GmbH")
    assert invoice["reverse_charge"] is True and invoice["tax"] == [{"rate": "0", "amount": "0.00"}]
    assert invoice["total"] == invoice["subtotal"] == "79.00"
    assert invoice["lines"][0]["label"] == "Clic&O Neksia – Abonnement Neksia"
    pdf, xml = facturx_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_cii(xml)
    tree = etree.fromstring(xml)
    tax = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax"
    assert text_of(tree, f"{tax}/ram:CategoryCode") == ["AE"]
    assert text_of(tree, f"{tax}/ram:ExemptionReasonCode") == ["VATEX-EU-AE"]
    text = pdf_text(pdf)
    for expected in ("Invoice", "Reverse charge", "DE123456789", "Friedrichstraße 1", "Germany", "Due date",
                     "fixed recovery charge of EUR 40", "No discount for early payment"):
        assert expected in text, expected
    ubl = ubl_of(legal_merchant, f"/invoices/{invoice['id']}")
    check_ubl(ubl)
    assert etree.fromstring(ubl).findtext("cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:ID",
                                          namespaces=UBL) == "AE"


def test_a_customer_of_the_merchants_own_country_pays_vat_whatever_its_number(legal_merchant, clock):
    _, invoice = first_invoice(legal_merchant)
    assert invoice["reverse_charge"] is False and invoice["tax"] == [{"rate": "20.0", "amount": "15.80"}]


# -- credit notes -----------------------------------------------------------------------------


def test_a_credit_note_as_factur_x_and_ubl(legal_merchant, clock):
    _, invoice = first_invoice(legal_merchant)
    base = invoice["lines"][0]
    note = credit(legal_merchant, invoice["id"], {"lines": [{"invoice_line_id": base["id"], "amount": "10.00"}],
                                                 "reason": "goodwill", "refund": "card", "memo": "Retard"}).json
    pdf, xml = facturx_of(legal_merchant, f"/credit-notes/{note['id']}")
    check_cii(xml)
    tree = etree.fromstring(xml)
    assert text_of(tree, "rsm:ExchangedDocument/ram:TypeCode") == ["381"]
    settlement = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
    assert text_of(tree, f"{settlement}/ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == [invoice["number"]]
    assert text_of(tree, f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:GrandTotalAmount") \
        == [note["total"]] == ["12.00"]
    assert text_of(tree, ".//ram:SpecifiedTradeProduct/ram:Name") == [base["label"]]
    text = pdf_text(pdf)
    for expected in ("Avoir", note["number"], f"Avoir sur la facture {invoice['number']}", "SIREN : 732 829 320",
                     "Clic&O Neksia – Abonnement Neksia", "Retard", "12,00"):
        assert expected in text, expected
    ubl = ubl_of(legal_merchant, f"/credit-notes/{note['id']}")
    check_ubl(ubl)
    document = etree.fromstring(ubl)
    assert document.tag.endswith("}CreditNote")
    assert document.findtext("cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID",
                             namespaces=UBL) == invoice["number"]


# -- what is refused ------------------------------------------------------------------------


def test_no_e_invoice_without_the_legal_identity_it_needs(merchant, new_merchant, legal_merchant, clock):
    _, invoice = first_invoice(merchant)
    for suffix in ("facturx.pdf", "ubl.xml"):
        refused = merchant.get(f"/invoices/{invoice['id']}/{suffix}", headers={**PDF, **XML, "Accept": "*/*"})
        assert refused.status == 409 and refused.json["error"]["code"] == "legal_identity_incomplete", refused
        assert "merchant address" in refused.json["error"]["message"]
    # The plain PDF is still there.
    assert merchant.get(f"/invoices/{invoice['id']}/pdf", headers=PDF).status == 200
    _, ours = first_invoice(legal_merchant)
    assert legal_merchant.get(f"/invoices/{ours['id']}/ubl.xml", headers={"Accept": "application/json"}).json[
        "error"]["param"] == "Accept"
    assert legal_merchant.get(f"/invoices/{ours['id']}/ubl.xml", headers={"Accept": "text/xml"}).status == 200
    other = new_merchant(name="Autre opticien", invoice_prefix="AO", **IDENTITY)
    for path in (f"/invoices/{ours['id']}/facturx.pdf", f"/invoices/{ours['id']}/ubl.xml",
                 "/credit-notes/cn_nope/ubl.xml", "/invoices/inv_nope/facturx.pdf"):
        assert other.get(path, headers={"Accept": "*/*"}).status == 404, path


# -- the platform drop ------------------------------------------------------------------------


def drain_einvoices() -> int:
    """What the bus put on the e-invoice queue, handed to einvoice_drop as
    Lambda would; returns how many messages were handled."""
    import boto3

    import app
    from infra.local.lambda_events import drain_once
    from tests.integration.domain_events import derive_events

    derive_events()
    url = boto3.client("sqs", region_name="eu-west-1").get_queue_url(QueueName="EInvoiceQueue")["QueueUrl"]
    handled = 0
    while n := drain_once(url, app.app.handler_map["einvoice_drop"]):
        handled += n
    return handled


def dropped_files(prefix: str) -> dict[str, bytes]:
    import boto3

    from chalicelib.config import settings

    s3 = boto3.client("s3", region_name="eu-west-1")
    listed = s3.list_objects_v2(Bucket=settings().einvoice_bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1]: s3.get_object(Bucket=settings().einvoice_bucket, Key=o["Key"])["Body"].read()
            for o in listed}


def test_finalized_documents_are_dropped_for_the_platform(legal_merchant, clock):
    """invoice.finalized and credit_note.created go from the bus to the
    e-invoice queue (EInvoiceRule), whose consumer drops each document."""
    import hashlib

    _, invoice = first_invoice(legal_merchant)
    note = credit(legal_merchant, invoice["id"], {"amount": "12.00", "reason": "goodwill", "refund": "none"}).json
    assert drain_einvoices() == 2
    merchant_id = legal_merchant.merchant["id"]
    files = dropped_files(f"{merchant_id}/invoices/{invoice['number']}/")
    assert sorted(files) == ["facturx.pdf", "manifest.json", "ubl.xml"]
    manifest = json.loads(files["manifest.json"])
    assert (manifest["type"], manifest["number"], manifest["total"]) == ("invoice", invoice["number"], invoice["total"])
    assert manifest["files"]["ubl.xml"]["sha256"] == hashlib.sha256(files["ubl.xml"]).hexdigest()
    check_ubl(files["ubl.xml"])
    credited = dropped_files(f"{merchant_id}/credit-notes/{note['number']}/")
    assert json.loads(credited["manifest.json"])["type"] == "credit_note" and len(credited) == 3
    # Delivered again (SQS at least once): the same keys, written again.
    from chalicelib.services import einvoices

    again = einvoices.drop_for_event({"detail-type": "invoice.finalized",
                                      "detail": {"merchant_id": merchant_id, "invoice": {"id": invoice["id"]}}})
    assert again["prefix"] == f"{merchant_id}/invoices/{invoice['number']}"
    assert dropped_files(f"{merchant_id}/invoices/{invoice['number']}/")["ubl.xml"] == files["ubl.xml"]


def test_a_document_without_the_legal_identity_is_not_dropped_nor_retried(new_merchant, clock):
    plain = new_merchant()  # no SIREN, no address: not an EN 16931 invoice
    customer_id = new_customer(plain)
    sub = subscribe(plain, customer_id, new_offer(plain, NAMED_CLICO))
    [invoice] = plain.get(f"/invoices?subscription_id={sub['id']}").json["data"]
    assert invoice["status"] != "draft"
    assert drain_einvoices() == 1  # handled (skipped), not failed: nothing comes back
    assert dropped_files(f"{plain.merchant['id']}/") == {}
    assert drain_einvoices() == 0


def test_without_a_bucket_nothing_is_dropped(legal_merchant, clock, monkeypatch):
    from chalicelib import config
    from chalicelib.services import einvoices

    _, invoice = first_invoice(legal_merchant)
    monkeypatch.setenv("EINVOICE_BUCKET", "")
    config.settings.cache_clear()
    try:
        assert einvoices.drop(legal_merchant.merchant["id"], invoice["id"]) is None
    finally:
        monkeypatch.undo()
        config.settings.cache_clear()


# -- what a person sees -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (Debian's poppler-utils) is not installed")
def test_the_pdfs_render_as_pages(legal_merchant, clock):
    """The first page of a French invoice, an English reverse-charge one
    and a credit note as PNG (test-artifacts/), for a person to look at."""
    _, french = first_invoice(legal_merchant)
    address = {"line1": "Friedrichstraße 1", "postal_code": "10117", "city": "Berlin", "country": "DE"}
    _, english = first_invoice(legal_merchant, country="DE", locale="en", address=address, vat_number="DE123456789",
                               name="Optik Schmidt GmbH")
    note = credit(legal_merchant, french["id"], {"amount": "12.00", "reason": "goodwill", "refund": "card"}).json
    out = ROOT / "test-artifacts" / "einvoices"
    out.mkdir(parents=True, exist_ok=True)
    for name, path in (("invoice-fr", f"/invoices/{french['id']}"), ("invoice-en-reverse-charge",
                                                                      f"/invoices/{english['id']}"),
                       ("credit-note-fr", f"/credit-notes/{note['id']}")):
        pdf, _ = facturx_of(legal_merchant, path)
        (out / f"{name}.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile", str(out / f"{name}.pdf"),
                        str(out / name)], check=True)
        assert (out / f"{name}.png").stat().st_size > 20_000
