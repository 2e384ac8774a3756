"""The invoice (and the credit note) as a PDF document, in the customer's
language (French or English), and as Factur-X: the same PDF, PDF/A-3, with
its EN 16931 XML embedded as factur-x.xml (services/einvoice_cii.py).

What the law wants an invoice to show (article 242 nonies A of the CGI,
articles L441-9 and L441-10 of the Code de commerce) comes from the legal
document (domain/legal_document.py): the seller (legal name, address,
SIREN, RCS registration, VAT number, legal form and share capital, also in
the foot of every page) and the buyer (name, address, VAT number), the
number and the dates of issue and payment, each line with its period,
quantity, unit, unit price excluding VAT, VAT rate and amount, the totals
excluding VAT, the VAT and the total including it, and the mentions:
type of supply, payment terms, no discount for early payment, late-payment
penalties and the fixed recovery indemnity for business customers, the
reverse charge ("Autoliquidation") or why no VAT is charged.

Dates are written in the merchant's time zone (domain/document_format.py).
The font is DejaVu Sans Condensed, embedded (PDF/A wants every font
embedded), subset to Latin, Greek and Cyrillic (chalicelib/fonts, 110 KB):
a character outside it is drawn as '?', never an error.
"""
from __future__ import annotations

import warnings
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

# The formats every document shares live in the domain; they are named
# from here too (the e-mails and the console write amounts as the PDF does).
from chalicelib.domain.document_format import (  # noqa: F401
    format_date, format_money, format_number, format_period, language_of, write_date,
)
from chalicelib.domain.money import format_decimal

if TYPE_CHECKING:
    # The e-mails and the console import the formats from here at every cold
    # start; the documents' model is imported when a PDF is drawn.
    from chalicelib.domain.legal_document import LegalDocument, Party

FONT = "DejaVu"
FONT_DIR = Path(__file__).resolve().parents[1] / "fonts"
FACTURX_FILENAME = "factur-x.xml"

LABELS = {
    "en": {
        "invoice": "Invoice",
        "draft": "Draft invoice",
        "number": "Number",
        "date": "Date of issue",
        "period": "Period",
        "seller": "From",
        "buyer": "Bill to",
        "description": "Description",
        "quantity": "Qty",
        "unit": "Unit price excl. VAT",
        "amount": "Amount excl. VAT",
        "subtotal": "Subtotal (excl. VAT)",
        "vat": "VAT {rate}%",
        "credit": "Credit applied",
        "total": "Total (incl. VAT)",
        "paid": "Amount paid",
        "due": "Amount due",
        "status": {"paid": "Paid", "open": "Awaiting payment", "void": "Void", "uncollectible": "Uncollectible",
                   "draft": "Draft"},
        "void_note": "This invoice has been voided; its number stays used.",
        "page": "Page {page}/{pages}",
        "due_date": "Due date",
        "payable": "Amount payable",
        "unit_column": "Unit",
        "vat_rate": "VAT",
        "vat_number": "VAT number: {number}",
        "company_id": "Company number: {id}",
        "of_date": "{number} of {date}",
        "country": "Country",
        "credited": "Credit notes",
        "credit_note": "Credit note",
        "credited_invoice": "Credits invoice",
        "reason": "Reason",
        "refund": "Refund",
        "credit_total": "Total credited (incl. VAT)",
        "reasons": {"duplicate": "Duplicate", "product_unsatisfactory": "Product unsatisfactory",
                    "order_change": "Order change", "goodwill": "Goodwill"},
        "refunds": {"card": "To the card", "credit_balance": "To the customer's credit balance",
                    "none": "None (lowers the amount due, or settled separately)"},
    },
    "fr": {
        "invoice": "Facture",
        "draft": "Facture provisoire",
        "number": "Numéro",
        "date": "Date d'émission",
        "period": "Période",
        "seller": "Émetteur",
        "buyer": "Client",
        "description": "Désignation",
        "quantity": "Qté",
        "unit": "PU HT",
        "amount": "Montant HT",
        "subtotal": "Total HT",
        "vat": "TVA {rate} %",
        "credit": "Avoir imputé",
        "total": "Total TTC",
        "paid": "Montant réglé",
        "due": "Reste à payer",
        "status": {"paid": "Payée", "open": "En attente de paiement", "void": "Annulée",
                   "uncollectible": "Irrécouvrable", "draft": "Brouillon"},
        "void_note": "Cette facture a été annulée ; son numéro reste attribué.",
        "page": "Page {page}/{pages}",
        "due_date": "Date d'échéance",
        "payable": "Net à payer",
        "unit_column": "Unité",
        "vat_rate": "TVA",
        "vat_number": "N° TVA intracommunautaire : {number}",
        "company_id": "Immatriculation : {id}",
        "of_date": "{number} du {date}",
        "country": "Pays",
        "credited": "Avoirs",
        "credit_note": "Avoir",
        "credited_invoice": "Facture d'origine",
        "reason": "Motif",
        "refund": "Remboursement",
        "credit_total": "Total de l'avoir TTC",
        "reasons": {"duplicate": "Doublon", "product_unsatisfactory": "Produit non satisfaisant",
                    "order_change": "Modification de commande", "goodwill": "Geste commercial"},
        "refunds": {"card": "Sur la carte", "credit_balance": "Au solde créditeur du client",
                    "none": "Aucun (réduit le reste à payer, ou réglé à part)"},
    },
}

