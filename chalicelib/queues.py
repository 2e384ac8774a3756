"""SQS, the one way in: what the billing run, the alerts and the usage
ingestion send to their queues goes through here, as Stripe goes through
chalicelib.payments and EventBridge and SES through chalicelib.notify.

SQS takes ten messages a request and may refuse some of them (a throttled
or failed entry): `send` cuts the batch and sends the refused ones again a
few times, and answers which it could not send, for the caller to decide
(each caller's messages are found again by its next run, or come back).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from chalicelib import aws
from chalicelib.observability import logger

BATCH = 10
ATTEMPTS = 5


@dataclass(frozen=True)
class Message:
    """One message: its body, and string attributes a consumer may filter on."""

    body: str
    attributes: dict[str, str] = field(default_factory=dict)


def send(queue_url: str, messages: Sequence[Message | str]) -> list[int]:
    """Send `messages` (bodies or `Message`s) to the queue; the indexes of
    those SQS did not take after `ATTEMPTS` tries (an unreachable queue:
    every one of its batch). Never raises."""
    unsent: list[int] = []
    for start in range(0, len(messages), BATCH):
        entries = {str(start + i): _entry(str(start + i), m) for i, m in enumerate(messages[start:start + BATCH])}
        for _ in range(ATTEMPTS):
            try:
                answer = aws.client("sqs").send_message_batch(QueueUrl=queue_url, Entries=list(entries.values()))
            except Exception:
                logger.exception("messages not sent to the queue", extra={"queue": queue_url, "count": len(entries)})
                break
            refused = {f["Id"] for f in answer.get("Failed", [])}
            entries = {i: e for i, e in entries.items() if i in refused}
            if not entries:
                break
        unsent += sorted(int(i) for i in entries)
    return unsent


def dead_letter_queue_of(source_arn: str) -> str:
    """The URL of the queue that `source_arn`'s redrive policy sends its
    dead letters to (looked up once per container)."""
    if source_arn not in _dead_letter_urls:
        sqs = aws.client("sqs")
        queue = sqs.get_queue_url(QueueName=source_arn.rsplit(":", 1)[-1])["QueueUrl"]
        policy = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"]
        target = json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"]
        _dead_letter_urls[source_arn] = sqs.get_queue_url(QueueName=target.rsplit(":", 1)[-1])["QueueUrl"]
    return _dead_letter_urls[source_arn]


_dead_letter_urls: dict[str, str] = {}


def _entry(entry_id: str, message: Message | str) -> dict:
    if isinstance(message, str):
        return {"Id": entry_id, "MessageBody": message}
    entry = {"Id": entry_id, "MessageBody": message.body}
    if message.attributes:
        entry["MessageAttributes"] = {name: {"DataType": "String", "StringValue": value}
                                      for name, value in message.attributes.items()}
    return entry
