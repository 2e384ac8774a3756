"""The one gateway for what leaves the backend as a notification: domain
events to Amazon EventBridge, and e-mail through Amazon SES (`send_email`,
used by the alerts' consumer of the notifications queue only).

Domain events are derived from committed writes (services/domain_events.py
reads them from the billing table's stream) and put here with the stable
id they carry in `detail.event_id`: a put that fails raises, and the stream
hands the record again, so every event is delivered at least once.
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.config import settings
from chalicelib.observability import logger, metrics

SOURCE = "billing"
# PutEvents takes at most 10 entries a request.
MAX_ENTRIES_PER_PUT = 10

def _events():
    from chalicelib import aws

    return aws.client("events")


def put_domain_events(events) -> None:
    """Put domain events (services/domain_events.py `DomainEvent`) on the
    billing bus, `source` billing, `detail-type` what happened
    (`invoice.paid`), `detail` the entity with `merchant_id` and
    `event_id` added (a merchant's rule matches its own events; consumers
    keep one effect per id). Raises unless EventBridge accepted them all:
    the caller's stream record is then handed again, with the same ids."""
    entries = [{
        "Source": SOURCE,
        "DetailType": event.detail_type,
        "Detail": json.dumps({**event.detail, "merchant_id": event.merchant_id, "event_id": event.event_id},
                             separators=(",", ":"), default=str),
        "Time": event.at,
        "EventBusName": settings().event_bus_name,
    } for event in events]
    for start in range(0, len(entries), MAX_ENTRIES_PER_PUT):
        batch = entries[start:start + MAX_ENTRIES_PER_PUT]
        answer = _events().put_events(Entries=batch)
        if answer.get("FailedEntryCount", 0):
            logger.warning("EventBridge refused domain events", extra={
                "events": [_loggable(entry) for entry in batch], "answers": answer.get("Entries")})
            raise EventsNotPublished(f"EventBridge refused {answer['FailedEntryCount']} event(s)")


class EventsNotPublished(Exception):
    """EventBridge did not accept every event of a put."""


def _loggable(entry: dict[str, Any]) -> dict[str, Any]:
    return {"detail_type": entry["DetailType"], "bus": entry["EventBusName"], "detail": entry["Detail"]}


# -- e-mail (SES) ---------------------------------------------------------------

class MailNotSent(Exception):
    """SES did not accept a message. `refused`: SES said no to this message
    or this sender (rejected, sender not verified, sending paused): it takes
    an operator to fix, but is still retried; otherwise SES was unreachable
    or throttling. Either way the caller records it and tries again."""

    def __init__(self, message: str, *, code: str, refused: bool):
        super().__init__(message)
        self.code = code
        self.refused = refused


_REFUSALS = {"MessageRejected", "MailFromDomainNotVerifiedException", "ConfigurationSetDoesNotExistException",
             "ConfigurationSetSendingPausedException", "AccountSendingPausedException", "InvalidParameterValue"}


def _ses():
    from chalicelib import aws

    return aws.client("ses")


def send_email(to: list[str], subject: str, text: str, html: str, *, sent_at, tags: dict[str, str] | None = None) -> str:
    """Send one e-mail (plain text and HTML alternatives) from the alert
    sender to `to`; returns SES's message id, or raises `MailNotSent`.

    A raw MIME message, so both parts travel as written (and the local
    stage's outbox can show both); `sent_at` is its `Date` (the clock's now).
    It goes through the configuration set of the settings, whose event
    destination reports bounces, complaints and rejections after SES
    accepted the message; `tags` (SES message tags: letters, digits, `_`
    and `-`) come back in those reports and say what the e-mail was."""
    from email.message import EmailMessage
    from email.utils import format_datetime

    sender = settings().alert_sender
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(sent_at)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    request = {"Source": sender, "Destinations": list(to), "RawMessage": {"Data": message.as_bytes()}}
    if settings().ses_configuration_set:
        request["ConfigurationSetName"] = settings().ses_configuration_set
    if tags:
        request["Tags"] = [{"Name": name, "Value": value} for name, value in sorted(tags.items())]
    try:
        answer = _ses().send_raw_email(**request)
    except Exception as error:
        code = getattr(error, "response", {}).get("Error", {}).get("Code") or type(error).__name__
        refused = code in _REFUSALS
        logger.warning("e-mail not sent", extra={"code": code, "refused": refused, "recipients": len(to)})
        metrics.add_metric(name="AlertMailNotSent", unit="Count", value=1)
        raise MailNotSent(str(error), code=code, refused=refused) from error
    return answer["MessageId"]
