"""The offers, periods and usage the invoice-rule tests share, and the
`TermsAt` they hand in: plain catalog Offers, looked up by offer id and
instant as the offers service would (the version in force at that instant)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.invoicing import Account, TermsAt, key
from chalicelib.domain.lifecycle import Plan
from chalicelib.domain.periods import Interval, Period
from chalicelib.domain.rating import MeterUsage

D = Decimal
UTC = timezone.utc
DAY = timedelta(days=1)
MONTHLY = Interval("month")

ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)
NOV = Period(ANCHOR, datetime(2026, 12, 1, tzinfo=UTC))  # 30 days
DEC = Period(NOV.end, datetime(2027, 1, 1, tzinfo=UTC))  # 31 days
JAN = Period(DEC.end, datetime(2027, 2, 1, tzinfo=UTC))  # 31 days
TRIAL = Period(ANCHOR - 14 * DAY, ANCHOR)  # 14 days of trial before the first paid period
# The tenth day of November has started: floor((30 days - 9 days 8 h) / 1 day) = 20 whole days remain.
DAY_10 = ANCHOR + timedelta(days=9, hours=8)


def offer(code: str, base: str, montage: str, *, express: str | None = "30.00", included: str = "100"):
    """A flat base fee, `montage` per montage, graduated calls beyond
    `included` (up to 1000 at 0.50, then 0.40), an `express` option."""
    return parse_offer({
        "code": code, "name": code, "currency": "EUR", "billing_interval": "month",
        "components": [
            {"code": "base", "type": "flat", "amount": base},
            {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": montage},
            {"code": "calls", "type": "metered", "meter": "calls", "tier_mode": "graduated",
             "included_units": included,
             "tiers": [{"up_to": "1000", "unit_amount": "0.50"}, {"up_to": None, "unit_amount": "0.40"}]},
        ],
        "options": [] if express is None else [{"code": "express", "name": "4h on-site", "amount": express}],
    })


BASIC = offer("basic", "49.00", "1.20")
BASIC_2027 = offer("basic", "55.00", "1.20")  # version 2, in force from 1 January 2027
PLUS = offer("plus", "79.00", "1.05")
PER_ACT = offer("per-act", "10.00", "2.00")

# offer id -> its versions, oldest first: (in force from, version number, terms)
CATALOG = {
    "off_basic": [(None, 1, BASIC), (JAN.start, 2, BASIC_2027)],
    "off_plus": [(None, 1, PLUS)],
    "off_per_act": [(None, 1, PER_ACT)],
}


def terms_from(catalog: dict) -> TermsAt:
    """The `TermsAt` of a catalog: the last version in force at the instant."""
    def terms(offer_id: str, at: datetime):
        in_force = [(version, terms) for since, version, terms in catalog[offer_id] if since is None or since <= at]
        return in_force[-1]
    return terms


TERMS = terms_from(CATALOG)
BASIC_PLAN = Plan("off_basic", ("express",))
PLUS_PLAN = Plan("off_plus")


def account(period: Period = NOV, index: int = 0, plan: Plan = BASIC_PLAN, **fields) -> Account:
    """A monthly subscription anchored on 1 November 2026 (UTC), in `period`."""
    return Account(anchor=ANCHOR, interval=MONTHLY, timezone="UTC", period=period, period_index=index,
                   plan=plan, **fields)


def used(**meters) -> dict[str, MeterUsage]:
    """A period's usage: meter -> summed quantity."""
    return {meter: MeterUsage(D(quantity)) for meter, quantity in meters.items()}


def usage_of(*periods_and_usage) -> dict:
    """Usage by period key, from (period, usage) pairs."""
    return {key(period.start): usage for period, usage in periods_and_usage}


def amounts(lines) -> list[tuple[str, str, Decimal]]:
    return [(line.kind, line.component, line.amount) for line in lines]


def total(lines, *kinds: str) -> Decimal:
    return sum((line.amount for line in lines if not kinds or line.kind in kinds), D(0))
