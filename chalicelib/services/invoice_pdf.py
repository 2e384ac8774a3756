"""The invoice as a PDF document, in the customer's language (French or English).

What a European invoice must show is all here: the seller and the buyer,
the number and the date of issue, each line with its period, quantity,
unit price and amount, the VAT rate and amount, the totals, what was paid
and what is due, and the legal mentions (a reverse-charge mention when the
buyer accounts for the VAT; in French, the late-payment penalties and the
fixed recovery indemnity of the Code de commerce).

Dates are written in the merchant's time zone: a monthly period of a Paris
merchant starts on the 1st at midnight in Paris, which is the 31st at 23:00
in UTC.

The built-in PDF fonts are used (no font file to ship in the Lambda
package), encoded as Windows-1252, which has every letter of French and the
euro sign; a character outside it is replaced, never an error.
"""
from __future__ import annotations

import warnings

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalicelib.domain.money import minor_units

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
        "unit": "Unit price",
        "amount": "Amount",
        "subtotal": "Subtotal (excl. VAT)",
        "vat": "VAT {rate}%",
        "credit": "Credit applied",
        "total": "Total (incl. VAT)",
        "paid": "Amount paid",
        "due": "Amount due",
        "status": {"paid": "Paid", "open": "Awaiting payment", "void": "Void", "uncollectible": "Uncollectible",
                   "draft": "Draft"},
        "reverse_charge": "Reverse charge: VAT to be accounted for by the customer (Article 196, Directive 2006/112/EC).",
        "no_vat": "VAT not applicable.",
        "terms": "Charged automatically to the card on file. Late payment incurs interest at three times the "
                 "legal rate and a fixed recovery charge of EUR 40.",
        "void_note": "This invoice has been voided; its number stays used.",
        "page": "Page {page}",
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
        "unit": "Prix unitaire HT",
        "amount": "Montant HT",
        "subtotal": "Total HT",
        "vat": "TVA {rate} %",
        "credit": "Avoir imputé",
        "total": "Total TTC",
        "paid": "Montant réglé",
        "due": "Reste à payer",
        "status": {"paid": "Payée", "open": "En attente de paiement", "void": "Annulée",
                   "uncollectible": "Irrécouvrable", "draft": "Brouillon"},
        "reverse_charge": "Autoliquidation : TVA due par le preneur (article 283-2 du CGI, article 196 de la "
                          "directive 2006/112/CE).",
        "no_vat": "TVA non applicable.",
        "terms": "Prélèvement automatique sur la carte enregistrée. Pas d'escompte pour paiement anticipé. "
                 "En cas de retard de paiement : pénalités au taux de trois fois le taux d'intérêt légal et "
                 "indemnité forfaitaire pour frais de recouvrement de 40 € (articles L441-10 et D441-5 du "
                 "Code de commerce).",
        "void_note": "Cette facture a été annulée ; son numéro reste attribué.",
        "page": "Page {page}",
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

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def language_of(locale: str | None) -> str:
    """fr for `fr` and `fr-XX`, en for everything else."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def format_money(amount: str | Decimal | None, currency: str, language: str) -> str:
    """`1 234,56 €` in French, `€1,234.56` in English (a code when there is no symbol)."""
    if amount is None:
        return ""
    value = Decimal(amount)
    decimals = minor_units(currency)
    text = f"{abs(value):,.{decimals}f}"
    symbol = _SYMBOLS.get(currency)
    sign = "-" if value < 0 else ""
    if language == "fr":
        text = text.replace(",", " ").replace(".", ",")
        return f"{sign}{text} {symbol or currency}"
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def format_number(value: str | None, language: str) -> str:
    """A quantity or unit price as given, with the language's decimal mark."""
    if value is None:
        return ""
    return value.replace(".", ",") if language == "fr" else value


def format_date(iso: str | None, timezone: str, language: str) -> str:
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(timezone or "UTC"))
    return moment.strftime("%d/%m/%Y") if language == "fr" else moment.strftime("%Y-%m-%d")


