"""Reports for merchants: the monthly summary, usage statistics and the
accounting export, and the feed that keeps the monthly aggregates current.

How the aggregates are fed, and why each fact counts exactly once
------------------------------------------------------------------
The billing table's DynamoDB stream (new and old images) is read by one
function, `report_feed` (app.py), which turns each change of an invoice, a
subscription, a `POST /usage` event or a device's usage into additions to
the merchant's monthly aggregates (domain/reports.py: new contribution
minus old contribution).

- Nothing is lost: a stream record is written by DynamoDB with the change
  itself, atomically, whoever made the change (API, billing run, webhook,
  ingestion) - it is the outbox, without any writer having to remember to
  write one. The stream delivers at least once, in order per item; a record
  that fails is handed again, with those after it, until it is counted
  (the function reports it, ReportBatchItemFailures), and a feed that falls
  behind raises the IteratorAge alarm well before the stream's 24 h end.
- Nothing counts twice: a change's additions are written in ONE transaction
  with a marker keyed by the stream record's id (conditional put), so a
  redelivered record finds its marker and adds nothing.
- The writers stay as they are: no aggregate item joins the billing run's
  or the ingestion's transactions, where every merchant-wide item would be
  a hot spot that concurrent workers fight over (TransactionConflict), and
  a reading of a device stays one write.

The domain events on EventBridge (notify.py) are news for merchants' ERPs,
published after the write and at most once: they are not what the figures
are built from.

The price: the figures lag the facts by the stream's delay (about a second).
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from chalicelib.clock import clock
from chalicelib.domain import reports as domain
from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.domain.money import ZERO
from chalicelib.observability import logger, metrics
from chalicelib.services.exports import write_export
from chalicelib.store import reports as store

# The usage statistics are read per day: a year of one meter at most.
MAX_USAGE_DAYS = 366
EXPORT_PAGE = 100
# Aggregates added in one transaction with the change's marker.
FIGURES_PER_CHANGE = 90


# ---------------------------------------------------------------------------
# The feed (DynamoDB stream of the billing table)


@dataclass
class _Batch:
    """What one batch of stream records reads more than once."""

    timezones: dict[str, str] = field(default_factory=dict)
    currencies: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def timezone(self, merchant_id: str) -> str:
        if merchant_id not in self.timezones:
            from chalicelib.store import merchants

            try:
                self.timezones[merchant_id] = merchants.get_merchant(merchant_id).timezone or "UTC"
            except NotFound:
                self.timezones[merchant_id] = "UTC"
        return self.timezones[merchant_id]

    def currency(self, merchant_id: str, subscription_id: str) -> str | None:
        pair = (merchant_id, subscription_id)
        if pair not in self.currencies:
            from chalicelib.store import subscriptions

            try:
                self.currencies[pair] = subscriptions.get_subscription(merchant_id, subscription_id).currency
            except NotFound:
                self.currencies[pair] = None
        return self.currencies[pair]


def feed_reports(records: Iterable[dict]) -> list[str]:
    """Count the changes of a batch of stream records (Lambda's
    `Records`) in the monthly aggregates. Returns the sequence numbers that
    failed: only the first one, as the stream retries from it on (what came
    before is counted; what comes after is retried and finds its markers)."""
    batch = _Batch()
    for record in records:
        try:
            count_change(record, batch)
        except Exception:  # this record is retried by the stream; the others wait behind it
            logger.exception("report figures not counted; the stream will retry",
                             extra={"event_id": record.get("eventID")})
            metrics.add_metric(name="ReportFeedFailed", unit="Count", value=1)
            return [record["dynamodb"]["SequenceNumber"]]
    return []


def count_change(record: dict, batch: _Batch | None = None) -> bool:
    """Count one stream record. False when it is not a fact of the reports,
    or was counted already."""
    batch = batch or _Batch()
    change = record.get("dynamodb", {})
    keys = change.get("Keys", {})
    pk, sk = keys.get("pk", {}).get("S", ""), keys.get("sk", {}).get("S", "")
    old, new = change.get("OldImage"), change.get("NewImage")
    merchant_id = pk.split("#", 1)[0]
    if not merchant_id.startswith("mer_"):
        return False
    if sk == "invoice":
        from chalicelib.services import accounting

        figures, usage = _invoice_change(old, new), {}
        books, entries = accounting.invoice_books_change(old, new)
        accounting.write_entries(merchant_id, entries)
        figures = {**figures, **books}
    elif sk == "subscription":
        figures, usage = _subscription_change(merchant_id, old, new), {}
    elif sk == "usage_event" and record.get("eventName") == "INSERT":
        figures, usage = _usage_event(merchant_id, new, batch)
    elif sk == "device":
        figures, usage = _device_change(merchant_id, old, new, batch)
    else:
        return False
    if not figures and not usage:
        return False
    expires_at = int((clock().now() + timedelta(days=store.MARKER_DAYS)).timestamp())
    # One transaction holds at most 99 aggregates beside its marker: a change
    # that touches more (a line earned over years) is added in parts, each
    # once under a marker of its own.
    keys = sorted(figures)
    parts = [keys[i:i + FIGURES_PER_CHANGE] for i in range(0, len(keys), FIGURES_PER_CHANGE)] or [[]]
    counted = False
    for index, part in enumerate(parts):
        change_id = record["eventID"] if index == 0 else f"{record['eventID']}#{index}"
        counted |= store.add_figures(merchant_id, change_id, {k: figures[k] for k in part},
                                     usage if index == 0 else {}, expires_at)
    return counted


def _invoice_change(old: dict | None, new: dict | None) -> domain.Figures:
    before, after = _invoice_facts(old), _invoice_facts(new)
    latest = after or before
    moments = [t for t in (latest.finalized_at, latest.paid_at, _text(new or old, "voided_at"),
                           _text(new or old, "marked_uncollectible_at"), _text(new or old, "created_at")) if t]
    month = domain.month_of(max(moments), latest.timezone) if moments else "0000-00"
    return domain.delta(domain.invoice_contribution(before), domain.invoice_contribution(after), month)


def _invoice_facts(image: dict | None) -> domain.InvoiceFacts | None:
    if not image:
        return None
    from chalicelib.store.invoices import InvoiceRecord

    record = InvoiceRecord.from_raw_data(image)
    return domain.InvoiceFacts(
        status=record.status, currency=record.currency, timezone=record.party("seller").get("timezone"),
        finalized_at=record.finalized_at, paid_at=record.paid_at, total=record.total,
        amount_paid=record.amount_paid, amount_due=record.amount_due, lines=tuple(record.line_items()),
    )


def _subscription_change(merchant_id: str, old: dict | None, new: dict | None) -> domain.Figures:
    before, after = _subscription_facts(merchant_id, old), _subscription_facts(merchant_id, new)
    latest = new or old
    month = domain.month_of(_text(latest, "updated_at") or _text(latest, "created_at"), _text(latest, "timezone"))
    return domain.delta(domain.subscription_contribution(before), domain.subscription_contribution(after), month)


def _subscription_facts(merchant_id: str, image: dict | None) -> domain.SubscriptionFacts | None:
    if not image:
        return None
    from chalicelib.store.subscriptions import SubscriptionRecord

    record = SubscriptionRecord.from_raw_data(image)
    facts = domain.SubscriptionFacts(
        status=record.status, paused=bool(record.paused), currency=record.currency, timezone=record.timezone,
        created_at=record.created_at, canceled_at=record.canceled_at, recurring_per_month=ZERO,
    )
    if domain.is_live(facts):
        facts = domain.SubscriptionFacts(**{**facts.__dict__, "recurring_per_month": recurring_per_month(record)})
    return facts


def recurring_per_month(record) -> Decimal:
    """The subscription's fees and options for its current period (the offer
    version in force at its start, with its overrides), normalized to a month."""
    from chalicelib.domain.periods import Period
    from chalicelib.domain.rating import rate_fees
    from chalicelib.services import offers

    start = domain.parse_instant(record.current_period_start)
    end = domain.parse_instant(record.current_period_end)
    _, terms = offers.terms_for_billing(record.merchant_id, record.offer_id, start, record.currency,
                                        int(record.offer_version))
    lines = rate_fees(terms, tuple(record.options or ()), record.price_overrides or None, Period(start, end))
    fee = sum((line.amount for line in lines), ZERO)
    return domain.monthly_amount(fee, record.billing_interval, int(record.interval_count))


def _usage_event(merchant_id: str, image: dict, batch: _Batch):
    subscription_id, meter = _text(image, "subscription_id"), _text(image, "meter")
    quantity = Decimal(_text(image, "quantity"))
    day = domain.day_of(_text(image, "timestamp"), batch.timezone(merchant_id))
    return _usage_figures(merchant_id, {(meter, day, subscription_id): quantity}, batch)


def _device_change(merchant_id: str, old: dict | None, new: dict | None, batch: _Batch):
    """A device's usage grows on its item while its period is open, then
    moves (in one transaction) to a record of its own when a reading opens
    the next period. Counted: the growth of the open usage, and, when the
    period moved, what the moved record holds beyond the old open usage."""
    from chalicelib.store import devices as device_store

    tz = batch.timezone(merchant_id)
    before = device_store.decode_open(_text(old, "open_usage")) if old else None
    after = device_store.decode_open(_text(new, "open_usage")) if new else None
    quantities: dict[tuple[str, str, str], Decimal] = {}

    def add(subscription_id: str, meter: str, at: datetime | None, quantity: Decimal) -> None:
        if quantity:
            day = domain.day_of(at or clock().now(), tz)
            slot = (meter, day, subscription_id)
            quantities[slot] = quantities.get(slot, ZERO) + quantity

    same_period = (before is not None and after is not None and before.subscription_id == after.subscription_id
                   and before.period_start == after.period_start)
    if after is not None:
        for meter, tally in after.meters.items():
            earlier = before.meters.get(meter) if same_period else None
            add(after.subscription_id, meter, tally.last_at, tally.total - (earlier.total if earlier else ZERO))
    if before is not None and not same_period:
        device_id = _text(old, "device_id")
        moved = _closed_usage(merchant_id, before.subscription_id, before.period_start, device_id,
                              int(old["version"]["N"]))
        for meter, tally in moved.items():
            earlier = before.meters.get(meter)
            add(before.subscription_id, meter, tally.last_at, tally.total - (earlier.total if earlier else ZERO))
    return _usage_figures(merchant_id, quantities, batch)


def _closed_usage(merchant_id: str, subscription_id: str, period_start: datetime, device_id: str, version: int):
    """The usage a device moved to its record when it left a period (store/usage.py)."""
    from chalicelib.store import usage as usage_store

    return usage_store.closed_device_usage(merchant_id, subscription_id, period_start, device_id, version)


def _usage_figures(merchant_id: str, quantities: dict[tuple[str, str, str], Decimal], batch: _Batch):
    """The month's usage per meter (in the report of the subscription's
    currency) and the daily usage, from (meter, day, subscription) -> quantity."""
    figures: domain.Figures = {}
    for (meter, day, subscription_id), quantity in quantities.items():
        currency = batch.currency(merchant_id, subscription_id)
        if currency is None:
            continue  # no such subscription: nothing to report it in
        for key, value in domain.usage_contribution(currency, day[:7], meter, quantity).items():
            figures[key] = figures.get(key, ZERO) + value
    return {k: v for k, v in figures.items() if v}, {k: v for k, v in quantities.items() if v}


def _text(image: dict | None, name: str) -> str | None:
    if not image:
        return None
    value = image.get(name)
    return value.get("S") if isinstance(value, dict) else None


# ---------------------------------------------------------------------------
# GET /reports/summary


def summary(merchant_id: str, month: str | None) -> dict:
    """The month's figures per currency, from the aggregates: one Query."""
    month = domain.parse_month(month)
    report = domain.summarize(month, store.aggregates_from(merchant_id, domain.add_months(month, -2)))
    return with_converted_total(merchant_id, report)


