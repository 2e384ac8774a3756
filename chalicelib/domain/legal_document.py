"""An issued invoice or credit note as the law reads it: the one model the
PDF, the Factur-X (CII) XML and the UBL XML are written from, so that they
say the same thing.

From the API's invoice (or credit note) object and the seller and buyer as
they stood when it was issued (the invoice's snapshots), `invoice_document`
and `credit_note_document` give:
- the parties: legal name, address, SIREN (or another company id), VAT
  number, legal form and share capital, registration (RCS);
- the dates: issue date and due date (the invoice is payable on receipt:
  it is charged to the card on file when there is one), the period billed;
- the lines as quantity x unit price = amount (domain/invoice_labels.py),
  each with its VAT category and rate;
- the VAT breakdown (EN 16931 categories: S standard, AE reverse charge,
  Z zero rated, E exempt, G outside the EU), the totals HT, TVA, TTC, what
  was already settled at issue (the customer's credit balance) and what is
  due;
- the mentions French law requires (article 242 nonies A of the CGI,
  articles L441-9 and L441-10 of the Code de commerce), in the customer's
  language, each with its EN 16931 subject code.

Amounts in the XML are the invoice's as issued: a later payment or credit
note does not change the document.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from chalicelib.domain import legal
from chalicelib.domain.document_format import format_money, last_day, local_date
from chalicelib.domain.invoice_labels import DocumentLine, document_line, item_name
from chalicelib.domain.money import ZERO

MENTIONS = {
    "fr": {
        "operation": "Catégorie de l'opération : prestation de services.",
        "payment": "Payable à réception (prélevé sur la carte enregistrée, le cas échéant).",
        "no_discount": "Pas d'escompte pour paiement anticipé.",
        "penalties": "En cas de retard de paiement : pénalités au taux de trois fois le taux d'intérêt légal "
                     "(article L441-10 du Code de commerce) et, pour les clients professionnels, indemnité "
                     "forfaitaire pour frais de recouvrement de 40 € (article D441-5 du Code de commerce).",
        "AE": "Autoliquidation : TVA due par le preneur (article 283-2 du CGI, article 196 de la directive "
              "2006/112/CE).",
        "E_franchise": "TVA non applicable, article 293 B du CGI.",
        "E": "TVA non applicable.",
        "G": "TVA non applicable : prestation de services hors de l'Union européenne (article 259-1 du CGI).",
        "capital": "{form} au capital de {capital}",
        "credits": "Avoir sur la facture {number} du {date}.",
        "credited": "Montant crédité sur la facture {number}",
    },
    "en": {
        "operation": "Type of supply: services.",
        "payment": "Payable on receipt (charged to the card on file, if any).",
        "no_discount": "No discount for early payment.",
        "penalties": "Late payment: interest at three times the French legal interest rate (article L441-10 of "
                     "the French Commercial Code) and, for business customers, a fixed recovery charge of EUR 40 "
                     "(article D441-5).",
        "AE": "Reverse charge: VAT to be accounted for by the customer (Article 196, Directive 2006/112/EC).",
        "E_franchise": "VAT not applicable, article 293 B of the French Tax Code.",
        "E": "VAT not applicable.",
        "G": "VAT not applicable: services supplied outside the European Union (article 259-1 of the French "
             "Tax Code).",
        "capital": "{form} with a share capital of {capital}",
        "credits": "Credit note for invoice {number} of {date}.",
        "credited": "Amount credited on invoice {number}",
    },
}

# VAT exemption reason codes (VATEX, EN 16931 BT-121) by category.
EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "G": "VATEX-EU-G", "E_franchise": "VATEX-FR-FRANCHISE"}


@dataclass(frozen=True)
class Party:
    name: str
    legal_name: str
    address: dict | None
    country: str | None
    siren: str | None = None
    company_id: str | None = None
    vat_number: str | None = None
    legal_form: str | None = None
    share_capital: str | None = None
    registration: str | None = None
    email: str | None = None
    reference: str | None = None

    @property
    def registration_id(self) -> str | None:
        return self.siren or self.company_id


@dataclass(frozen=True)
class Line:
    id: str
    label: str
    item: str
    period_start: date | None
    period_end: date | None
    priced: DocumentLine
    vat_category: str
    vat_rate: Decimal


@dataclass(frozen=True)
class VatBreakdown:
    category: str
    rate: Decimal
    basis: Decimal
    amount: Decimal
    reason: str | None
    reason_code: str | None


@dataclass(frozen=True)
class LegalDocument:
    kind: str  # invoice or credit_note
    number: str
    language: str
    currency: str
    issue_date: date
    due_date: date | None
    seller: Party
    buyer: Party
    lines: list[Line]
    vat: list[VatBreakdown]
    line_total: Decimal
    tax_total: Decimal
    grand_total: Decimal
    prepaid: Decimal
    due_amount: Decimal
    period_start: date | None = None
    period_end: date | None = None
    preceding: tuple[str, date] | None = None
    # (EN 16931 subject code, text): the legal mentions, in the document's language.
    notes: list[tuple[str, str]] = field(default_factory=list)
    payment_terms: str | None = None
    reverse_charge: bool = False


def seller_party(seller: dict, language: str) -> Party:
    address = seller.get("address")
    return Party(
        name=seller.get("name") or "", legal_name=seller.get("legal_name") or seller.get("name") or "",
        address=address, country=legal.seller_country(address, seller.get("vat_number")),
        siren=seller.get("siren"), company_id=seller.get("company_id"), vat_number=seller.get("vat_number"),
        legal_form=seller.get("legal_form"), registration=seller.get("registration"),
        share_capital=None if not seller.get("share_capital") else format_money(
            seller["share_capital"], seller.get("currency") or "EUR", language),
    )


def buyer_party(buyer: dict, customer_id: str | None) -> Party:
    address = buyer.get("address")
    vat_number = buyer.get("vat_number")
    return Party(
        name=buyer.get("name") or "", legal_name=buyer.get("name") or "", address=address,
        country=(address or {}).get("country") or buyer.get("country"), vat_number=vat_number,
        siren=legal.siren_of_vat_number(vat_number), email=buyer.get("email"),
        reference=buyer.get("external_id") or customer_id,
    )


def seller_legal_line(seller: Party, language: str) -> str | None:
    """"SAS au capital de 10 000,00 €" (EN 16931 BT-33, the seller's additional legal information)."""
    if seller.legal_form and seller.share_capital:
        return MENTIONS[language]["capital"].format(form=seller.legal_form, capital=seller.share_capital)
    return seller.legal_form


def vat_category(reverse_charge: bool, tax: list[dict], seller: Party, buyer: Party) -> tuple[str, Decimal, str | None]:
    """(EN 16931 category, rate, the mention's key) of a document whose tax lines are `tax`."""
    if reverse_charge:
        return "AE", ZERO, "AE"
    rate = Decimal(tax[0]["rate"]) if tax else None
    if rate:
        return "S", rate, None
    if rate is not None:
        return "Z", ZERO, None
    if not seller.vat_number:
        return "E", ZERO, "E_franchise" if seller.country == "FR" else "E"
    if buyer.country and not legal.is_eu(buyer.country):
        return "G", ZERO, "G"
    return "E", ZERO, "E"


def invoice_document(invoice: dict, seller: dict, buyer: dict, *, language: str, timezone: str) -> LegalDocument:
    """The issued invoice (the API's invoice object) as the law reads it."""
    currency = invoice["currency"]
    sold_by, bought_by = seller_party(seller, language), buyer_party(buyer, invoice.get("customer_id"))
    category, rate, mention = vat_category(bool(invoice.get("reverse_charge")), invoice["tax"], sold_by, bought_by)
    lines = [_line(line, index, category, rate, currency, language, timezone)
             for index, line in enumerate(invoice["lines"])]
    issued = local_date(invoice.get("finalized_at") or invoice["created_at"], timezone)
    total = Decimal(invoice["total"])
    prepaid = Decimal(invoice.get("credit_applied") or "0")
    line_total = sum((line.priced.amount for line in lines), ZERO)
    tax_total = sum((Decimal(t["amount"]) for t in invoice["tax"]), ZERO)
    notes = _notes(language, mention, penalties=True)
    start, end = _span(invoice, lines, timezone)
    return LegalDocument(
        kind="invoice", number=invoice.get("number") or invoice["id"], language=language, currency=currency,
        issue_date=issued, due_date=issued, seller=sold_by, buyer=bought_by, lines=lines,
        vat=[_breakdown(category, rate, line_total, tax_total, mention, language)],
        line_total=line_total, tax_total=tax_total, grand_total=total, prepaid=prepaid, due_amount=total - prepaid,
        period_start=start, period_end=end, notes=notes, payment_terms=MENTIONS[language]["payment"],
        reverse_charge=category == "AE",
    )


def credit_note_document(note: dict, invoice: dict, seller: dict, buyer: dict, *, language: str,
                         timezone: str) -> LegalDocument:
    """The credit note (the API's object), crediting `invoice` (the API's invoice object)."""
    currency = note["currency"]
    sold_by, bought_by = seller_party(seller, language), buyer_party(buyer, note.get("customer_id"))
    category, rate, mention = vat_category(bool(note.get("reverse_charge")), note["tax"] or invoice["tax"],
                                           sold_by, bought_by)
    invoice_lines = {line.get("id"): line for line in invoice["lines"]}
    lines = []
    for index, credited in enumerate(note["lines"]):
        original = invoice_lines.get(credited.get("invoice_line_id")) or {}
        line = {**original, "kind": "credit", "amount": credited["amount"], "quantity": None, "unit_amount": None,
                "description": credited.get("description") or original.get("description") or ""}
        if not original:
            line["label"] = MENTIONS[language]["credited"].format(number=invoice.get("number") or invoice["id"])
        lines.append(_line(line, index, category, rate, currency, language, timezone))
    invoice_date = local_date(invoice.get("finalized_at") or invoice["created_at"], timezone)
    number = invoice.get("number") or invoice["id"]
    line_total = sum((line.priced.amount for line in lines), ZERO)
    tax_total = sum((Decimal(t["amount"]) for t in note["tax"]), ZERO)
    notes = [("AAI", MENTIONS[language]["credits"].format(number=number, date=_written(invoice_date, language))),
             *_notes(language, mention, penalties=False)]
    if note.get("memo"):
        notes.insert(1, ("AAI", note["memo"]))
    return LegalDocument(
        kind="credit_note", number=note["number"], language=language, currency=currency,
        issue_date=local_date(note["created_at"], timezone), due_date=None, seller=sold_by, buyer=bought_by,
        lines=lines, vat=[_breakdown(category, rate, line_total, tax_total, mention, language)],
        line_total=line_total, tax_total=tax_total, grand_total=Decimal(note["total"]), prepaid=ZERO,
        due_amount=Decimal(note["total"]), preceding=(number, invoice_date), notes=notes,
        reverse_charge=category == "AE",
    )


def missing_for_einvoice(document: LegalDocument) -> list[str]:
    """What an EN 16931 invoice needs that the parties, as they were when it
    was issued, lacked (the seller's fields: PATCH /merchant; the buyer's:
    PATCH /customers/{id}); empty when the XML can be written."""
    missing = []
    seller, buyer = document.seller, document.buyer
    if not seller.address:
        missing.append("merchant address")
    if not seller.registration_id and not seller.vat_number:
        missing.append("merchant siren (or company_id)")
    if document.vat and document.vat[0].category in ("S", "Z", "AE", "G") and not seller.vat_number:
        missing.append("merchant vat_number")
    if document.vat and document.vat[0].category == "AE" and not buyer.vat_number:
        missing.append("customer vat_number")
    return missing


def _line(line: dict, index: int, category: str, rate: Decimal, currency: str, language: str,
          timezone: str) -> Line:
    start, end = line.get("period_start"), line.get("period_end")
    first = local_date(start, timezone) if start else None
    last = max(last_day(end, timezone), first) if start and end else None
    return Line(
        id=str(index + 1), label=line.get("label") or line.get("description") or "",
        item=item_name(line, language) or line.get("description") or "", period_start=first, period_end=last,
        priced=document_line(line, currency), vat_category=category, vat_rate=rate,
    )


def _breakdown(category: str, rate: Decimal, basis: Decimal, amount: Decimal, mention: str | None,
               language: str) -> VatBreakdown:
    reason = MENTIONS[language][mention] if mention else None
    return VatBreakdown(category, rate, basis, amount, reason, EXEMPTION_CODES.get(mention or ""))


def _notes(language: str, mention: str | None, *, penalties: bool) -> list[tuple[str, str]]:
    """The mentions, with their EN 16931 subject codes (UNTDID 4451)."""
    texts = MENTIONS[language]
    notes = [("AAI", texts["operation"])]
    if mention:
        notes.append(("TXD", texts[mention]))
    if penalties:
        notes += [("AAB", texts["no_discount"]), ("PMD", texts["penalties"])]
    return notes


def _span(invoice: dict, lines: list[Line], timezone: str) -> tuple[date | None, date | None]:
    """The period billed: the invoice's, widened to every line's (late usage of an earlier period)."""
    starts = [line.period_start for line in lines if line.period_start]
    ends = [line.period_end for line in lines if line.period_end]
    if invoice.get("period_start"):
        starts.append(local_date(invoice["period_start"], timezone))
    if invoice.get("period_end"):
        ends.append(last_day(invoice["period_end"], timezone))
    if not starts or not ends:
        return None, None
    return min(starts), max(max(ends), min(starts))


def _written(day: date, language: str) -> str:
    return day.strftime("%d/%m/%Y") if language == "fr" else day.isoformat()