def render_invoice_pdf(invoice: dict, seller: dict, buyer: dict, *, language: str, timezone: str,
                       facturx_xml: bytes | None = None) -> bytes:
    """The PDF of `invoice` (the API's invoice object), issued by `seller` to
    `buyer` (the invoice's snapshots); with `facturx_xml`, a PDF/A-3 carrying
    it as factur-x.xml (Factur-X)."""
    from chalicelib.domain.legal_document import invoice_document

    labels = LABELS[language]
    document = invoice_document(invoice, seller, buyer, language=language, timezone=timezone)

    def money(value):
        return format_money(value, invoice["currency"], language)

    facts = [
        (labels["number"], invoice.get("number") or "-"),
        (labels["date"], write_date(document.issue_date, language)),
        (labels["due_date"], write_date(document.due_date, language)),
    ]
    if invoice.get("period_start") and invoice.get("period_end"):
        facts.append((labels["period"], format_period(invoice["period_start"], invoice["period_end"], timezone,
                                                      language)))
    rows = _tax_rows(invoice, labels, language)
    rows.append((labels["total"], money(invoice["total"])))
    if Decimal(invoice.get("credit_applied") or "0"):
        rows.append((labels["credit"], money("-" + invoice["credit_applied"])))
    status = labels["status"].get(invoice["status"], invoice["status"])
    if facturx_xml is not None:
        # The e-invoice is the invoice as issued, as its XML says: what was
        # paid or credited since is not part of it.
        status, due_label = "", labels["payable"]
        rows.append((due_label, money(document.due_amount)))
    else:
        if Decimal(invoice.get("amount_credited") or "0"):
            rows.append((labels["credited"], money("-" + invoice["amount_credited"])))
        rows.append((labels["paid"], money(invoice["amount_paid"])))
        due_label = labels["due"]
        rows.append((due_label, money(invoice["amount_due"])))
    mentions = [text for _, text in document.notes]
    mentions.insert(1, document.payment_terms)
    if invoice["status"] == "void":
        mentions.append(labels["void_note"])
    return _render(
        document, title=labels["invoice"] if invoice.get("number") else labels["draft"],
        status=status, facts=facts, rows=rows,
        bold=(labels["total"], due_label), mentions=mentions, timezone=timezone,
        issued_at=invoice.get("finalized_at") or invoice["created_at"], facturx_xml=facturx_xml,
    )


def render_credit_note_pdf(note: dict, seller: dict, buyer: dict, *, language: str, timezone: str,
                           invoice: dict | None = None, facturx_xml: bytes | None = None) -> bytes:
    """The PDF of a credit note (the API's credit note object): the same
    document as an invoice, its lines the pre-tax amounts credited (named as
    the lines of `invoice`, the API's object of the invoice it credits), its
    totals what is credited; with `facturx_xml`, a Factur-X PDF/A-3."""
    from chalicelib.domain.legal_document import credit_note_document

    labels = LABELS[language]
    invoice = invoice or {"id": note["invoice_id"], "number": note.get("invoice_number"), "lines": [],
                          "tax": note["tax"], "created_at": note["created_at"]}
    document = credit_note_document(note, invoice, seller, buyer, language=language, timezone=timezone)

    def money(value):
        return format_money(value, note["currency"], language)

    number, issued = document.preceding
    facts = [
        (labels["number"], note["number"]),
        (labels["date"], write_date(document.issue_date, language)),
        (labels["credited_invoice"], labels["of_date"].format(number=number, date=write_date(issued, language))),
        (labels["reason"], labels["reasons"].get(note["reason"], note["reason"])),
        (labels["refund"], labels["refunds"].get(note["refund"], note["refund"])),
    ]
    rows = _tax_rows(note, labels, language)
    rows.append((labels["credit_total"], money(note["total"])))
    return _render(
        document, title=labels["credit_note"], status="", facts=facts, rows=rows, bold=(labels["credit_total"],),
        mentions=[text for _, text in document.notes], timezone=timezone, issued_at=note["created_at"],
        facturx_xml=facturx_xml,
    )


