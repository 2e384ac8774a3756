"""A payee's monthly statement as a PDF, drawn with the invoice documents'
building blocks (services/invoice_pdf.py: the embedded DejaVu font, the
amounts and dates as the invoices write them, domain/document_format.py)."""
from __future__ import annotations

import warnings

from chalicelib.domain.document_format import format_date, format_money, language_of
from chalicelib.services.invoice_pdf import FONT, FONT_DIR

LABELS = {
    "en": {"title": "Commission statement", "draft": "Draft", "issued": "Issued", "paid": "Paid",
           "number": "Number", "month": "Month", "payee": "Payee", "from": "From", "issued_at": "Issued on",
           "reference": "Payout reference", "invoice": "Invoice", "description": "Description",
           "base": "Base excl. VAT", "rate": "Rule", "amount": "Amount", "total": "Total",
           "reversal": "reversed by credit note {number}", "new_subscription": "new subscription"},
    "fr": {"title": "Relevé de commissions", "draft": "Brouillon", "issued": "Émis", "paid": "Payé",
           "number": "Numéro", "month": "Mois", "payee": "Bénéficiaire", "from": "Émetteur",
           "issued_at": "Émis le", "reference": "Référence du virement", "invoice": "Facture",
           "description": "Désignation", "base": "Base HT", "rate": "Règle", "amount": "Montant",
           "total": "Total", "reversal": "annulé par l'avoir {number}", "new_subscription": "nouvel abonnement"},
}


def render_statement_pdf(statement: dict, *, merchant_name: str, payee_name: str, language: str,
                         timezone: str) -> bytes:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Pillow could not be imported")
        from fpdf import FPDF

    language = language_of(language)
    labels = LABELS[language]
    pdf = FPDF(format="A4")
    pdf.add_font(FONT, "", FONT_DIR / "DejaVuSansCondensed.ttf")
    pdf.add_font(FONT, "B", FONT_DIR / "DejaVuSansCondensed-Bold.ttf")
    pdf.set_title(f"{labels['title']} {statement['number'] or statement['month']}")
    pdf.set_creator("billing")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.epw

    def text(value) -> str:
        cmap = pdf.current_font.cmap
        return "".join(c if ord(c) in cmap else "?" for c in str(value or ""))

    pdf.set_font(FONT, "B", 17)
    pdf.cell(width * 0.7, 10, text(labels["title"]))
    pdf.set_font(FONT, "", 10)
    pdf.cell(width * 0.3, 10, text(labels[statement["status"]]), align="R", new_x="LMARGIN", new_y="NEXT")
    facts = [(labels["number"], statement["number"] or labels["draft"]), (labels["month"], statement["month"]),
             (labels["from"], merchant_name), (labels["payee"], payee_name)]
    if statement["issued_at"]:
        facts.append((labels["issued_at"], format_date(statement["issued_at"], timezone, language)))
    if statement["reference"]:
        facts.append((labels["reference"], statement["reference"]))
    for label, value in facts:
        pdf.set_font(FONT, "B", 9.5)
        pdf.cell(45, 5.5, text(label))
        pdf.set_font(FONT, "", 9.5)
        pdf.cell(0, 5.5, text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(5)

    columns = (width * 0.18, width * 0.38, width * 0.16, width * 0.14, width * 0.14)
    pdf.set_font(FONT, "B", 8.5)
    for size, head, align in zip(columns, ("invoice", "description", "base", "rate", "amount"),
                                 ("L", "L", "R", "R", "R")):
        pdf.cell(size, 6, text(labels[head]), border="B", align=align)
    pdf.ln()
    pdf.set_font(FONT, "", 8.5)
    for line in statement["lines"]:
        description = line["description"] or labels["new_subscription"]
        if line["kind"] == "reversal":
            description = f"{description} ({labels['reversal'].format(number=line['credit_note_number'])})"
        rates = ", ".join(f"{part['rate']}{'%' if part['basis'] == 'percent' else ''}" for part in line["parts"])
        cells = (line["invoice_number"] or line["invoice_id"], description[:70],
                 format_money(line["base_amount"], line["currency"], language), rates,
                 format_money(line["amount"], line["currency"], language))
        for size, value, align in zip(columns, cells, ("L", "L", "R", "R", "R")):
            pdf.cell(size, 5.5, text(value), align=align)
        pdf.ln()
    pdf.ln(3)
    pdf.set_font(FONT, "B", 10)
    for currency, total in statement["totals"].items():
        pdf.cell(width * 0.75, 6, text(labels["total"]), align="R")
        pdf.cell(width * 0.25, 6, text(format_money(total, currency, language)), align="R",
                 new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
