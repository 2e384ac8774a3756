"""Rating: (offer terms, a subscription's choices, usage, period) -> invoice lines.

API.md's billing rules, per component type:
- flat components and options are billed in advance, for the period being
  opened (`rate_fees`); a mid-period change prorates them (`prorate_fees`,
  `credit_unused_fees`);
- metered, time_and_materials and bonus_malus are billed in arrears, for the
  period being closed (`rate_usage`), from usage already aggregated per meter
  and period (`MeterUsage`);
- `rate_period` is the boundary invoice: the closed period's usage plus the
  next period's fees.

One charge model per pricing, behind one dispatch table (CHARGE_MODELS,
keyed by component type and, for metered, by pricing: per_unit, package,
graduated, volume). Terms and a subscription's price_overrides (of components
and of options) are compiled once into a PriceBook (cached), so rating a period is plain Decimal
arithmetic with no model validation.

Line conventions chosen here:
- every line amount is rounded to the currency's minor unit, ROUND_HALF_UP,
  line by line (API.md: every invoice amount is rounded); where Stripe
  charges in a coarser unit (KWD, BHD...: 0.010; MGA: 1), to that unit
  (money.billing_quantum), so the invoice is never rounded again to be charged;
- graduated tiers give one line per tier touched (as Stripe shows them),
  plus a line for a touched tier's flat_amount when it is not zero; a
  volume price gives one line (and one for the tier's flat_amount);
  zero billable units touch no tier: one zero line, no flat_amount;
- a metered or time_and_materials component always shows its line(s),
  zero included, so the customer sees the meter was read;
- `included_units` come off the aggregated quantity first; tiers and
  packages apply to what remains;
- package lines count blocks: quantity = started blocks, unit_amount = the
  block price;
- materials: quantity = the reported cost, unit_amount = 1 + markup/100;
- a flat component named in a bonus_malus `applies_to` counts at its full
  period amount; a malus is rounded half up on its absolute value;
- prorated fees and proration credits have quantity 1 and no unit_amount:
  their description gives the share of the period.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, NamedTuple

from chalicelib.domain.catalog import Offer
from chalicelib.domain.price_overrides import priced_terms
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import HUNDRED, ONE, ZERO, billing_quantum, format_decimal, minor_units
from chalicelib.domain.periods import Period, instant_text, parse_instant_text, proration_fraction

KINDS = ("fee", "option", "usage", "minimum", "proration", "adjustment", "credit")


@dataclass(frozen=True, slots=True)
class MeterUsage:
    """One meter's usage in one period, as the store keeps it: the sum of the
    quantities, the largest reading, and the last one (by timestamp)."""

    total: Decimal = ZERO
    maximum: Decimal | None = None
    last: Decimal | None = None


NO_USAGE = MeterUsage()


class LineSource(NamedTuple):
    """What a line bills, named for the invoice document: the offer (code
    and name), the component's or option's name (None: its code stands for
    it) and the unit its quantity counts: a fee counts periods of its offer's
    interval (day, week, month, year, or period), a metered component units
    or blocks, time and materials hours and an amount of cost."""

    offer_code: str
    offer_name: str
    name: str | None
    unit: str


class InvoiceLine(NamedTuple):
    """One line of an invoice. `amount` is already rounded to the currency's minor unit.

    A named tuple: immutable, compared and hashed by value, and built by one
    C call, which makes it the cheapest object rating creates (a frozen
    dataclass costs 1.5 to 2 times as much per line)."""

    kind: str
    component: str | None
    description: str
    quantity: Decimal
    unit_amount: Decimal | None
    amount: Decimal
    period_start: datetime
    period_end: datetime
    source: LineSource | None = None

    @classmethod
    def from_dict(cls, line: dict) -> "InvoiceLine":
        """The line `as_dict` wrote (as an invoice or a pending item stores it)."""
        source = None
        if line.get("offer_code") is not None:
            source = LineSource(line["offer_code"], line.get("offer_name") or line["offer_code"],
                                line.get("component_name"), line.get("unit") or "unit")
        return cls(
            line["kind"], line["component"], line["description"], Decimal(line["quantity"]),
            None if line["unit_amount"] is None else Decimal(line["unit_amount"]), Decimal(line["amount"]),
            _instant(line["period_start"]), _instant(line["period_end"]), source,
        )

    def as_dict(self) -> dict:
        """The line as API.md writes it (decimal strings, UTC times with Z),
        with what it bills named when it is known (`LineSource`)."""
        line = {
            "kind": self.kind,
            "component": self.component,
            "description": self.description,
            "quantity": format_decimal(self.quantity),
            "unit_amount": None if self.unit_amount is None else format_decimal(self.unit_amount),
            "amount": format_decimal(self.amount),
            "period_start": _iso(self.period_start),
            "period_end": _iso(self.period_end),
        }
        source = self.source
        if source is not None:
            line["offer_code"] = source.offer_code
            line["offer_name"] = source.offer_name
            line["component_name"] = source.name
            line["unit"] = source.unit
        return line


_iso = instant_text
_instant = parse_instant_text


def _num(value: Decimal) -> str:
    """A number for a description: str() is the fast path, plain notation guaranteed."""
    text = str(value)
    return format_decimal(value) if "E" in text else text


# ---------------------------------------------------------------------------
# Charge models: one small class per pricing, compiled from a component.
# Each appends its lines to `out` (one list per invoice, no intermediate lists).


class _Charge:
    """Base of the compiled charge models: the component's code and the rounding of its currency."""

    __slots__ = ("code", "quantum", "source", "written")

    def __init__(self, component, quantum: Decimal):
        self.code = component.code
        self.quantum = quantum
        # Set by the PriceBook of an offer (`name_charges`).
        self.source: LineSource | None = None
        # Set by the PriceBook of a currency billed in a coarser unit than its
        # minor unit (KWD: 0.01, written 5.120): the ISO 4217 quantum.
        self.written: Decimal | None = None

    def money(self, amount: Decimal) -> Decimal:
        rounded = amount.quantize(self.quantum, rounding=ROUND_HALF_UP)
        return rounded if self.written is None else rounded.quantize(self.written)


