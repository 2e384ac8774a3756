"""Bodies of the scheduled and queue handlers (app.py wires them, one line each).

The scheduled jobs are listed once, in `SCHEDULED_JOBS`: app.py registers
each with EventBridge at its rate, and the local stage's clock
(`POST /_local/clock`) runs the ones that fell due while it moved, so the
two can never disagree about what runs how often.

The billing run fans out: `billing_scheduler` only finds what is due (the
`due` index, shard by shard) and enqueues one message per subscription and
boundary; `billing_worker` bills one subscription per message. Dunning is
the same shape: `dunning_scheduler` finds the invoices whose next payment
attempt is due and enqueues them on the same queue, so every charge goes
through the workers whose concurrency is capped for Stripe's rate limit.

What each job writes is attributed to it (`system:<job>`, chalicelib.actor)
in the audit trail.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from chalicelib.actor import acting_as, job_actor
from chalicelib.clock import clock, isoformat
from chalicelib.observability import logger


@dataclass(frozen=True)
class ScheduledJob:
    """A job EventBridge runs every `minutes`; `run(now, inline)` returns
    what it did. `inline`: do the work in this process instead of enqueueing
    it (the local clock, which must return once the work is done)."""

    name: str
    minutes: int
    run: Callable[[datetime, bool], dict]

    def rate(self):
        from chalice import Rate

        if self.minutes % 60 == 0:
            return Rate(self.minutes // 60, unit=Rate.HOURS)
        return Rate(self.minutes, unit=Rate.MINUTES)


# -- billing ------------------------------------------------------------------


@acting_as(job_actor("billing_scheduler"))
def billing_scheduler(now: datetime | None = None, inline: bool = False) -> dict:
    """Enqueue every subscription whose next boundary is due by `now`."""
    from chalicelib.services import issuing

    from chalicelib.services import price_changes

    now = now or clock().now()
    messages = issuing.due_billing_messages(now)
    # The notices of price changes whose time came: one customer alert each
    # (queued for send_notifications), before the boundaries they announce.
    notices = price_changes.send_due_notices(now)
    result = _dispatch("billing_scheduler", messages, inline)
    return {**result, "price_notices": notices} if notices["due"] else result


@acting_as(job_actor("dunning_scheduler"))
def dunning_scheduler(now: datetime | None = None, inline: bool = False) -> dict:
    """Enqueue every open invoice whose next payment attempt is due by `now`
    (a retry after a failure, or a charge whose worker died mid-way)."""
    from chalicelib.services import collecting

    now = now or clock().now()
    messages = collecting.due_collection_messages(now)
    return _dispatch("dunning_scheduler", messages, inline)


def _dispatch(job: str, messages: list[dict], inline: bool) -> dict:
    if inline:
        return _handle_inline(job, messages)
    sent = send_billing_messages(messages)
    logger.info("billing messages enqueued", extra={"job": job, "count": sent})
    return {"due": len(messages), "enqueued": sent}


def _handle_inline(job: str, messages: list[dict]) -> dict:
    """Each message handled here, alone, as a billing worker would: one that
    fails is reported with its error and put on the billing queue, where the
    local driver retries it as SQS would redeliver it; the others go on."""
    processed, failed = [], []
    for message in messages:
        try:
            processed.append(handle_billing_message(message))
        except Exception as error:  # one message's failure, like a worker's: logged, retried from the queue
            logger.exception("billing message failed; left on the billing queue", extra={"job": job, **message})
            processed.append({**message, "error": type(error).__name__})
            failed.append(message)
    result = {"due": len(messages), "processed": processed}
    if failed:
        result["failed"] = len(failed)
        result["requeued"] = send_billing_messages(failed)
    return result


def send_billing_messages(messages: list[dict]) -> int:
    """Send `messages` to the billing queue, ten per request.

    Each body is canonical JSON of what it asks (e.g. subscription and
    boundary), so a message's content is its identity: the same boundary
    enqueued twice (overlapping runs) is the same message, and the worker
    treats a second delivery as done."""
    from chalicelib import queues
    from chalicelib.config import settings

    if not messages:
        return 0
    unsent = queues.send(settings().billing_queue_url, [message_body(m) for m in messages])
    if unsent:
        # Still due: the next run finds them again.
        logger.warning("billing messages not enqueued", extra={"count": len(unsent)})
    return len(messages) - len(unsent)


def message_body(message: dict) -> str:
    return json.dumps(message, sort_keys=True, separators=(",", ":"))


def handle_billing_message(message: dict) -> dict:
    """One message of the billing queue: bill a subscription's due
    boundaries, or collect an invoice's due payment."""
    from chalicelib.services import collecting, issuing

    kind = message.get("type")
    if kind == "bill_subscription":
        # The boundary lets a redelivered message resume the charge of a
        # worker that died after issuing that boundary's invoice.
        return issuing.bill_subscription(message["merchant_id"], message["subscription_id"],
                                         boundary=message.get("boundary"))
    if kind == "collect_invoice":
        return collecting.collect_due_invoice(message["merchant_id"], message["invoice_id"])
    raise ValueError(f"unknown billing message type {kind!r}")


