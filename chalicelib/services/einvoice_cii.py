"""Factur-X's XML: the UN/CEFACT Cross Industry Invoice (D16B) of the EN 16931
profile (`urn:cen.eu:en16931:2017`), written from a LegalDocument
(domain/legal_document.py) with the standard library's ElementTree: no
lxml in the Lambda package (docs/architecture.md, "Legal invoices"). The
tests read it back and check it against the Factur-X 1.09 schemas and the
EN 16931 rules (schematron) that the `factur-x` library ships.

Element order follows the schema's sequences; an invoice is TypeCode 380,
a credit note 381 with positive amounts and the invoice it credits
(BT-25, BT-26).
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from xml.etree import ElementTree as ET

from chalicelib.domain.legal_document import LegalDocument, Party, seller_legal_line
from chalicelib.domain.money import format_amount, format_decimal

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
GUIDELINE = "urn:cen.eu:en16931:2017"
FILENAME = "factur-x.xml"
LEVEL = "EN 16931"

for _prefix, _uri in (("rsm", RSM), ("ram", RAM), ("udt", UDT), ("qdt", QDT)):
    ET.register_namespace(_prefix, _uri)


def cii_xml(document: LegalDocument) -> bytes:
    """The CII XML of the document, UTF-8 with its declaration."""
    money = _money(document.currency)
    root = ET.Element(f"{{{RSM}}}CrossIndustryInvoice")
    context = _sub(root, RSM, "ExchangedDocumentContext")
    _sub(_sub(context, RAM, "GuidelineSpecifiedDocumentContextParameter"), RAM, "ID", GUIDELINE)

    header = _sub(root, RSM, "ExchangedDocument")
    _sub(header, RAM, "ID", document.number)
    _sub(header, RAM, "TypeCode", "381" if document.kind == "credit_note" else "380")
    _date(_sub(header, RAM, "IssueDateTime"), document.issue_date)
    for subject, text in document.notes:
        note = _sub(header, RAM, "IncludedNote")
        _sub(note, RAM, "Content", text)
        _sub(note, RAM, "SubjectCode", subject)

    transaction = _sub(root, RSM, "SupplyChainTradeTransaction")
    for line in document.lines:
        item = _sub(transaction, RAM, "IncludedSupplyChainTradeLineItem")
        _sub(_sub(item, RAM, "AssociatedDocumentLineDocument"), RAM, "LineID", line.id)
        product = _sub(item, RAM, "SpecifiedTradeProduct")
        _sub(product, RAM, "Name", line.label)
        if line.item and line.item != line.label:
            _sub(product, RAM, "Description", line.item)
        price = _sub(_sub(item, RAM, "SpecifiedLineTradeAgreement"), RAM, "NetPriceProductTradePrice")
        _sub(price, RAM, "ChargeAmount", format_decimal(line.priced.unit_price))
        quantity = _sub(_sub(item, RAM, "SpecifiedLineTradeDelivery"), RAM, "BilledQuantity",
                        format_decimal(line.priced.quantity))
        quantity.set("unitCode", line.priced.unit_code)
        settlement = _sub(item, RAM, "SpecifiedLineTradeSettlement")
        tax = _sub(settlement, RAM, "ApplicableTradeTax")
        _sub(tax, RAM, "TypeCode", "VAT")
        _sub(tax, RAM, "CategoryCode", line.vat_category)
        _sub(tax, RAM, "RateApplicablePercent", format_decimal(line.vat_rate))
        if line.period_start and line.period_end:
            _period(settlement, line.period_start, line.period_end)
        _sub(_sub(settlement, RAM, "SpecifiedTradeSettlementLineMonetarySummation"), RAM, "LineTotalAmount",
             money(line.priced.amount))

    agreement = _sub(transaction, RAM, "ApplicableHeaderTradeAgreement")
    if document.buyer.reference:
        _sub(agreement, RAM, "BuyerReference", document.buyer.reference)
    _party(agreement, "SellerTradeParty", document.seller, document.language, seller=True)
    _party(agreement, "BuyerTradeParty", document.buyer, document.language, seller=False)
    _sub(transaction, RAM, "ApplicableHeaderTradeDelivery")

    settlement = _sub(transaction, RAM, "ApplicableHeaderTradeSettlement")
    _sub(settlement, RAM, "InvoiceCurrencyCode", document.currency)
    for vat in document.vat:
        tax = _sub(settlement, RAM, "ApplicableTradeTax")
        _sub(tax, RAM, "CalculatedAmount", money(vat.amount))
        _sub(tax, RAM, "TypeCode", "VAT")
        if vat.reason:
            _sub(tax, RAM, "ExemptionReason", vat.reason)
        _sub(tax, RAM, "BasisAmount", money(vat.basis))
        _sub(tax, RAM, "CategoryCode", vat.category)
        if vat.reason_code:
            _sub(tax, RAM, "ExemptionReasonCode", vat.reason_code)
        _sub(tax, RAM, "RateApplicablePercent", format_decimal(vat.rate))
    if document.period_start and document.period_end:
        _period(settlement, document.period_start, document.period_end)
    if document.payment_terms or document.due_date:
        terms = _sub(settlement, RAM, "SpecifiedTradePaymentTerms")
        if document.payment_terms:
            _sub(terms, RAM, "Description", document.payment_terms)
        if document.due_date:
            _date(_sub(terms, RAM, "DueDateDateTime"), document.due_date)
    totals = _sub(settlement, RAM, "SpecifiedTradeSettlementHeaderMonetarySummation")
    _sub(totals, RAM, "LineTotalAmount", money(document.line_total))
    _sub(totals, RAM, "TaxBasisTotalAmount", money(document.line_total))
    _sub(totals, RAM, "TaxTotalAmount", money(document.tax_total)).set("currencyID", document.currency)
    _sub(totals, RAM, "GrandTotalAmount", money(document.grand_total))
    if document.prepaid:
        _sub(totals, RAM, "TotalPrepaidAmount", money(document.prepaid))
    _sub(totals, RAM, "DuePayableAmount", money(document.due_amount))
    if document.preceding:
        number, issued = document.preceding
        reference = _sub(settlement, RAM, "InvoiceReferencedDocument")
        _sub(reference, RAM, "IssuerAssignedID", number)
        _date(_sub(reference, RAM, "FormattedIssueDateTime"), issued, QDT)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _party(parent: ET.Element, tag: str, party: Party, language: str, *, seller: bool) -> None:
    node = _sub(parent, RAM, tag)
    _sub(node, RAM, "Name", party.legal_name or party.name)
    legal_line = seller_legal_line(party, language) if seller else None
    if legal_line:
        _sub(node, RAM, "Description", legal_line)
    if party.registration_id or (party.legal_name and party.name and party.legal_name != party.name):
        organization = _sub(node, RAM, "SpecifiedLegalOrganization")
        if party.registration_id:
            identifier = _sub(organization, RAM, "ID", party.registration_id)
            if party.siren:
                identifier.set("schemeID", "0002")
        if party.legal_name and party.name and party.legal_name != party.name:
            _sub(organization, RAM, "TradingBusinessName", party.name)
    address = party.address or {}
    postal = _sub(node, RAM, "PostalTradeAddress")
    for key, name in (("postal_code", "PostcodeCode"), ("line1", "LineOne"), ("line2", "LineTwo"),
                      ("city", "CityName")):
        if address.get(key):
            _sub(postal, RAM, name, address[key])
    _sub(postal, RAM, "CountryID", party.country or "")
    if address.get("state"):
        _sub(postal, RAM, "CountrySubDivisionName", address["state"])
    if party.email and not seller:
        communication = _sub(node, RAM, "URIUniversalCommunication")
        _sub(communication, RAM, "URIID", party.email).set("schemeID", "EM")
    if party.vat_number:
        _sub(_sub(node, RAM, "SpecifiedTaxRegistration"), RAM, "ID", party.vat_number).set("schemeID", "VA")
    elif seller and party.registration_id:
        # No VAT number (a French franchise en base): the registration stands as tax registration (BT-32).
        _sub(_sub(node, RAM, "SpecifiedTaxRegistration"), RAM, "ID", party.registration_id).set("schemeID", "FC")


def _period(parent: ET.Element, start: date, end: date) -> None:
    period = _sub(parent, RAM, "BillingSpecifiedPeriod")
    _date(_sub(period, RAM, "StartDateTime"), start)
    _date(_sub(period, RAM, "EndDateTime"), end)


def _date(parent: ET.Element, day: date, namespace: str = UDT) -> None:
    _sub(parent, namespace, "DateTimeString", day.strftime("%Y%m%d")).set("format", "102")


def _sub(parent: ET.Element, namespace: str, tag: str, text: str | None = None) -> ET.Element:
    node = ET.SubElement(parent, f"{{{namespace}}}{tag}")
    if text is not None:
        node.text = text
    return node


def _money(currency: str):
    def money(value: Decimal) -> str:
        return format_amount(value, currency)

    return money
