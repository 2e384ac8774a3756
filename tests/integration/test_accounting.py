"""Revenue recognition and the accounting exports over HTTP: a year of a
quarterly-prepaid offer recognised month by month, a credit note that
reverses part of a quarter and goes to the credit balance the next invoice
uses, the journal with the merchant's own accounts, and the FEC read back
with the csv module (tab-separated), every entry balanced.

The facts are made through the HTTP API and the billing run (moto,
localstripe); the billing table's stream is delivered to `report_feed`
as Lambda would (tests/integration/table_stream.py)."""
from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from chalicelib import jobs
from tests.integration.table_stream import billing_table_stream
from tests.integration.test_billing import invoices_of, iso, new_customer, new_offer, subscribe

UTC = timezone.utc
D = Decimal
# Paris midnights of 2026's quarters (CET / CEST) in UTC.
JAN_1 = datetime(2025, 12, 31, 23, tzinfo=UTC)
APR_1 = datetime(2026, 3, 31, 22, tzinfo=UTC)
JUL_1 = datetime(2026, 6, 30, 22, tzinfo=UTC)
OCT_1 = datetime(2026, 9, 30, 22, tzinfo=UTC)
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
FEC_COLUMNS = ["JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib", "CompAuxNum",
               "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit", "EcritureLet", "DateLet",
               "ValidDate", "Montantdevise", "Idevise"]


@pytest.fixture
def clock_start():
    return JAN_1


@pytest.fixture
def feed(aws):
    from app import report_feed

    stream = billing_table_stream()
    stream.handler = report_feed
    return stream


def deliver(feed) -> None:
    feed.deliver(feed.handler)
    assert not feed.pending, "the feed keeps failing"


def run_billing(clock, moment: datetime, feed) -> None:
    clock.set(moment)
    jobs.billing_scheduler(clock.now(), inline=True)
    deliver(feed)


@pytest.fixture
def quarterly_year(merchant, clock, feed):
    """A subscription to 300.00 a quarter (VAT 20%) from 1 Jan 2026, paid by
    card each quarter; on 16 Aug 150.00 of the July quarter is credited to
    the credit balance (180.00 with its VAT), which the October invoice uses."""
    offer = new_offer(merchant, {"code": "quarterly", "name": "Trimestriel", "currency": "EUR",
                                 "billing_interval": "month", "interval_count": 3,
                                 "components": [{"code": "base", "type": "flat", "amount": "300.00"}]})
    customer = new_customer(merchant, name="Labo Martin")
    subscription = subscribe(merchant, customer, offer, start_at=iso(JAN_1))["id"]
    deliver(feed)
    run_billing(clock, APR_1, feed)
    run_billing(clock, JUL_1, feed)
    clock.set(datetime(2026, 8, 16, 9, tzinfo=UTC))
    july = invoices_of(merchant, subscription)[-1]
    note = merchant.post(f"/invoices/{july['id']}/credit-notes", {
        "lines": [{"invoice_line_id": july["lines"][0]["id"], "amount": "150.00"}],
        "reason": "goodwill", "refund": "credit_balance"})
    assert note.status == 201, note
    deliver(feed)
    run_billing(clock, OCT_1, feed)
    clock.set(datetime(2026, 12, 31, 12, tzinfo=UTC))
    invoices = invoices_of(merchant, subscription)
    assert [(i["subtotal"], i["status"]) for i in invoices] == [("300.00", "paid")] * 4
    assert invoices[-1]["credit_applied"] == "180.00"
    return {"customer": customer, "invoices": invoices, "credit_note": note.json}


def revenue(api, month: str) -> dict:
    response = api.get(f"/reports/revenue?month={month}")
    assert response.status == 200, response
    assert response.json["month"] == month
    return response.json["currencies"].get("EUR") or {}