class FlatFee(_Charge):
    """`flat` (and an option): a fixed amount per period, in advance."""

    __slots__ = ("amount", "rounded", "kind", "label")

    def __init__(self, component, quantum: Decimal, *, kind: str = "fee", label: str | None = None):
        super().__init__(component, quantum)
        self.amount = component.amount
        self.rounded = self.money(self.amount)
        self.kind = kind
        self.label = label or component.code

    def full(self, period: Period) -> InvoiceLine:
        return InvoiceLine(self.kind, self.code, self.label, ONE, self.amount, self.rounded, period.start, period.end,
                           self.source)

    def prorated(self, period: Period, fraction: Decimal, sign: int = 1) -> InvoiceLine:
        """This share of the fee (sign -1: the credit of it, a `proration` line)."""
        amount = self.money(self.amount * fraction)
        share = format_decimal((fraction * HUNDRED).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP).normalize())
        if sign < 0:
            return InvoiceLine(
                "proration", self.code, f"Unused time on {self.label} ({share}% of the period)",
                ONE, None, -amount if amount else amount, period.start, period.end, self.source,
            )
        return InvoiceLine(
            self.kind, self.code, f"{self.label} ({share}% of the period)", ONE, None, amount, period.start, period.end,
            self.source,
        )


class _Metered(_Charge):
    """Shared by the metered charge models: aggregation, included units, minimum."""

    __slots__ = ("meter", "aggregation", "included", "minimum", "minimum_text", "beyond")

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        self.meter = component.meter
        self.aggregation = component.aggregation
        self.included = component.included_units
        self.minimum = component.minimum_amount
        if self.minimum is not None:
            self.minimum_text = f"{self.code}: minimum of {format_decimal(self.minimum)} per period"
        self.beyond = f" {self.meter} beyond {format_decimal(self.included)} included" if self.included else f" {self.meter}"

    def quantity(self, usage: Mapping[str, MeterUsage]) -> Decimal:
        """The period's quantity by the component's aggregation, never below zero."""
        meter = usage.get(self.meter, NO_USAGE)
        if self.aggregation == "sum":
            value = meter.total
        elif self.aggregation == "max":
            value = meter.maximum
        else:
            value = meter.last
        if value is None or value < 0:
            return ZERO
        return value

    measure = quantity

    def rate(self, usage: Mapping[str, MeterUsage], period: Period, out: list) -> None:
        quantity = self.quantity(usage)
        units = quantity - self.included if quantity > self.included else ZERO
        first = len(out)
        self.price(units, period, out)
        if self.minimum is not None:
            billed = sum(line.amount for line in out[first:])
            if billed < self.minimum:
                gap = self.money(self.minimum - billed)
                out.append(InvoiceLine("minimum", self.code, self.minimum_text, ONE, gap, gap, period.start, period.end,
                                       self.source))

    def price(self, units: Decimal, period: Period, out: list) -> None:
        raise NotImplementedError


