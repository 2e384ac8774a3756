"""Invoice lines as the customer reads them: the offer's and the component's
names, what part of the price a line is, in French and in English, and the
line as quantity x unit price. Every charge model's wording of rating is
pinned here, since the label reads it."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.invoice_labels import document_line, line_label
from chalicelib.domain.periods import Period
from chalicelib.domain.rating import (
    InvoiceLine, MeterUsage, credit_unused_fees, prorate_fees, rate_fees, rate_late_usage, rate_usage,
)

UTC = timezone.utc
# December 2026 in Paris.
DECEMBER = Period(datetime(2026, 11, 30, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))
OFFER = parse_offer({
    "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
    "components": [
        {"code": "base", "name": "Abonnement", "type": "flat", "amount": "49.00"},
        {"code": "montage", "name": "Montages", "type": "metered", "meter": "montages", "unit_amount": "1.20",
         "included_units": "10", "minimum_amount": "100"},
        {"code": "calls", "name": "Appels", "type": "metered", "meter": "calls", "tier_mode": "graduated",
         "tiers": [{"up_to": "1000", "unit_amount": "0.50", "flat_amount": "5"}, {"up_to": None, "unit_amount": "0.40"}]},
        {"code": "pack", "type": "metered", "meter": "pk", "package_size": "100", "unit_amount": "3"},
        {"code": "vol", "type": "metered", "meter": "v", "tier_mode": "volume",
         "tiers": [{"up_to": "10", "unit_amount": "2"}, {"up_to": None, "unit_amount": "1"}]},
        {"code": "support", "name": "Support", "type": "time_and_materials", "hours_meter": "agent_hours",
         "hourly_rate": "38.00", "materials_meter": "parts_cost", "markup_percent": "15"},
        {"code": "quality", "name": "Qualité", "type": "bonus_malus", "kpi_meter": "service_level", "target": "0.90",
         "bonus_percent": "5", "malus_percent": "10", "applies_to": ["calls"]},
    ],
    "options": [{"code": "express", "name": "Intervention 4 h", "amount": "30.00"}],
})
USAGE = {"montages": MeterUsage(D(50)), "calls": MeterUsage(D(1500)), "pk": MeterUsage(D(250)),
         "v": MeterUsage(D(12)), "agent_hours": MeterUsage(D("7.5")), "parts_cost": MeterUsage(D(120)),
         "service_level": MeterUsage(D("0.8"), D("0.8"), D("0.8"))}
AT = datetime(2026, 12, 12, 23, tzinfo=UTC)


def labels(lines: list[InvoiceLine], language: str) -> list[str]:
    return [line_label(line.as_dict(), language, "Europe/Paris") for line in lines]


def test_fees_and_options_are_named_by_the_offer_and_the_component():
    lines = rate_fees(OFFER, ["express"], None, DECEMBER)
    assert labels(lines, "fr") == ["Clic&O Neksia – Abonnement", "Clic&O Neksia – Option Intervention 4 h"]
    assert labels(lines, "en") == ["Clic&O Neksia – Abonnement", "Clic&O Neksia – Option Intervention 4 h"]
    assert [(d.quantity, d.unit, d.unit_price) for d in (document_line(l.as_dict(), "EUR") for l in lines)] == [
        (D(1), "month", D("49.00")), (D(1), "month", D("30.00"))]


def test_usage_of_every_charge_model_in_both_languages():
    lines = rate_usage(OFFER, None, USAGE, DECEMBER)
    assert labels(lines, "fr") == [
        "Clic&O Neksia – Montages, au-delà de 10 inclus",
        "Clic&O Neksia – Montages : minimum de facturation de la période",
        "Clic&O Neksia – Appels, palier 1 (de 0 à 1000)",
        "Clic&O Neksia – Appels : forfait du palier 1 (de 0 à 1000)",
        "Clic&O Neksia – Appels, palier 2 (au-delà de 1000)",
        "Clic&O Neksia – pack, par lot de 100",
        "Clic&O Neksia – vol, tout au palier 2 (au-delà de 10)",
        "Clic&O Neksia – Support, main-d'œuvre",
        "Clic&O Neksia – Support, fournitures au coût x 1,15",
        "Clic&O Neksia – Qualité : malus de 10 % (objectif ≥ 0,90 manqué, mesure 0,8)",
    ]
    assert labels(lines, "en") == [
        "Clic&O Neksia – Montages, beyond 10 included",
        "Clic&O Neksia – Montages: minimum charge for the period",
        "Clic&O Neksia – Appels, tier 1 (0 to 1000)",
        "Clic&O Neksia – Appels: flat fee of tier 1 (0 to 1000)",
        "Clic&O Neksia – Appels, tier 2 (above 1000)",
        "Clic&O Neksia – pack, in blocks of 100",
        "Clic&O Neksia – vol, all at tier 2 (above 10)",
        "Clic&O Neksia – Support, labour",
        "Clic&O Neksia – Support, materials at cost x 1.15",
        "Clic&O Neksia – Qualité: malus of 10% (target ≥ 0.90 missed, measured 0.8)",
    ]
    shown = [document_line(line.as_dict(), "EUR") for line in lines]
    assert [(d.quantity, d.unit, d.unit_price, d.amount) for d in shown] == [
        (D(40), "unit", D("1.20"), D("48.00")),
        (D(1), "lump_sum", D("52.00"), D("52.00")),       # the minimum's true-up
        (D(1000), "unit", D("0.50"), D("500.00")),
        (D(1), "lump_sum", D("5.00"), D("5.00")),         # a tier's flat fee
        (D(500), "unit", D("0.40"), D("200.00")),
        (D(3), "block", D("3"), D("9.00")),
        (D(12), "unit", D("1"), D("12.00")),
        (D("7.5"), "hour", D("38.00"), D("285.00")),
        (D(120), "amount", D("1.15"), D("138.00")),
        (D(-1), "lump_sum", D("70.50"), D("-70.50")),     # a malus: a negative quantity, never a negative price
    ]
    assert all(d.quantity * d.unit_price == d.amount or d.unit == "lump_sum" for d in shown)
    assert [d.unit_code for d in shown[:3]] == ["C62", "LS", "C62"] and shown[7].unit_code == "HUR"


def test_a_change_in_the_period_prorates_and_credits():
    lines = prorate_fees(OFFER, [], None, DECEMBER, AT) + credit_unused_fees(OFFER, [], None, DECEMBER, AT)
    assert labels(lines, "fr") == [
        "Clic&O Neksia – Abonnement, prorata temporis (61,29 % de la période)",
        "Crédit prorata temporis : Clic&O Neksia – Abonnement (61,29 % de la période non utilisée)",
    ]
    assert labels(lines, "en") == [
        "Clic&O Neksia – Abonnement, prorated (61.29% of the period)",
        "Unused time credit: Clic&O Neksia – Abonnement (61.29% of the period)",
    ]
    credit = document_line(lines[1].as_dict(), "EUR")
    assert (credit.quantity, credit.unit_price, credit.amount) == (D(-1), D("30.03"), D("-30.03"))


def test_late_usage_names_the_period_it_belongs_to():
    [line] = rate_late_usage(OFFER, None, {"calls": MeterUsage(D(100))}, {"calls": MeterUsage(D(140))}, DECEMBER)
    assert line_label(line.as_dict(), "fr", "Europe/Paris") == (
        "Clic&O Neksia – Appels : régularisation de consommation, période du 01/12/2026 au 31/12/2026")
    assert line_label(line.as_dict(), "en", "Europe/Paris") == (
        "Clic&O Neksia – Appels: late usage, period 2026-12-01 to 2026-12-31")


def test_a_line_without_names_keeps_its_description():
    line = {"kind": "fee", "component": "base", "description": "base", "quantity": "1", "unit_amount": "49.00",
            "amount": "49.00"}
    assert line_label(line, "fr", "UTC") == "base"
    assert InvoiceLine.from_dict({**line, "period_start": "2026-12-01T00:00:00Z",
                                  "period_end": "2027-01-01T00:00:00Z"}).source is None


@pytest.mark.parametrize("interval, count, unit", [("month", 1, "month"), ("year", 1, "year"), ("week", 1, "week"),
                                                   ("day", 1, "day"), ("month", 3, "period")])
def test_a_fee_counts_periods_of_its_offers_interval(interval, count, unit):
    offer = parse_offer({"code": "o", "name": "O", "currency": "EUR", "billing_interval": interval,
                         "interval_count": count, "components": [{"code": "base", "type": "flat", "amount": "1"}]})
    [line] = rate_fees(offer, [], None, DECEMBER)
    assert line.as_dict()["unit"] == unit