def _tax_rows(document: dict, labels: dict, language: str) -> list[tuple[str, str]]:
    rows = [(labels["subtotal"], format_money(document["subtotal"], document["currency"], language))]
    for tax in document["tax"]:
        rows.append((labels["vat"].format(rate=format_number(tax["rate"], language)),
                     format_money(tax["amount"], document["currency"], language)))
    return rows


def _render(document: LegalDocument, *, title: str, status: str, facts: list, rows: list, bold: tuple,
            mentions: list[str], timezone: str, issued_at: str, facturx_xml: bytes | None) -> bytes:
    with warnings.catch_warnings():
        # The deployment package leaves out Pillow, fpdf2's optional image
        # support (infra/aws/package.py): invoices draw no image.
        warnings.filterwarnings("ignore", message="Pillow could not be imported")
        from fpdf import FPDF

    language = document.language
    labels = LABELS[language]
    footer_text = seller_footer(document.seller, language)

    class Page(FPDF):
        def footer(self) -> None:
            self.set_y(-14)
            self.set_font(FONT, "", 6.5)
            self.set_text_color(90, 90, 90)
            self.multi_cell(self.epw - 18, 3, _text(self, footer_text), new_x="RIGHT", new_y="TOP")
            self.cell(18, 3, labels["page"].format(page=self.page_no(), pages="{nb}"), align="R")

    pdf = Page(format="A4", enforce_compliance="PDF/A-3B" if facturx_xml is not None else None)
    pdf.add_font(FONT, "", FONT_DIR / "DejaVuSansCondensed.ttf")
    pdf.add_font(FONT, "B", FONT_DIR / "DejaVuSansCondensed-Bold.ttf")
    pdf.set_title(f"{title} {document.number}")
    pdf.set_author(document.seller.legal_name or "")
    pdf.set_creator("billing")
    pdf.set_lang(language)
    pdf.set_creation_date(_instant(issued_at))
    pdf.set_auto_page_break(auto=True, margin=22)
    pdf.add_page()
    width = pdf.epw

    pdf.set_font(FONT, "B", 18)
    pdf.cell(width / 2, 10, _text(pdf, title))
    pdf.set_font(FONT, "", 10)
    pdf.cell(width / 2, 10, _text(pdf, status), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for label, value in facts:
        pdf.set_font(FONT, "B", 9.5)
        pdf.cell(38, 5.5, _text(pdf, label))
        pdf.set_font(FONT, "", 9.5)
        pdf.cell(0, 5.5, _text(pdf, value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    top = pdf.get_y()
    _party(pdf, labels["seller"], seller_lines(document.seller, labels, language), pdf.l_margin, top, width / 2 - 5)
    seller_bottom = pdf.get_y()
    _party(pdf, labels["buyer"], buyer_lines(document.buyer, document.seller, labels),
           pdf.l_margin + width / 2 + 5, top, width / 2 - 5)
    pdf.set_y(max(pdf.get_y(), seller_bottom, top + 30))
    pdf.ln(4)
    _lines_table(pdf, document, labels)
    pdf.ln(3)

    for label, value in rows:
        pdf.set_font(FONT, "B" if label in bold else "", 10)
        pdf.cell(width * 0.75, 6, _text(pdf, label), align="R")
        pdf.cell(width * 0.25, 6, _text(pdf, value), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(5)

    pdf.set_font(FONT, "", 8)
    for mention in mentions:
        if mention:
            pdf.multi_cell(0, 4, _text(pdf, mention), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
    if facturx_xml is not None:
        pdf.embed_file(bytes=facturx_xml, basename=FACTURX_FILENAME, mime_type="text/xml",
                       associated_file_relationship="Data", desc="Factur-X XML file",
                       modification_date=_instant(issued_at), compress=True)
        return bytes(pdf.output(output_producer_class=_facturx_producer(document)))
    return bytes(pdf.output())


def _lines_table(pdf, document: LegalDocument, labels: dict) -> None:
    from chalicelib.domain.invoice_labels import unit_name

    language = document.language
    width = pdf.epw
    columns = (width * 0.43, width * 0.09, width * 0.10, width * 0.14, width * 0.08, width * 0.16)
    heads = (labels["description"], labels["quantity"], labels["unit_column"], labels["unit"], labels["vat_rate"],
             labels["amount"])

    def header() -> None:
        pdf.set_font(FONT, "B", 8.5)
        pdf.set_fill_color(235, 235, 235)
        for text, col, align in zip(heads, columns, "LRLRRR"):
            pdf.cell(col, 7, _text(pdf, text), border="B", align=align, fill=True)
        pdf.ln()

    header()
    for line in document.lines:
        text = line.label
        if line.period_start and line.period_end:
            text += "\n" + _period_text(line.period_start, line.period_end, language)
        pdf.set_font(FONT, "", 8.5)
        # A line of the table is its label and its period: it starts on a new
        # page (under the header again) rather than being cut by the page's end.
        if pdf.will_page_break(4.3 * (text.count("\n") + 2)):
            pdf.add_page()
            header()
            pdf.set_font(FONT, "", 8.5)
        y = pdf.get_y()
        pdf.multi_cell(columns[0], 4.3, _text(pdf, text), new_x="RIGHT", new_y="NEXT")
        height = pdf.get_y() - y
        x = pdf.l_margin + columns[0]
        priced = line.priced
        values = (
            format_number(format_decimal(priced.quantity), language),
            unit_name(priced.unit, language, document.currency),
            format_number(format_decimal(priced.unit_price), language),
            f"{format_number(format_decimal(line.vat_rate), language)}{' %' if language == 'fr' else '%'}",
            format_money(priced.amount, document.currency, language),
        )
        for value, col, align in zip(values, columns[1:], "RLRRR"):
            pdf.set_xy(x, y)
            pdf.cell(col, 4.3, _text(pdf, value), align=align)
            x += col
        pdf.set_y(y + max(height, 4.3))
        pdf.ln(1.2)


def seller_lines(seller: Party, labels: dict, language: str) -> list[str]:
    """Who issues the document, as the law wants it named (module docstring)."""
    from chalicelib.domain.legal_document import seller_legal_line

    lines = [seller.legal_name or seller.name]
    if seller.name and seller.name != seller.legal_name:
        lines.append(seller.name)
    lines += address_lines(seller.address, None)
    if seller.siren:
        lines.append(f"SIREN : {_grouped(seller.siren)}" if language == "fr" else f"SIREN: {_grouped(seller.siren)}")
    elif seller.company_id:
        lines.append(labels["company_id"].format(id=seller.company_id))
    if seller.registration:
        lines.append(seller.registration)
    if seller.vat_number:
        lines.append(labels["vat_number"].format(number=seller.vat_number))
    legal_line = seller_legal_line(seller, language)
    if legal_line:
        lines.append(legal_line)
    return lines


def buyer_lines(buyer: Party, seller: Party, labels: dict) -> list[str]:
    lines = [buyer.name]
    lines += address_lines(buyer.address, seller.country)
    if not buyer.address and buyer.country:
        lines.append(f"{labels['country']} : {buyer.country}" if labels is LABELS["fr"]
                     else f"{labels['country']}: {buyer.country}")
    if buyer.vat_number:
        lines.append(labels["vat_number"].format(number=buyer.vat_number))
    if buyer.siren:
        lines.append(f"SIREN : {_grouped(buyer.siren)}" if labels is LABELS["fr"] else f"SIREN: {_grouped(buyer.siren)}")
    if buyer.email:
        lines.append(buyer.email)
    return lines


def address_lines(address: dict | None, home_country: str | None) -> list[str]:
    """An address as written on an envelope; its country named when it is not `home_country`."""
    if not address:
        return []
    lines = [address["line1"]]
    if address.get("line2"):
        lines.append(address["line2"])
    lines.append(f"{address.get('postal_code', '')} {address.get('city', '')}".strip())
    if address.get("state"):
        lines.append(address["state"])
    if address.get("country") and address["country"] != home_country:
        lines.append(country_name(address["country"]))
    return lines


def country_name(code: str) -> str:
    import iso3166

    country = iso3166.countries_by_alpha2.get(code)
    return country.name if country else code


def seller_footer(seller: Party, language: str) -> str:
    """The seller's identity in one line, at the foot of every page."""
    from chalicelib.domain.legal_document import seller_legal_line

    parts = [seller.legal_name or seller.name, seller_legal_line(seller, language)]
    address = seller.address
    if address:
        parts.append(", ".join(p for p in (address.get("line1"), address.get("line2"),
                                           f"{address.get('postal_code', '')} {address.get('city', '')}".strip())
                               if p))
    if seller.siren:
        parts.append(f"SIREN {_grouped(seller.siren)}")
    elif seller.company_id:
        parts.append(seller.company_id)
    parts.append(seller.registration)
    if seller.vat_number:
        parts.append(f"{'TVA' if language == 'fr' else 'VAT'} {seller.vat_number}")
    return " – ".join(p for p in parts if p)


def _period_text(start, end, language: str) -> str:
    first, last = write_date(start, language), write_date(end, language)
    return f"du {first} au {last}" if language == "fr" else f"{first} to {last}"


def _grouped(siren: str) -> str:
    return f"{siren[:3]} {siren[3:6]} {siren[6:]}"


def _party(pdf, title: str, lines: list[str], x: float, y: float, width: float) -> None:
    pdf.set_xy(x, y)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(width, 6, _text(pdf, title), new_x="LEFT", new_y="NEXT")
    for index, line in enumerate(lines):
        pdf.set_font(FONT, "B" if index == 0 else "", 9.5 if index == 0 else 8.5)
        pdf.set_x(x)
        pdf.multi_cell(width, 4.4, _text(pdf, line), new_x="LEFT", new_y="NEXT")


def _text(pdf, value) -> str:
    """Text the embedded font can draw; a character it lacks becomes '?'
    (PDF/A forbids drawing a missing glyph)."""
    cmap = pdf.current_font.cmap
    return "".join(c if ord(c) in cmap or c == "\n" else "?" for c in str(value))


def _instant(iso: str):
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _facturx_producer(document: LegalDocument):
    """fpdf2's output producer, its XMP metadata completed with Factur-X's
    (the fx: properties and their PDF/A extension schema, as Factur-X 1.0
    specifies them)."""
    from fpdf.output import OutputProducer

    # Factur-X names every document INVOICE (its XML tells a credit note by its type code 381).
    kind = "INVOICE"

    class FacturXProducer(OutputProducer):
        def _build_xmp_from_info(self) -> str:
            xmp = super()._build_xmp_from_info()
            return xmp.replace("  </rdf:RDF>", FACTURX_XMP.format(kind=kind) + "  </rdf:RDF>", 1)

    return FacturXProducer


FACTURX_XMP = """    <rdf:Description rdf:about="" xmlns:fx="urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#">
      <fx:DocumentType>{kind}</fx:DocumentType>
      <fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>
      <fx:Version>1.0</fx:Version>
      <fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>
    </rdf:Description>
    <rdf:Description rdf:about="" xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/"
        xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#" xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">
      <pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">
        <pdfaSchema:schema>Factur-X PDFA Extension Schema</pdfaSchema:schema>
        <pdfaSchema:namespaceURI>urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#</pdfaSchema:namespaceURI>
        <pdfaSchema:prefix>fx</pdfaSchema:prefix>
        <pdfaSchema:property><rdf:Seq>
          <rdf:li rdf:parseType="Resource"><pdfaProperty:name>DocumentFileName</pdfaProperty:name>
            <pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>
            <pdfaProperty:description>name of the embedded XML invoice file</pdfaProperty:description></rdf:li>
          <rdf:li rdf:parseType="Resource"><pdfaProperty:name>DocumentType</pdfaProperty:name>
            <pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>
            <pdfaProperty:description>INVOICE</pdfaProperty:description></rdf:li>
          <rdf:li rdf:parseType="Resource"><pdfaProperty:name>Version</pdfaProperty:name>
            <pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>
            <pdfaProperty:description>The actual version of the Factur-X XML schema</pdfaProperty:description></rdf:li>
          <rdf:li rdf:parseType="Resource"><pdfaProperty:name>ConformanceLevel</pdfaProperty:name>
            <pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>
            <pdfaProperty:description>The conformance level of the embedded Factur-X data</pdfaProperty:description></rdf:li>
        </rdf:Seq></pdfaSchema:property>
      </rdf:li></rdf:Bag></pdfaExtension:schemas>
    </rdf:Description>
"""
