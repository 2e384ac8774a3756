"""What an invoice line says to the customer, in its language: the offer's
and the component's names, what part of the price it is (a tier, a share
of the period, late usage), and its quantity in a unit with a unit price.

The label is made once, when the invoice is issued (it is part of the
document), from the line as rating wrote it (`rating.InvoiceLine.as_dict`):
the names come with the line (`offer_name`, `component_name`), what part of
the price it is from rating's own wording of `description` (one pattern per
charge model, pinned by tests/unit/test_invoice_labels.py). A line rated
before lines carried names keeps its description as its label.

`document_line` is the line as the documents show it (the PDF, Factur-X,
UBL): quantity x unit price = amount. A line whose amount is not its
quantity times a unit price (a share of a fee, a credit, a minimum, a
bonus or malus, a tier's flat fee, late usage) is one lump sum: quantity 1
(-1 for a credit, the price never negative), its measured quantity told by
its label.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from chalicelib.domain.document_format import format_number, format_period
from chalicelib.domain.money import round_money

# UN/ECE Recommendation 20 codes of the units (EN 16931, BT-130).
UNIT_CODES = {"day": "DAY", "week": "WEE", "month": "MON", "year": "ANN", "period": "C62", "unit": "C62",
              "block": "C62", "hour": "HUR", "amount": "C62", "lump_sum": "LS"}

UNIT_NAMES = {
    "fr": {"day": "jour", "week": "semaine", "month": "mois", "year": "an", "period": "période", "unit": "unité",
           "block": "lot", "hour": "heure", "lump_sum": "forfait"},
    "en": {"day": "day", "week": "week", "month": "month", "year": "year", "period": "period", "unit": "unit",
           "block": "block", "hour": "hour", "lump_sum": "lump sum"},
}

TEXTS = {
    "fr": {
        "option": "Option {name}",
        "prorated": "{base}, prorata temporis ({share} % de la période)",
        "credit": "Crédit prorata temporis : {base} ({share} % de la période non utilisée)",
        "minimum": "{base} : minimum de facturation de la période",
        "tier": "palier {n} (de {low} à {high})",
        "tier_open": "palier {n} (au-delà de {low})",
        "tier_flat": "{base} : forfait du {tier}",
        "all_at": "tout au {tier}",
        "beyond": "au-delà de {included} inclus",
        "blocks": "par lot de {size}",
        "labour": "main-d'œuvre",
        "materials": "fournitures au coût x {factor}",
        "bonus": "{base} : bonus de {percent} % (objectif {target} atteint, mesure {kpi})",
        "malus": "{base} : malus de {percent} % (objectif {target} manqué, mesure {kpi})",
        "late": "{base} : régularisation de consommation, période {period}",
        "rest": "{base} : consommation du reste de la période",
    },
    "en": {
        "option": "Option {name}",
        "prorated": "{base}, prorated ({share}% of the period)",
        "credit": "Unused time credit: {base} ({share}% of the period)",
        "minimum": "{base}: minimum charge for the period",
        "tier": "tier {n} ({low} to {high})",
        "tier_open": "tier {n} (above {low})",
        "tier_flat": "{base}: flat fee of {tier}",
        "all_at": "all at {tier}",
        "beyond": "beyond {included} included",
        "blocks": "in blocks of {size}",
        "labour": "labour",
        "materials": "materials at cost x {factor}",
        "bonus": "{base}: bonus of {percent}% (target {target} met, measured {kpi})",
        "malus": "{base}: malus of {percent}% (target {target} missed, measured {kpi})",
        "late": "{base}: late usage, period {period}",
        "rest": "{base}: usage for the rest of the period",
    },
}

# Rating's wording (chalicelib/domain/rating.py), one pattern per part.
_SHARE = re.compile(r"\((\d+(?:\.\d+)?)% of the period\)")
_TIER = re.compile(r"tier (\d+) \((?:above ([\d.]+)|([\d.]+) to ([\d.]+))\)")
_BEYOND = re.compile(r" beyond ([\d.]+) included")
_BLOCKS = re.compile(r" block\(s\) of ([\d.]+)")
_MATERIALS = re.compile(r": materials at cost x ([\d.]+)$")
_TARGET = re.compile(r": \S+ (-?[\d.]+(?:E[+-]?\d+)?) (met|missed) target (>=|<=) (-?[\d.]+), "
                     r"(?:bonus|malus) of ([\d.]+)% on ")
_LATE = re.compile(r": late usage for the period ")
_REST = re.compile(r": usage from ")


@dataclass(frozen=True)
class DocumentLine:
    """A line as the documents show it: quantity x unit_price = amount (rounded)."""

    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal

    @property
    def unit_code(self) -> str:
        return UNIT_CODES.get(self.unit, "C62")


def item_name(line: dict, language: str) -> str:
    """The offer's and the component's (or option's) names: "Clic&O Neksia – Base"."""
    component = line.get("component_name") or line.get("component") or ""
    if line.get("kind") == "option" or (line.get("kind") == "proration" and line.get("description", "")
                                         .startswith("Unused time on Option ")):
        component = TEXTS[language]["option"].format(name=component)
    offer = line.get("offer_name")
    if not offer:
        return component
    return f"{offer} – {component}" if component else offer


def line_label(line: dict, language: str, timezone: str) -> str:
    """The line's label in `language` (module docstring), without its period."""
    if not line.get("offer_name"):
        return line.get("description") or line.get("component") or ""
    texts = TEXTS[language]
    description = line.get("description") or ""
    kind = line.get("kind")
    base = item_name(line, language)

    def number(value: str) -> str:
        return format_number(value, language)

    share = _SHARE.search(description)
    if kind == "proration" and share:
        return texts["credit"].format(base=base, share=number(share.group(1)))
    if kind in ("fee", "option") and share:
        return texts["prorated"].format(base=base, share=number(share.group(1)))
    if kind == "minimum":
        return texts["minimum"].format(base=base)
    if _LATE.search(description):
        period = format_period(line.get("period_start"), line.get("period_end"), timezone, language)
        return texts["late"].format(base=base, period=period)
    if _REST.search(description):
        return texts["rest"].format(base=base)
    target = _TARGET.search(description)
    if kind == "adjustment" and target:
        kpi, outcome, sign, goal, percent = target.groups()
        return texts["bonus" if outcome == "met" else "malus"].format(
            base=base, percent=number(percent), target=f"{'≥' if sign == '>=' else '≤'} {number(goal)}",
            kpi=number(kpi))
    tier = _TIER.search(description)
    tier_text = None
    if tier:
        n, above, low, high = tier.groups()
        tier_text = (texts["tier_open"].format(n=n, low=number(above)) if above is not None
                     else texts["tier"].format(n=n, low=number(low), high=number(high)))
        if ": flat fee of " in description:
            return texts["tier_flat"].format(base=base, tier=tier_text)
    details = []
    beyond = _BEYOND.search(description)
    if beyond:
        details.append(texts["beyond"].format(included=number(beyond.group(1))))
    if tier_text:
        details.append(texts["all_at"].format(tier=tier_text) if ", all at " in description else tier_text)
    blocks = _BLOCKS.search(description)
    if blocks:
        details.append(texts["blocks"].format(size=number(blocks.group(1))))
    materials = _MATERIALS.search(description)
    if materials:
        details.append(texts["materials"].format(factor=number(materials.group(1))))
    elif line.get("unit") == "hour":
        details.append(texts["labour"])
    return f"{base}, {', '.join(details)}" if details else base


def document_line(line: dict, currency: str) -> DocumentLine:
    """The line as quantity x unit price (module docstring)."""
    amount = Decimal(line["amount"])
    quantity, unit_amount = line.get("quantity"), line.get("unit_amount")
    description = line.get("description") or ""
    priced = (unit_amount is not None and quantity is not None
              and line.get("kind") in ("fee", "option", "usage") and ": flat fee of " not in description)
    if priced:
        quantity, price = Decimal(quantity), Decimal(unit_amount)
        if price >= 0 and round_money(quantity * price, currency) == amount:
            return DocumentLine(quantity, line.get("unit") or "unit", price, amount)
    return DocumentLine(Decimal(-1) if amount < 0 else Decimal(1), "lump_sum", abs(amount), amount)


def unit_name(unit: str, language: str, currency: str) -> str:
    """The unit as the PDF's column says it (materials count an amount of cost: the currency)."""
    if unit == "amount":
        return currency
    return UNIT_NAMES[language].get(unit, unit)