class PerUnitCharge(_Metered):
    """`metered` with `unit_amount`: every billable unit at the unit price."""

    __slots__ = ("unit_amount",)

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        self.unit_amount = component.unit_amount

    def price(self, units: Decimal, period: Period, out: list) -> None:
        out.append(
            InvoiceLine(
                "usage", self.code, f"{self.code}: {_num(units)}{self.beyond}",
                units, self.unit_amount, self.money(units * self.unit_amount), period.start, period.end, self.source,
            )
        )


class PackageCharge(_Metered):
    """`metered` with `package_size`: `unit_amount` per started block of `package_size` units."""

    __slots__ = ("unit_amount", "size", "blocks_text")

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        self.unit_amount = component.unit_amount
        self.size = component.package_size
        self.blocks_text = f" block(s) of {format_decimal(self.size)}"

    def blocks(self, units: Decimal) -> Decimal:
        # A started block is a whole block. Not -(-units // size): on Decimals
        # `//` truncates toward zero, so that idiom would round down.
        whole, rest = divmod(units, self.size)
        return whole + 1 if rest else whole

    def price(self, units: Decimal, period: Period, out: list) -> None:
        blocks = self.blocks(units)
        out.append(
            InvoiceLine(
                "usage", self.code, f"{self.code}: {_num(units)}{self.beyond}, {_num(blocks)}{self.blocks_text}",
                blocks, self.unit_amount, self.money(blocks * self.unit_amount), period.start, period.end, self.source,
            )
        )


class _Tiered(_Metered):
    """Tiers compiled to (lower bound, upper bound or None, unit price, flat amount, label)."""

    __slots__ = ("tiers", "zero_text")

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        tiers = []
        lower = ZERO
        for number, tier in enumerate(component.tiers, 1):
            upper = tier.up_to
            if upper is None:
                label = f"tier {number} (above {format_decimal(lower)})"
            else:
                label = f"tier {number} ({format_decimal(lower)} to {format_decimal(upper)})"
            tiers.append((lower, upper, tier.unit_amount or ZERO, tier.flat_amount or ZERO, label))
            lower = upper
        self.tiers = tuple(tiers)
        self.zero_text = f"{self.code}: 0{self.beyond}"

    def nothing(self, period: Period, out: list) -> None:
        # No billable unit touches no tier: one zero line, no flat_amount.
        out.append(InvoiceLine("usage", self.code, self.zero_text, ZERO, self.tiers[0][2], self.money(ZERO), period.start,
                               period.end, self.source))


