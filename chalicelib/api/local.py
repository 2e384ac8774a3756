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


@endpoint(blueprint, "/_local/clock", methods=("POST",), auth="operator")
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
    # queue messages handled in this process, so the answer says what is done.
    return {"now": isoformat(now), "jobs": jobs.run_jobs_fallen_due(before, now)}


@endpoint(blueprint, "/_local/clock", auth="operator")
def read_clock(call: Call):
    return {"now": isoformat(clock().now())}