@acting_as(job_actor("billing_worker"))
def billing_worker(event: dict, context: Any = None) -> dict:
    """The billing queue's consumer: each record alone, failures reported
    per record (ReportBatchItemFailures), so one bad subscription never
    sends its neighbours back to the queue."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    def record_handler(record) -> dict:
        return handle_billing_message(json.loads(record.body))

    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


# -- usage ingestion -----------------------------------------------------------


@acting_as(job_actor("ingest_usage"))
def ingest_usage(event: dict, context: Any = None) -> dict:
    """The usage queue's consumer: device counters from the IoT rule (or the
    local MQTT bridge), a batch at a time.

    The batch is ingested as a whole (services/ingest.py: one read of all
    its devices, one conditional write per device); then Powertools' batch
    processor reports, per record, what must come back: the messages of a
    device whose write failed. A message that will never be ingested (it
    does not parse, its device is not attached) is parked in the usage
    dead-letter queue with its reason and reported done; if parking it
    fails, it comes back like any failure. Nothing is silently dropped."""
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.observability import metrics
    from chalicelib.services import ingest

    records = event.get("Records", [])
    report = ingest.ingest([(r["messageId"], r["body"]) for r in records], clock().now())
    failed = set(report.failed)
    failed |= park_dead_letters(records, report.dead_letters)
    for outcome, count in sorted(report.outcomes.items()):
        metrics.add_metric(name=f"Readings_{outcome}", unit=MetricUnit.Count, value=count)
    if report.dead_letters:
        metrics.add_metric(name="Readings_dead_lettered", unit=MetricUnit.Count, value=len(report.dead_letters))

    def record_handler(record) -> None:
        if record.message_id in failed:
            raise RuntimeError("not ingested this time; SQS delivers it again")

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


def park_dead_letters(records: list[dict], dead_letters: list[tuple[str, str, str]]) -> set[str]:
    """Send each dead letter to the usage dead-letter queue, wrapped with its
    reason (`{"reason", "reason_code", "original", "message_id",
    "parked_at"}`, and `reason_code` as a message attribute for filtering).
    Returns the ids of those that could not be parked."""
    if not dead_letters:
        return set()
    from chalicelib import queues

    by_id = {r["messageId"]: r for r in records}
    parked_at = isoformat(clock().now())
    by_queue: dict[str, list[tuple[str, queues.Message]]] = {}
    unparked: set[str] = set()
    for message_id, code, reason in dead_letters:
        record = by_id[message_id]
        body = json.dumps(
            {"reason": reason, "reason_code": code, "original": record["body"], "message_id": message_id,
             "parked_at": parked_at},
            separators=(",", ":"),
        )
        try:
            url = usage_dead_letter_queue_url(record.get("eventSourceARN", ""))
        except Exception:
            logger.exception("the usage dead-letter queue is unknown; the messages come back")
            unparked.add(message_id)
            continue
        by_queue.setdefault(url, []).append((message_id, queues.Message(body, {"reason_code": code})))
    logger.warning(
        "usage messages parked in the dead-letter queue",
        extra={"count": len(dead_letters), "reasons": sorted({code for _, code, _ in dead_letters})},
    )
    for url, parked in by_queue.items():
        unsent = queues.send(url, [message for _, message in parked])
        unparked |= {parked[i][0] for i in unsent}
    return unparked


def usage_dead_letter_queue_url(source_arn: str = "") -> str:
    """The usage dead-letter queue: from the settings, else the target of the
    source queue's redrive policy."""
    from chalicelib import queues
    from chalicelib.config import settings

    return settings().usage_dead_letter_queue_url or queues.dead_letter_queue_of(source_arn)


