"""The books on the local stage, as a merchant's accountant reads them: a
quarterly subscription's first invoice paid in cash shows in the month's
revenue report, its journal (with the merchant's accounts) and its FEC,
within a moment of the driver reading the billing table's stream."""
import csv
import io
from collections import defaultdict
from decimal import Decimal

from tests.e2e.test_reports import eventually

FEC_COLUMNS = ["JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib", "CompAuxNum",
               "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit", "EcritureLet", "DateLet",
               "ValidDate", "Montantdevise", "Idevise"]


def test_a_paid_quarter_reaches_the_revenue_report_the_journal_and_the_fec(new_merchant):
    merchant = new_merchant(timezone="UTC")
    assert merchant.patch("/merchant", json={"accounts": {"cash": "531000"}}).status_code == 200
    offer = merchant.post("/offers", json={"code": "quarterly", "name": "Trimestriel", "currency": "EUR",
                                           "billing_interval": "month", "interval_count": 3,
                                           "components": [{"code": "base", "type": "flat", "amount": "300.00"}]})
    assert offer.status_code == 201, offer.text
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                                 "country": "FR"}).json()["id"]
    subscription = merchant.post("/subscriptions", json={"customer_id": customer,
                                                         "offer_id": offer.json()["id"]}).json()
    [invoice] = merchant.get("/invoices", params={"subscription_id": subscription["id"]}).json()["data"]
    paid = merchant.post(f"/invoices/{invoice['id']}/payments", json={"method": "cash", "amount": invoice["total"]})
    assert paid.status_code in (200, 201), paid.text
    month = invoice["finalized_at"][:7]

    def report():
        return merchant.get("/reports/revenue", params={"month": month}).json()["currencies"].get("EUR", {})

    eur = eventually(report, lambda r: r.get("invoiced") == invoice["subtotal"])
    assert eur["invoiced"] == invoice["subtotal"] == "300.00"
    assert Decimal(eur["recognized"]) + Decimal(eur["deferred"]) == Decimal("300.00")
    assert Decimal(eur["recognized"]) > 0

    def journal():
        response = merchant.get("/exports/journal.csv", params={"month": month}, headers={"Accept": "text/csv"})
        assert response.status_code == 200, response.text
        return list(csv.DictReader(io.StringIO(response.text, newline="")))

    rows = eventually(journal, lambda r: {row["journal"] for row in r} >= {"VE", "CA"})
    entries = defaultdict(list)
    for row in rows:
        entries[row["entry_number"]].append(row)
    for lines in entries.values():
        assert sum(Decimal(r["debit"]) for r in lines) == sum(Decimal(r["credit"]) for r in lines)
    assert ("531000", invoice["total"]) in {(r["account"], r["debit"]) for r in rows}
    assert ("706000", "300.00") in {(r["account"], r["credit"]) for r in rows}

    fec = merchant.get("/exports/fec.txt", params={"year": month[:4], "month": month},
                       headers={"Accept": "text/tab-separated-values"})
    assert fec.status_code == 200, fec.text
    reader = csv.reader(io.StringIO(fec.text, newline=""), delimiter="\t")
    assert next(reader) == FEC_COLUMNS
    lines = list(reader)
    assert lines and all(len(line) == 18 for line in lines)
    by_entry = defaultdict(Decimal)
    for line in lines:
        by_entry[line[2]] += Decimal(line[11].replace(",", ".")) - Decimal(line[12].replace(",", "."))
    assert set(by_entry.values()) == {Decimal(0)}
    bad = merchant.get("/exports/fec.txt", params={"year": "20x6"}, headers={"Accept": "*/*"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "year"
