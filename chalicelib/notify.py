"""The one gateway for what leaves the backend as a notification: domain
events to Amazon EventBridge, and e-mail through Amazon SES (`send_email`,
used by the alerts' consumer of the notifications queue only).

Events are published after the change they describe is written, and a
failed publish never fails the change: the write is the fact, the event is
news of it. A publish that fails is logged with its whole entry (so it can be
replayed by hand) and counted in the `EventPublishFailed` metric. Delivery is
therefore at most once for now; when merchants need every event, an outbox
record written in the change's own transaction and drained by a stream
handler makes it at least once without touching the callers.
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.config import settings
from chalicelib.observability import logger, metrics

SOURCE = "billing"

def _events():
    from chalicelib import aws

    return aws.client("events")


def publish_event(detail_type: str, detail: dict, merchant_id: str) -> bool:
    """Publish one domain event (`source` billing) on the billing bus.

    `detail_type` names what happened (`subscription.canceled`); `detail`
    is JSON-able and gets `merchant_id` added, so a merchant's rule can
    match its own events. Returns whether EventBridge accepted the event;
    never raises for a delivery problem."""
    entry = {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps({**detail, "merchant_id": merchant_id}, separators=(",", ":"), default=str),
        "EventBusName": settings().event_bus_name,
    }
    try:
        answer = _events().put_events(Entries=[entry])
        failed = answer.get("FailedEntryCount", 0)
        if failed:
            raise RuntimeError(f"EventBridge refused the event: {answer.get('Entries')}")
    except Exception:  # any failure of delivery: the change itself is already written
        logger.exception("domain event not published", extra={"event": _loggable(entry)})
        metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
        return False
    return True


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