class GraduatedCharge(_Tiered):
    """`tier_mode: graduated`: each unit at the price of the tier it falls in,
    plus the flat_amount of every tier touched; one line per tier touched."""

    __slots__ = ()

    def price(self, units: Decimal, period: Period, out: list) -> None:
        if not units:
            return self.nothing(period, out)
        start, end, code, money = period.start, period.end, self.code, self.money
        for lower, upper, unit_amount, flat_amount, label in self.tiers:
            if units <= lower:
                break
            in_tier = (units if upper is None or units < upper else upper) - lower
            out.append(
                InvoiceLine(
                    "usage", code, f"{code}: {_num(in_tier)} {self.meter} in {label}",
                    in_tier, unit_amount, money(in_tier * unit_amount), start, end, self.source,
                )
            )
            if flat_amount:
                out.append(InvoiceLine("usage", code, f"{code}: flat fee of {label}", ONE, flat_amount, money(flat_amount),
                                       start, end, self.source))


class VolumeCharge(_Tiered):
    """`tier_mode: volume`: all units at the price of the tier the total falls
    in, plus that tier's flat_amount."""

    __slots__ = ()

    def price(self, units: Decimal, period: Period, out: list) -> None:
        if not units:
            return self.nothing(period, out)
        for lower, upper, unit_amount, flat_amount, label in self.tiers:
            if upper is None or units <= upper:
                break
        start, end, code = period.start, period.end, self.code
        out.append(
            InvoiceLine(
                "usage", code, f"{code}: {_num(units)}{self.beyond}, all at {label}",
                units, unit_amount, self.money(units * unit_amount), start, end, self.source,
            )
        )
        if flat_amount:
            out.append(InvoiceLine("usage", code, f"{code}: flat fee of {label}", ONE, flat_amount, self.money(flat_amount),
                                   start, end, self.source))


class TimeAndMaterialsCharge(_Charge):
    """`time_and_materials`: hours x hourly_rate, plus material cost x (1 + markup/100)."""

    __slots__ = ("hours_meter", "hourly_rate", "materials_meter", "factor", "hours_text", "materials_text",
                 "materials_source")

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        self.hours_meter = component.hours_meter
        self.hourly_rate = component.hourly_rate
        self.materials_meter = component.materials_meter
        self.factor = ONE + component.markup_percent / HUNDRED
        self.hours_text = f" h at {format_decimal(self.hourly_rate)}"
        self.materials_text = f"{self.code}: materials at cost x {format_decimal(self.factor)}"
        self.materials_source: LineSource | None = None

    def measure(self, usage: Mapping[str, MeterUsage]) -> Decimal:
        hours = usage.get(self.hours_meter, NO_USAGE).total
        return hours if hours > 0 else ZERO

    def rate(self, usage: Mapping[str, MeterUsage], period: Period, out: list) -> None:
        hours = self.measure(usage)
        out.append(
            InvoiceLine(
                "usage", self.code, f"{self.code}: {_num(hours)}{self.hours_text}",
                hours, self.hourly_rate, self.money(hours * self.hourly_rate), period.start, period.end, self.source,
            )
        )
        if self.materials_meter is not None:
            cost = usage.get(self.materials_meter, NO_USAGE).total
            if cost < 0:
                cost = ZERO
            out.append(
                InvoiceLine(
                    "usage", self.code, self.materials_text,
                    cost, self.factor, self.money(cost * self.factor), period.start, period.end,
                    self.materials_source,
                )
            )