def render_invoice_pdf(invoice: dict, seller: dict, buyer: dict, *, language: str, timezone: str) -> bytes:
    """The PDF of `invoice` (the API's invoice object), issued by `seller`
    (`name`, `email`?) to `buyer` (`name`, `email`, `country`, `tax_exempt`)."""
    labels = LABELS[language]

    def money(value):
        return format_money(value, invoice["currency"], language)

    def date(value):
        return format_date(value, timezone, language)

    facts = [
        (labels["number"], invoice.get("number") or "-"),
        (labels["date"], date(invoice.get("finalized_at") or invoice.get("created_at"))),
    ]
    if invoice.get("period_start") and invoice.get("period_end"):
        facts.append((labels["period"], f"{date(invoice['period_start'])} - {date(invoice['period_end'])}"))
    rows = [(labels["subtotal"], money(invoice["subtotal"]))]
    for tax in invoice["tax"]:
        rows.append((labels["vat"].format(rate=format_number(tax["rate"], language)), money(tax["amount"])))
    rows.append((labels["total"], money(invoice["total"])))
    if Decimal(invoice.get("credit_applied") or "0"):
        rows.append((labels["credit"], money("-" + invoice["credit_applied"])))
    if Decimal(invoice.get("amount_credited") or "0"):
        rows.append((labels["credited"], money("-" + invoice["amount_credited"])))
    rows.append((labels["paid"], money(invoice["amount_paid"])))
    rows.append((labels["due"], money(invoice["amount_due"])))
    mentions = _tax_mentions(invoice, labels)
    if invoice["status"] == "void":
        mentions.append(labels["void_note"])
    mentions.append(labels["terms"])
    return _render(
        invoice, seller, buyer, language=language, timezone=timezone,
        title=labels["invoice"] if invoice.get("number") else labels["draft"],
        status=labels["status"].get(invoice["status"], invoice["status"]),
        facts=facts, rows=rows, bold=(labels["total"], labels["due"]), mentions=mentions,
    )


def render_credit_note_pdf(note: dict, seller: dict, buyer: dict, *, language: str, timezone: str) -> bytes:
    """The PDF of a credit note (the API's credit note object): the same
    document as an invoice, its lines the pre-tax amounts credited, its
    totals what is credited, naming the invoice it credits."""
    labels = LABELS[language]

    def money(value):
        return format_money(value, note["currency"], language)

    facts = [
        (labels["number"], note["number"]),
        (labels["date"], format_date(note["created_at"], timezone, language)),
        (labels["credited_invoice"], note.get("invoice_number") or note["invoice_id"]),
        (labels["reason"], labels["reasons"].get(note["reason"], note["reason"])),
        (labels["refund"], labels["refunds"].get(note["refund"], note["refund"])),
    ]
    rows = [(labels["subtotal"], money(note["subtotal"]))]
    for tax in note["tax"]:
        rows.append((labels["vat"].format(rate=format_number(tax["rate"], language)), money(tax["amount"])))
    rows.append((labels["credit_total"], money(note["total"])))
    mentions = _tax_mentions(note, labels)
    if note.get("memo"):
        mentions.insert(0, note["memo"])
    lines = [{"description": line["description"], "amount": line["amount"]} for line in note["lines"]]
    return _render(
        {**note, "lines": lines}, seller, buyer, language=language, timezone=timezone,
        title=labels["credit_note"], status="", facts=facts, rows=rows, bold=(labels["credit_total"],),
        mentions=mentions,
    )


def _tax_mentions(document: dict, labels: dict) -> list[str]:
    if document.get("reverse_charge"):
        return [labels["reverse_charge"]]
    if not document["tax"]:
        return [labels["no_vat"]]
    return []


