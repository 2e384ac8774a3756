"""Who makes the changes the code is writing: the actor of the audit trail.

Whoever starts a piece of work says who it acts for, once: `api/http.py`'s
`endpoint()` for a request (`key:<prefix>` for a merchant's API key,
`operator`, `customer` on the payment page, `stripe` for its webhook), the
console for a signed-in member (`user:<email>`), `jobs.py` for a scheduled
job or a queue's worker (`system:<job>`). The store stamps every write of an
audited record with `current_actor()` (store/base.py, store/dynamo.py), and
the audit feed reads the stamp back from the table's stream.

A context variable rather than an argument threaded through every service:
the store is many calls away from the request, and a write that forgot to
pass it would be attributed to nobody.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SYSTEM = "system"
OPERATOR = "operator"
CUSTOMER = "customer"
STRIPE = "stripe"

_actor: ContextVar[str] = ContextVar("actor", default=SYSTEM)


def current_actor() -> str:
    """Who the work in progress acts for (`system` when nobody said)."""
    return _actor.get()


@contextmanager
def acting_as(actor: str) -> Iterator[str]:
    """Attribute what is written inside the block (or the decorated function)
    to `actor`; the previous actor is back on leaving it."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def key_actor(prefix: str) -> str:
    """A merchant's API key, by the prefix the API shows it by (never the key)."""
    return f"key:{prefix}"


def user_actor(email: str) -> str:
    """A member of a merchant's staff, signed in to the console."""
    return f"user:{email}"


def job_actor(name: str) -> str:
    """A scheduled job or a queue's consumer."""
    return f"{SYSTEM}:{name}"