class BonusMalusCharge(_Charge):
    """`bonus_malus`: the period's last KPI against the target. Met: a bonus of
    bonus_percent of the applies_to components' amounts; missed: a malus of
    malus_percent of them, credited; no KPI reported: no line."""

    __slots__ = ("kpi_meter", "target", "at_least", "bonus", "malus", "applies_to", "met_text", "missed_text")

    def __init__(self, component, quantum: Decimal):
        super().__init__(component, quantum)
        self.kpi_meter = component.kpi_meter
        self.target = component.target
        self.at_least = component.direction == "at_least"
        self.bonus = component.bonus_percent / HUNDRED
        self.malus = component.malus_percent / HUNDRED
        self.applies_to = tuple(component.applies_to)
        target = f"{'>=' if self.at_least else '<='} {format_decimal(self.target)}"
        on = ", ".join(self.applies_to)
        self.met_text = f" met target {target}, bonus of {format_decimal(component.bonus_percent)}% on {on}"
        self.missed_text = f" missed target {target}, malus of {format_decimal(component.malus_percent)}% on {on}"

    def measure(self, usage: Mapping[str, MeterUsage]) -> Decimal:
        return ZERO

    def adjust(self, usage: Mapping[str, MeterUsage], amounts: Mapping[str, Decimal], period: Period, out: list) -> None:
        kpi = usage.get(self.kpi_meter, NO_USAGE).last
        if kpi is None:
            return
        base = ZERO
        for code in self.applies_to:
            base += amounts.get(code, ZERO)
        if kpi >= self.target if self.at_least else kpi <= self.target:
            amount = self.money(base * self.bonus)
            text = f"{self.code}: {self.kpi_meter} {_num(kpi)}{self.met_text}"
        else:
            amount = self.money(base * self.malus)
            amount = -amount if amount else amount
            text = f"{self.code}: {self.kpi_meter} {_num(kpi)}{self.missed_text}"
        out.append(InvoiceLine("adjustment", self.code, text, ONE, None, amount, period.start, period.end, self.source))


def _pricing(component) -> str | None:
    return component.pricing if component.type == "metered" else None


# The one dispatch: (component type, metered pricing) -> charge model.
CHARGE_MODELS = {
    ("flat", None): FlatFee,
    ("metered", "per_unit"): PerUnitCharge,
    ("metered", "package"): PackageCharge,
    ("metered", "graduated"): GraduatedCharge,
    ("metered", "volume"): VolumeCharge,
    ("time_and_materials", None): TimeAndMaterialsCharge,
    ("bonus_malus", None): BonusMalusCharge,
}


def charge_model(component, quantum: Decimal) -> _Charge:
    """The compiled charge model of one component."""
    return CHARGE_MODELS[(component.type, _pricing(component))](component, quantum)


# ---------------------------------------------------------------------------
# Price books: terms + overrides, compiled once.


class PriceBook:
    """One subscription's prices for a version of its offer: the terms with
    price_overrides applied, compiled into charge models. Immutable once built."""

    __slots__ = ("currency", "quantum", "fees", "options", "usage_charges", "adjustments", "flat_amounts")

    def __init__(self, currency: str, components: Iterable, options: Iterable, offer: Offer | None = None):
        self.currency = currency
        # Stripe's unit where it is coarser than the minor unit (money.CURRENCIES):
        # every line is then an amount the invoice can charge as it is.
        self.quantum = billing_quantum(currency)
        components = list(components)
        options = list(options)
        charges = [charge_model(c, self.quantum) for c in components]
        self.fees = tuple(c for c in charges if isinstance(c, FlatFee))
        self.usage_charges = tuple(c for c in charges if isinstance(c, (_Metered, TimeAndMaterialsCharge)))
        self.adjustments = tuple(c for c in charges if isinstance(c, BonusMalusCharge))
        self.options = {
            option.code: FlatFee(option, self.quantum, kind="option", label=f"Option {option.code}: {option.name}")
            for option in options
        }
        written = Decimal(1).scaleb(-minor_units(currency))
        if written != self.quantum:
            for charge in (*charges, *self.options.values()):
                charge.written = written
                if isinstance(charge, FlatFee):
                    charge.rounded = charge.money(charge.amount)
        # A flat component counts at its full period amount in a bonus/malus base.
        self.flat_amounts = {fee.code: fee.rounded for fee in self.fees}
        if offer is not None:
            name_charges(offer, zip(components, charges), options, self.options)

    def chosen_options(self, options: Iterable[str] | None) -> list[FlatFee]:
        chosen = []
        for j, code in enumerate(options or ()):
            try:
                chosen.append(self.options[code])
            except KeyError:
                raise InvalidRequest(f"options[{j}]: no option {code!r} in this offer", param=f"options[{j}]") from None
        return chosen


