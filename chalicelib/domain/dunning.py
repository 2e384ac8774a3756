"""Dunning: when a failed charge is tried again, and when billing gives up.

API.md: a failed charge is retried after the merchant's
`dunning_retry_days`; when the last retry fails the invoice becomes
`uncollectible` and the subscription `canceled` (reason `payment_failed`).

The days are cumulative offsets from the invoice's FIRST failure (the
merchants API requires them strictly ascending): `[1, 3, 5, 7]` retries one,
three, five and seven days after the first failure, five attempts in all.
Counting from the first failure, not from each retry, keeps the whole
schedule fixed the moment a charge first fails: a retry made earlier by
hand or because the customer entered a new card does not push the next
ones back, and a retry run late does not shift the rest.

Pure: instants in, an instant (or None: give up) out.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta


def next_attempt_at(first_failure_at: datetime, retry_days: Sequence[int], failed_at: datetime) -> datetime | None:
    """The next scheduled retry after a failure at `failed_at`: the first
    `first_failure_at + d days` (d in `retry_days`) strictly after it, or
    None when no scheduled retry is left (that failure was the last)."""
    if failed_at < first_failure_at:
        raise ValueError("a failure cannot come before the first failure")
    for days in sorted(int(d) for d in retry_days):
        moment = first_failure_at + timedelta(days=days)
        if moment > failed_at:
            return moment
    return None


def schedule(first_failure_at: datetime, retry_days: Sequence[int]) -> list[datetime]:
    """Every scheduled retry of an invoice that first failed at `first_failure_at`."""
    return [first_failure_at + timedelta(days=int(d)) for d in sorted(int(d) for d in retry_days)]