def test_a_year_of_a_quarterly_offer_is_recognised_month_by_month(merchant, quarterly_year):
    figures = {month: revenue(merchant, month) for month in MONTHS}
    # 1 Jan - 1 Apr is 90 days: January 300 x 31/90, February to 300 x 59/90 (rounded as it runs).
    assert figures["2026-01"] == {"recognized": "103.33", "invoiced": "300.00", "credited": "0.00",
                                  "deferred_at_start": "0.00", "deferred": "196.67"}
    assert figures["2026-02"]["recognized"] == "93.34" and figures["2026-03"]["recognized"] == "103.33"
    assert figures["2026-03"]["deferred"] == "0.00"
    assert figures["2026-04"]["recognized"] == "98.90"  # 300 x 30/91
    # The credit note of 16 Aug takes back at once 150 x 46/92 of what July and August had earned of
    # it: August 300 x 62/92 - 300 x 31/92 (101.08) - 75.00 + (150 x 31/92 = 50.54, July's part).
    assert figures["2026-08"]["credited"] == "150.00"
    invoiced = sum(D(i["subtotal"]) for i in quarterly_year["invoices"])
    credited = D(quarterly_year["credit_note"]["subtotal"])
    recognized = sum(D(f["recognized"]) for f in figures.values())
    assert sum(D(f["invoiced"]) for f in figures.values()) == invoiced == D("1200.00")
    assert sum(D(f["credited"]) for f in figures.values()) == credited
    # The year is over, and so is every period billed: everything recognised, nothing deferred.
    assert recognized == invoiced - credited
    assert figures["2026-12"]["deferred"] == "0.00"
    # Month after month: deferred at the end = deferred at the start + invoiced - credited - recognised.
    for f in figures.values():
        assert D(f["deferred"]) == D(f["deferred_at_start"]) + D(f["invoiced"]) - D(f["credited"]) - D(f["recognized"])
    for earlier, later in zip(MONTHS, MONTHS[1:]):
        assert figures[later]["deferred_at_start"] == figures[earlier]["deferred"]


def download(client, merchant, path: str, media_type: str, *, gzipped: bool = False) -> str:
    headers = {"Authorization": f"Bearer {merchant.key}", "Accept": media_type}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    response = client.http.get(path, headers=headers)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"].startswith(media_type)
    body = gzip.decompress(response.body) if gzipped else response.body
    if gzipped:
        assert response.headers["Content-Encoding"] == "gzip"
    return body.decode("utf-8")


def test_the_journal_uses_the_merchants_accounts_and_every_entry_balances(client, merchant, quarterly_year):
    changed = merchant.patch("/merchant", {"accounts": {"revenue": "706100", "customers": "411100"}})
    assert changed.status == 200, changed
    assert changed.json["accounts"]["revenue"] == "706100" and changed.json["accounts"]["bank"] == "512000"
    kept = merchant.patch("/merchant", {"accounts": {"bank": "512100"}})
    assert (kept.json["accounts"]["revenue"], kept.json["accounts"]["bank"]) == ("706100", "512100")

    text = download(client, merchant, "/exports/journal.csv?month=2026-10", "text/csv", gzipped=True)
    assert text == download(client, merchant, "/exports/journal.csv?month=2026-10", "text/csv")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    by_entry = defaultdict(list)
    for row in rows:
        by_entry[row["entry_number"]].append(row)
        assert row["date"].startswith("2026-10") and row["currency"] == "EUR"
    for lines in by_entry.values():
        assert sum(D(r["debit"]) for r in lines) == sum(D(r["credit"]) for r in lines)
    october = quarterly_year["invoices"][-1]
    [invoice] = [lines for lines in by_entry.values() if lines[0]["journal"] == "VE"]
    assert {(r["account"], r["debit"], r["credit"]) for r in invoice} == {
        ("411100", "180.00", "0.00"),  # 360.00 less the 180.00 of credit used
        ("706100", "0.00", "300.00"), ("445710", "0.00", "60.00"), ("419000", "180.00", "0.00")}
    assert {r["piece_ref"] for r in invoice} == {october["number"]}
    assert {r["customer_account"] for r in invoice if r["account"] in ("411100", "419000")} == {
        quarterly_year["customer"]}
    [payment] = [lines for lines in by_entry.values() if lines[0]["journal"] == "BQ"]
    assert {(r["account"], r["debit"], r["credit"]) for r in payment} == {("512100", "180.00", "0.00"),
                                                                         ("411100", "0.00", "180.00")}
    august = list(csv.DictReader(io.StringIO(download(client, merchant, "/exports/journal.csv?month=2026-08",
                                                      "text/csv"), newline="")))
    assert {(r["account"], r["debit"], r["credit"]) for r in august} == {
        ("709000", "150.00", "0.00"), ("445710", "30.00", "0.00"), ("419000", "0.00", "180.00")}