_INTERVAL_UNITS = {"day": "day", "week": "week", "month": "month", "year": "year"}
_CHARGE_UNITS = {PackageCharge: "block", TimeAndMaterialsCharge: "hour"}


def name_charges(offer: Offer, compiled, options: Iterable, option_fees: Mapping) -> None:
    """Give each charge of an offer's price book the LineSource its lines carry."""
    period = _INTERVAL_UNITS[offer.billing_interval] if offer.interval_count == 1 else "period"
    for component, charge in compiled:
        unit = period if isinstance(charge, FlatFee) else _CHARGE_UNITS.get(type(charge), "unit")
        charge.source = LineSource(offer.code, offer.name, component.name, unit)
        if isinstance(charge, TimeAndMaterialsCharge):
            charge.materials_source = LineSource(offer.code, offer.name, component.name, "amount")
    for option in options:
        option_fees[option.code].source = LineSource(offer.code, offer.name, option.name, period)


_BOOKS: OrderedDict = OrderedDict()
_BOOKS_SIZE = 1024


def price_book(terms, overrides: Mapping | None = None, *, currency: str | None = None) -> PriceBook:
    """The compiled prices of `terms` (an Offer, or a Terms / OfferVersion with
    `currency`) under a subscription's `price_overrides`.

    Memoized by (terms object, currency, repr of the overrides): a warm
    billing worker compiles each (version, overrides) once. The overrides
    are JSON-like (strings, lists, dicts), whose repr says their content;
    the same content in another key order is merely another cache entry.
    The cache holds the terms object itself, so its id cannot be reused
    while cached; pass the long-lived Offer or OfferVersion (not
    `offer.terms`, a fresh view each time, which would miss the cache).
    Passing a PriceBook returns it (its overrides are already applied)."""
    if isinstance(terms, PriceBook):
        if overrides:
            raise ValueError("a PriceBook already has its price_overrides applied")
        return terms
    if currency is None:
        if not isinstance(terms, Offer):
            raise ValueError("currency is required unless terms is an Offer")
        currency = terms.currency
    key = (id(terms), currency, repr(overrides) if overrides else None)
    hit = _BOOKS.get(key)
    if hit is not None and hit[0] is terms:
        return hit[1]
    components, options = priced_terms(currency, terms, overrides)
    book = PriceBook(currency, components, options, terms if isinstance(terms, Offer) else None)
    _BOOKS[key] = (terms, book)
    if len(_BOOKS) > _BOOKS_SIZE:
        _BOOKS.popitem(last=False)
    return book


# ---------------------------------------------------------------------------
# Rating


def rate_fees(terms, options, overrides, period: Period, fraction: Decimal = ONE, *, currency: str | None = None) -> list[InvoiceLine]:
    """The fees billed in advance for `period`: flat components, then the chosen options.

    `fraction` < 1 bills that share of each fee (a period started mid-way);
    such lines say the share in their description."""
    return _fee_lines(price_book(terms, overrides, currency=currency), options, period, fraction)


def _fee_lines(book: PriceBook, options, period: Period, fraction: Decimal = ONE) -> list[InvoiceLine]:
    fees = (*book.fees, *book.chosen_options(options)) if options else book.fees
    if fraction == ONE:
        return [fee.full(period) for fee in fees]
    if not ZERO <= fraction <= ONE:
        raise ValueError("fraction is between 0 and 1")
    return [fee.prorated(period, fraction) for fee in fees]


def prorate_fees(terms, options, overrides, period: Period, at: datetime, *, currency: str | None = None) -> list[InvoiceLine]:
    """New fees from `at` to the end of `period` (a change or a start mid-period),
    at proration_fraction(period.start, period.end, at) of each fee; the lines cover [at, end)."""
    fraction = proration_fraction(period.start, period.end, at)
    part = Period(min(max(at, period.start), period.end), period.end)
    return _fee_lines(price_book(terms, overrides, currency=currency), options, part, fraction)