# -- alerts ----------------------------------------------------------------------


@acting_as(job_actor("card_expiry_scan"))
def card_expiry_scan(now: datetime | None = None, inline: bool = False) -> dict:
    """The daily alerts job: cards expiring this month or next (their
    customers' e-mails and the merchants' digests), and every alert e-mail
    overdue queued again (services/alerts.py)."""
    from chalicelib.services import alerts

    return alerts.scan_expiring_cards(now or clock().now(), inline)


@acting_as(job_actor("send_notifications"))
def send_notifications(event: dict, context: Any = None) -> dict:
    """The notifications queue's consumer: one alert or digest per record,
    each e-mailed through SES; a record whose e-mail was not sent (the
    reason is written on the alert) fails alone and comes back."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.services import alerts

    def record_handler(record) -> dict:
        return alerts.deliver(json.loads(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


@acting_as(job_actor("mail_feedback"))
def mail_feedback(event: dict, context: Any = None) -> dict:
    """The mail feedback queue's consumer: what SES reported about alert
    e-mails after accepting them (bounces, complaints, rejections), one
    report per record, through SNS (raw or in SNS's envelope). A report
    that arrives before its sending is recorded fails alone and comes back."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.services import alerts

    def record_handler(record) -> dict:
        body = json.loads(record.body)
        if body.get("Type") == "Notification" and "Message" in body:  # SNS's envelope (raw delivery off)
            body = json.loads(body["Message"])
        return alerts.mail_feedback(body)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


@acting_as(job_actor("einvoice_drop"))
def einvoice_drop(event: dict, context: Any = None) -> dict:
    """The e-invoice queue's consumer: each record is a domain event of the
    bus (`invoice.finalized`, `credit_note.created`, through EInvoiceRule);
    its document goes to the drop bucket as Factur-X and UBL
    (services/einvoices.drop). A document whose seller or buyer lacks what
    EN 16931 needs is skipped, logged: it was issued so, and stays so. Any
    other failure fails the record alone; it comes back, then waits in the
    dead-letter queue."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.services import einvoices

    def record_handler(record) -> dict | None:
        return einvoices.drop_for_event(json.loads(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


# -- merchant webhooks -------------------------------------------------------------


@acting_as(job_actor("webhook_dispatch"))
def webhook_dispatch(event: dict, context: Any = None) -> dict:
    """The webhook queue's consumer: each record is a domain event of the bus
    (WebhookRule: every `source` billing event), delivered to the merchant's
    endpoints that listen to it, or an attempt the retry job queued
    (services/webhooks.py). A receiver's failure is the delivery's, retried
    on its schedule; only a failure of ours fails the record."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.services import webhooks

    def record_handler(record) -> dict | None:
        return webhooks.handle_message(json.loads(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


@acting_as(job_actor("webhook_scheduler"))
def webhook_scheduler(now: datetime | None = None, inline: bool = False) -> dict:
    """Every 5 minutes: the webhook deliveries owed an attempt (a retry whose
    time came, or one whose sender died) queued for webhook_dispatch."""
    from chalicelib.services import webhooks

    return webhooks.run_due_attempts(now or clock().now(), inline)


@acting_as(job_actor("commission_feed"))
def commission_feed(event: dict, context: Any = None) -> dict:
    """The commission queue's consumer: each record is a domain event of the
    bus (`invoice.paid`, `credit_note.created`, `credit_note.refunded`,
    through CommissionRule), whose invoice's accruals and reversals are
    booked once each (services/commissions.accrue_for_event). A failure
    fails the record alone; it comes back, then waits in the dead-letter queue."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.services import commissions

    def record_handler(record) -> dict | None:
        return commissions.accrue_for_event(json.loads(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


# -- the registry -----------------------------------------------------------------

SCHEDULED_JOBS: tuple[ScheduledJob, ...] = (
    ScheduledJob("billing_scheduler", 15, billing_scheduler),
    ScheduledJob("dunning_scheduler", 60, dunning_scheduler),
    ScheduledJob("card_expiry_scan", 24 * 60, card_expiry_scan),
    ScheduledJob("webhook_scheduler", 5, webhook_scheduler),
)


def scheduled_job(name: str) -> ScheduledJob:
    for job in SCHEDULED_JOBS:
        if job.name == name:
            return job
    raise KeyError(name)


def run_scheduled(name: str) -> dict:
    """What app.py's scheduled handler runs."""
    return scheduled_job(name).run(clock().now(), False)


def run_jobs_fallen_due(before: datetime, now: datetime, inline: bool = True) -> list[dict]:
    """The local clock moved from `before` to `now`: run, in this process,
    every scheduled job one of whose ticks (multiples of its rate since the
    epoch, as EventBridge's rate rules fire) fell in (before, now], once
    each (the jobs catch up on everything due by `now`), and say what each
    did. `inline=False`: each job enqueues its work as in AWS, for the
    queues' consumers."""
    ran = []
    for job in SCHEDULED_JOBS:
        period = job.minutes * 60
        if int(now.timestamp() // period) > int(before.timestamp() // period):
            ran.append({"name": job.name, "at": isoformat(now), "result": job.run(now, inline)})
    return ran


# -- reports ---------------------------------------------------------------------


# The event source of report_feed and change_feed as chalice sees it: names
# the template's table (logical id); the packager replaces it with that
# table's StreamArn, as it replaces a queue's name with the queue's ARN.
BILLING_TABLE_STREAM = "arn:aws:dynamodb:::table/BillingTable/stream/packaged"


@acting_as(job_actor("report_feed"))
def report_feed(event: dict, context: Any = None) -> dict:
    """The billing table stream's consumer: the monthly report aggregates
    (services/reports.py says why a stream). Failures are reported from the
    first failed record on (ReportBatchItemFailures with a stream): the
    records before it are counted, it and those after it come back."""
    from chalicelib.services import reports

    failed = reports.feed_reports(event.get("Records", []))
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failed]}


# -- audit trail and domain events ---------------------------------------------------


@acting_as(job_actor("change_feed"))
def change_feed(event: dict, context: Any = None) -> dict:
    """The billing table stream's second consumer: for each change, its audit
    entry (services/audit.py) and then its domain events
    (services/domain_events.py). Both are idempotent per stream record (an
    entry put only if absent; events with ids derived from the record), so
    a record handed again redoes nothing twice. Failures are reported from
    the first failed record on, as report_feed does."""
    from chalicelib.services import audit, domain_events

    records = event.get("Records", [])
    failed = audit.feed_audit(records)
    if failed:
        records = records[:[r["dynamodb"]["SequenceNumber"] for r in records].index(failed[0])]
    failed_events = domain_events.feed_events(records)
    first = failed_events or failed
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in first[:1]]}