def with_converted_total(merchant_id: str, report: dict) -> dict:
    """A report with figures in another currency than the merchant's also
    carries their `total` in it, at the merchant's `fx_rates` (domain/fx.py)."""
    from chalicelib.domain.fx import converted_total
    from chalicelib.store import merchants as merchant_store

    merchant = merchant_store.get_merchant(merchant_id)
    if set(report["currencies"]) - {merchant.default_currency}:
        report["total"] = converted_total(report["currencies"], merchant.default_currency, merchant.fx_rate_table())
    return report


# ---------------------------------------------------------------------------
# GET /reports/usage


def usage_statistics(merchant_id: str, meter: str | None, first: str | None, last: str | None,
                     group_by: str | None) -> dict:
    if not meter or len(meter) > 64:
        raise InvalidRequest("meter: the meter's code is required", param="meter")
    group_by = group_by or "day"
    if group_by not in ("day", "month"):
        raise InvalidRequest("group_by: day or month", param="group_by")
    first_day = domain.parse_day(first, "from")
    last_day = _last_day(last)
    if last_day < first_day:
        raise InvalidRequest("to: on or after from", param="to")
    span = datetime.strptime(last_day, "%Y-%m-%d") - datetime.strptime(first_day, "%Y-%m-%d")
    if span.days >= MAX_USAGE_DAYS:
        raise InvalidRequest(f"to: at most {MAX_USAGE_DAYS} days after from", param="to")
    report = domain.usage_report(meter, store.daily_usage(merchant_id, meter, first_day, last_day), group_by)
    return {**report, "from": first_day, "to": last_day}