def _render(document: dict, seller: dict, buyer: dict, *, language: str, timezone: str, title: str,
            status: str, facts: list, rows: list, bold: tuple, mentions: list[str]) -> bytes:
    with warnings.catch_warnings():
        # The deployment package leaves out Pillow, fpdf2's optional image
        # support (infra/aws/package.py): invoices draw no image.
        warnings.filterwarnings("ignore", message="Pillow could not be imported")
        from fpdf import FPDF

    labels = LABELS[language]
    currency = document["currency"]

    def money(value):
        return format_money(value, currency, language)

    def date(value):
        return format_date(value, timezone, language)

    pdf = FPDF(format="A4")
    pdf.core_fonts_encoding = "windows-1252"
    pdf.set_title(f"{title} {document.get('number') or document['id']}")
    pdf.set_author(seller.get("name") or "")
    pdf.set_creator("billing")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("helvetica", "B", 18)
    pdf.cell(width / 2, 10, _text(title))
    pdf.set_font("helvetica", "", 10)
    pdf.cell(width / 2, 10, _text(status), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    for label, value in facts:
        pdf.set_font("helvetica", "B", 10)
        pdf.cell(40, 6, _text(label))
        pdf.set_font("helvetica", "", 10)
        pdf.cell(0, 6, _text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    top = pdf.get_y()
    _party(pdf, labels["seller"], _party_lines(seller, labels), pdf.l_margin, top, width / 2 - 5)
    _party(pdf, labels["buyer"], _party_lines(buyer, labels), pdf.l_margin + width / 2 + 5, top, width / 2 - 5)
    pdf.set_y(max(pdf.get_y(), top + 30))
    pdf.ln(4)

    columns = (width * 0.52, width * 0.12, width * 0.17, width * 0.19)
    pdf.set_font("helvetica", "B", 9)
    pdf.set_fill_color(235, 235, 235)
    for text, col, align in zip(
        (labels["description"], labels["quantity"], labels["unit"], labels["amount"]), columns, "LRRR"
    ):
        pdf.cell(col, 7, _text(text), border="B", align=align, fill=True)
    pdf.ln()
    pdf.set_font("helvetica", "", 9)
    for line in document["lines"]:
        description = line["description"]
        if line.get("period_start") and line.get("period_end"):
            description += f" ({date(line['period_start'])} - {date(line['period_end'])})"
        y = pdf.get_y()
        pdf.multi_cell(columns[0], 5, _text(description), new_x="RIGHT", new_y="TOP")
        bottom = pdf.get_y()
        x = pdf.l_margin + columns[0]
        for value, col in zip(
            (format_number(line.get("quantity"), language),
             format_number(line.get("unit_amount"), language),
             money(line["amount"])),
            columns[1:],
        ):
            pdf.set_xy(x, y)
            pdf.cell(col, 5, _text(value), align="R")
            x += col
        pdf.set_y(max(bottom, y + 5))
        pdf.ln(1)
    pdf.ln(3)

    for label, value in rows:
        pdf.set_font("helvetica", "B" if label in bold else "", 10)
        pdf.cell(width * 0.75, 6, _text(label), align="R")
        pdf.cell(width * 0.25, 6, _text(value), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)

    pdf.set_font("helvetica", "", 8)
    for mention in mentions:
        pdf.multi_cell(0, 4, _text(mention), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    return bytes(pdf.output())


def _party_lines(party: dict, labels: dict) -> list[str]:
    lines = [party.get("name") or ""]
    for key in ("email",):
        if party.get(key):
            lines.append(party[key])
    if party.get("country"):
        lines.append(f"{labels['country']}: {party['country']}")
    return lines


def _party(pdf, title: str, lines: list[str], x: float, y: float, width: float) -> None:
    pdf.set_xy(x, y)
    pdf.set_font("helvetica", "B", 10)
    pdf.cell(width, 6, _text(title), new_x="LEFT", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    for line in lines:
        pdf.set_x(x)
        pdf.multi_cell(width, 5, _text(line), new_x="LEFT", new_y="NEXT")


def _text(value: str) -> str:
    """Text the built-in fonts can draw (Windows-1252); anything else becomes '?'."""
    return str(value).encode("cp1252", errors="replace").decode("cp1252")