def credit_unused_fees(terms, options, overrides, period: Period, at: datetime, *, currency: str | None = None) -> list[InvoiceLine]:
    """Credit for the unused part of `period`'s fees, from `at` (change or cancel
    immediately): one `proration` line per fee with the negative prorated amount,
    covering [at, end)."""
    book = price_book(terms, overrides, currency=currency)
    fraction = proration_fraction(period.start, period.end, at)
    part = Period(min(max(at, period.start), period.end), period.end)
    return [fee.prorated(part, fraction, -1) for fee in (*book.fees, *book.chosen_options(options))]


def rate_usage(terms, overrides, usage: Mapping[str, MeterUsage], period: Period, *, currency: str | None = None) -> list[InvoiceLine]:
    """The usage billed in arrears for `period`: metered and time_and_materials
    lines (with minimum true-ups), then bonus_malus adjustments.

    `usage` maps a meter to its MeterUsage for the period; a meter no
    component prices is ignored (recorded, not billed)."""
    return _usage_lines(price_book(terms, overrides, currency=currency), usage, period)


def _usage_lines(book: PriceBook, usage: Mapping[str, MeterUsage], period: Period) -> list[InvoiceLine]:
    lines: list[InvoiceLine] = []
    for charge in book.usage_charges:
        charge.rate(usage, period, lines)
    if book.adjustments:
        amounts = dict(book.flat_amounts)
        for line in lines:
            amounts[line.component] = amounts.get(line.component, ZERO) + line.amount
        for adjustment in book.adjustments:
            adjustment.adjust(usage, amounts, period, lines)
    return lines


def rate_period(
    terms,
    options,
    overrides,
    usage: Mapping[str, MeterUsage],
    closed: Period | None,
    opening: Period | None,
    *,
    currency: str | None = None,
) -> list[InvoiceLine]:
    """The lines of a boundary invoice: the closed period's usage (in arrears)
    and the opening period's fees (in advance). Either period may be None:
    the first invoice has no closed period, the last (cancel at period end)
    no opening one."""
    book = price_book(terms, overrides, currency=currency)
    lines = _usage_lines(book, usage, closed) if closed is not None else []
    if opening is not None:
        lines += _fee_lines(book, options, opening)
    return lines


def rate_late_usage(
    terms,
    overrides,
    billed: Mapping[str, MeterUsage],
    usage: Mapping[str, MeterUsage],
    period: Period,
    *,
    currency: str | None = None,
) -> list[InvoiceLine]:
    """Usage that arrived after `period` was invoiced, for the next invoice.

    API.md: late usage does not reopen a finalized invoice; it is billed on
    its own line naming its period. The period is re-rated with all its
    usage (`usage`) and with what was invoiced (`billed`); each component
    whose amount or measured quantity changed gets one line with the
    difference, so tiers, included units, minimums and bonus/malus stay
    right (rating the late usage alone would restart the tiers at zero)."""
    book = price_book(terms, overrides, currency=currency)
    before = _amounts(_usage_lines(book, billed, period))
    after = _amounts(_usage_lines(book, usage, period))
    days = f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"
    lines = []
    for charge in (*book.usage_charges, *book.adjustments):
        amount = after.get(charge.code, ZERO) - before.get(charge.code, ZERO)
        quantity = charge.measure(usage) - charge.measure(billed)
        if not amount and not quantity:
            continue
        kind = "adjustment" if isinstance(charge, BonusMalusCharge) else "usage"
        lines.append(
            InvoiceLine(
                kind, charge.code, f"{charge.code}: late usage for the period {days}",
                quantity, None, amount, period.start, period.end, charge.source,
            )
        )
    return lines


def _amounts(lines: list[InvoiceLine]) -> dict[str, Decimal]:
    amounts: dict[str, Decimal] = {}
    for line in lines:
        amounts[line.component] = amounts.get(line.component, ZERO) + line.amount
    return amounts