# The customer page's chart reads at most this many (meter, day,
# subscription) slots: three BatchGetItem requests.
MAX_CHART_SLOTS = 300


def recent_daily_usage(merchant_id: str, subscription_ids: list[str], meters: list[str], *, days: int = 30,
                       timezone_name: str | None = None) -> dict:
    """The usage of these subscriptions per meter and day over the last
    `days` days (the merchant's days, today included), summed over the
    subscriptions: {"days": [YYYY-MM-DD...], "meters": {meter: [Decimal per day]}}.
    Read by key from the daily usage figures; subscriptions past what
    MAX_CHART_SLOTS allows are left out."""
    today = datetime.strptime(domain.day_of(clock().now(), timezone_name), "%Y-%m-%d")
    shown_days = [(today - timedelta(days=back)).strftime("%Y-%m-%d") for back in range(days - 1, -1, -1)]
    meters = list(dict.fromkeys(meters))
    per_subscription = max(1, len(meters) * len(shown_days))
    subscription_ids = list(dict.fromkeys(subscription_ids))[:max(1, MAX_CHART_SLOTS // per_subscription)]
    found = store.daily_usage_of(merchant_id, ((m, d, s) for m in meters for d in shown_days for s in subscription_ids))
    totals = {meter: [ZERO] * len(shown_days) for meter in meters}
    position = {d: i for i, d in enumerate(shown_days)}
    for (meter, day, _), quantity in found.items():
        totals[meter][position[day]] += quantity
    return {"days": shown_days, "meters": totals}


def _last_day(text: str | None) -> str:
    """`to`: a day included, or a month (its last day)."""
    if isinstance(text, str) and domain.MONTH.match(text):
        import calendar

        return f"{text}-{calendar.monthrange(int(text[:4]), int(text[5:7]))[1]:02d}"
    return domain.parse_day(text, "to")


# ---------------------------------------------------------------------------
# GET /exports/invoices.csv


def invoice_export(merchant_id: str, month: str | None, *, compress: bool) -> bytes:
    """The month's invoices (by invoice date, merchant's time zone) as CSV,
    one row per line, oldest first; gzip-compressed when `compress`.

    Rows are made page by page (EXPORT_PAGE invoices per Query) and written
    straight into the one output buffer: the file exists once in memory,
    compressed when the client accepts it (100,000 lines are ~15 MB of CSV,
    ~1.5 MB gzipped: a Lambda answers 6 MB at most)."""
    month = domain.parse_month(month)
    account_of_kind = _line_accounts(merchant_id)
    rows = (row for invoice in _invoices_of_month(merchant_id, month)
            for row in domain.export_rows(invoice, account_of_kind))
    return write_export(domain.EXPORT_COLUMNS, rows, compress=compress)




def _line_accounts(merchant_id: str):
    """line kind -> the account the journal credits it to, with the
    merchant's accounts (domain/ledger.py)."""
    from chalicelib.domain import ledger
    from chalicelib.store import merchants

    accounts = ledger.accounts_map(merchants.get_merchant(merchant_id).account_table())
    return lambda kind: accounts[ledger.line_role(kind)]


def _invoices_of_month(merchant_id: str, month: str) -> Iterator[dict]:
    """Issued invoices (open, paid, void, uncollectible) dated in the month,
    oldest first: one ranged Query per status partition of gsi2 (sorted by
    id, whose first part is the invoice's date), merged lazily."""
    from chalicelib.services.invoices import serialize
    from chalicelib.store import merchants

    tz = merchants.get_merchant(merchant_id).timezone or "UTC"
    start, end = domain.month_bounds(month, tz)
    streams = [_status_pages(merchant_id, status, start, end) for status in ("open", "paid", "void", "uncollectible")]
    for record in heapq.merge(*streams, key=lambda r: r.invoice_id):
        invoice = serialize(record)
        invoice["invoice_date"] = record.invoice_date
        buyer = record.party("buyer")
        invoice["customer_name"] = buyer.get("name") or ""
        yield invoice


def _status_pages(merchant_id: str, status: str, start: datetime, end: datetime):
    from chalicelib.store.invoices import InvoiceRecord, status_partition

    low, high = _id_bound(start, 0), _id_bound(end, 0)
    query = InvoiceRecord.by_status.query(
        status_partition(merchant_id, status),
        InvoiceRecord.gsi2sk.between(low, high),
        scan_index_forward=True,
        page_size=EXPORT_PAGE,
    )
    for record in query:
        if record.invoice_id < high:
            yield record


def _id_bound(moment: datetime, fill: int) -> str:
    """The smallest invoice id of an instant (ids are ULIDs of their date)."""
    from ulid import ULID

    millis = int(moment.astimezone(timezone.utc).timestamp() * 1000)
    return f"inv_{str(ULID.from_bytes(millis.to_bytes(6, 'big') + bytes([fill]) * 10)).lower()}"


def history(merchant_id: str, last_month: str | None, months: int = 12) -> list[dict]:
    """The summaries of `months` months ending with `last_month`, oldest
    first, from one Query of the aggregates (the console's dashboard)."""
    last = domain.parse_month(last_month)
    first = domain.add_months(last, -(months - 1))
    aggregates = store.aggregates_from(merchant_id, domain.add_months(first, -2))
    return [domain.summarize(domain.add_months(first, k), aggregates) for k in range(months)]
