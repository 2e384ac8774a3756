"""Routes of the local stage only (registered when STAGE=local, never on a
deployed stage), with the operator key: move the clock, read the outbox."""
from __future__ import annotations

from datetime import datetime

from chalice import Blueprint
from pydantic import BaseModel

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint
from chalicelib.clock import clock, isoformat

blueprint = Blueprint(__name__)


class ClockMove(BaseModel):
    model_config = STRICT
    now: str
    # False: each job that fell due does what its EventBridge rule makes it
    # do in AWS (enqueue its work), and the driver's workers do the work.
    inline: bool = True


@endpoint(blueprint, "/_local/clock", methods=("POST",), auth="operator", response="ClockMoved")
def move_clock(call: Call):
    from chalicelib.domain.errors import InvalidRequest

    body = call.body(ClockMove)
    try:
        target = datetime.fromisoformat(body.now.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("now must be an ISO 8601 time", param="now") from None
    if target.tzinfo is None:
        raise InvalidRequest("now must carry a time zone (Z)", param="now")
    from chalicelib import jobs

    before = clock().now()
    now = clock().move_to(target)
    # Every scheduled job that fell due while the clock moved runs here, its
    # queue messages handled in this process, so the answer says what is done
    # (unless `inline` is false: then it says what was enqueued).
    return {"now": isoformat(now), "jobs": jobs.run_jobs_fallen_due(before, now, inline=body.inline)}


@endpoint(blueprint, "/_local/clock", auth="operator", response="Clock")
def read_clock(call: Call):
    return {"now": isoformat(clock().now())}


@endpoint(blueprint, "/_local/outbox", auth="operator")
def outbox(call: Call):
    """The e-mails SES (moto) accepted, newest last: `{"data": [{"to",
    "subject", "text", "html", "sent_at"}]}`."""
    return {"data": [_mail(message) for message in _sent_messages()]}


def _sent_messages() -> list[dict]:
    """moto's record of what SES accepted, in the order it accepted it: from
    moto's server (`/moto-api/data.json`) on the local stage, from moto's
    models when it runs in this process (tests)."""
    import os

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{endpoint.rstrip('/')}/moto-api/data.json", timeout=10) as answer:
            data = json.load(answer)
    else:
        from moto.core.model_instances import model_data

        data = {service: {name: [vars(i) for i in model.instances_tracked] for name, model in models.items()}
                for service, models in model_data.items()}
    return list(data.get("ses", {}).get("RawMessage", []))


def _mail(message: dict) -> dict:
    from email import policy
    from email.parser import BytesParser
    from email.utils import parsedate_to_datetime

    parsed = BytesParser(policy=policy.default).parsebytes(message["raw_data"].encode())
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    date = parsed["Date"]
    return {
        "to": list(message.get("destinations") or []),
        # As a mail client shows it: a long subject is folded on the wire.
        "subject": " ".join(str(parsed["Subject"] or "").split()),
        "text": text.get_content() if text is not None else "",
        "html": html.get_content() if html is not None else "",
        "sent_at": isoformat(parsedate_to_datetime(date)) if date else None,
    }