def read_fec(text: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = next(reader)
    assert header == FEC_COLUMNS
    rows = [dict(zip(header, row)) for row in reader]
    assert all(len(row) == 18 for row in rows)
    return rows


def fec_amount(text: str) -> Decimal:
    assert "." not in text
    return D(text.replace(",", "."))


def test_the_fec_of_a_month_and_of_the_year_read_back_every_entry_balanced(client, merchant, quarterly_year):
    merchant.patch("/merchant", {"siren": "732829320"})
    month = read_fec(download(client, merchant, "/exports/fec.txt?year=2026&month=2026-07",
                              "text/tab-separated-values"))
    assert {row["EcritureDate"][:6] for row in month} == {"202607"}
    year_text = download(client, merchant, "/exports/fec.txt?year=2026", "text/tab-separated-values", gzipped=True)
    year = read_fec(year_text)
    entries = defaultdict(list)
    for row in year:
        entries[(row["JournalCode"], row["EcritureNum"])].append(row)
        assert len(row["EcritureDate"]) == 8 and row["EcritureDate"].startswith("2026")
        assert row["ValidDate"] and row["PieceRef"]
        if row["CompteNum"] in ("411000", "419000"):
            assert row["CompAuxNum"] == quarterly_year["customer"] and row["CompAuxLib"] == "Labo Martin"
        else:
            assert row["CompAuxNum"] == ""
    for lines in entries.values():
        assert sum(fec_amount(r["Debit"]) for r in lines) == sum(fec_amount(r["Credit"]) for r in lines)
    # Four invoices and a credit note (VE), four card payments (BQ).
    assert sorted(code for code, _ in entries) == ["BQ"] * 4 + ["VE"] * 5
    revenue_credited = sum(fec_amount(r["Credit"]) - fec_amount(r["Debit"]) for r in year if r["CompteNum"] == "706000")
    assert revenue_credited == D("1200.00")
    assert [r for r in year if r["EcritureNum"].startswith("VE202607")] == [
        r for r in month if r["JournalCode"] == "VE"]
    disposition = client.http.get("/exports/fec.txt?year=2026", headers={
        "Authorization": f"Bearer {merchant.key}", "Accept": "*/*"}).headers["Content-Disposition"]
    assert disposition == 'attachment; filename="732829320FEC20261231.txt"'


@pytest.mark.parametrize("path, param", [
    ("/reports/revenue", "month"),
    ("/reports/revenue?month=2026-13", "month"),
    ("/reports/revenue?month=november", "month"),
    ("/exports/journal.csv?month=2026-1", "month"),
    ("/exports/fec.txt", "year"),
    ("/exports/fec.txt?year=26", "year"),
    ("/exports/fec.txt?year=2026&month=2025-11", "month"),
    ("/exports/fec.txt?year=2026&month=11", "month"),
])
def test_bad_months_and_years_are_400_naming_the_field(merchant, path, param):
    response = merchant.get(path, headers={"Accept": "*/*"})
    assert response.status == 400, response
    assert response.json["error"]["param"] == param


@pytest.mark.parametrize("accounts, param", [
    ({"sales": "706000"}, "accounts.sales"),
    ({"revenue": 706000}, "accounts.revenue"),
    ({"revenue": "70A000"}, "accounts.revenue"),
    ({"revenue": "70"}, "accounts.revenue"),
    ("706000", "accounts"),
])
def test_bad_accounts_are_400_naming_the_field(merchant, accounts, param):
    response = merchant.patch("/merchant", {"accounts": accounts})
    assert response.status == 400, response
    assert response.json["error"]["param"] == param
    assert merchant.get("/merchant").json["accounts"]["revenue"] == "706000"
