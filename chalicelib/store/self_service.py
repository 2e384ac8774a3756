"""The customer's own pages: checkout sessions and portal sessions.

Key layouts (their one home):
- `{merchant}#{cs_…}` / `checkout_session`: a hosted checkout, with the
  SHA-256 of its link's secret, what it sells, the ids it reserved for the
  customer and subscription it makes, and its state. Kept after it ends
  (`GET /checkout-sessions/{id}` answers for it); no TTL.
- `{merchant}#{bps_…}` / `portal_session`: a link to the customer portal,
  with its secret's SHA-256 and the customer it opens; DynamoDB's TTL
  (`expires_at`, Unix seconds) removes it a while after it ends (reads
  check the end themselves).

Completion moves by conditional writes: `claim` gives one request at a
time the right to make the customer and subscription (a lease, so a
request that died is taken over), `complete` moves `open` -> `complete`
once.
"""
from __future__ import annotations

import json
import re

from pynamodb.attributes import BooleanAttribute, ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.domain.errors import NotFound
from chalicelib.store.base import BillingRecord
from chalicelib.store.errors import is_condition_failure

CHECKOUT_SK = "checkout_session"
_ID = re.compile(r"^(cs|bps)_[0-9a-z]{26}$")
PORTAL_SK = "portal_session"


class CheckoutSessionRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    session_id = UnicodeAttribute()
    secret_digest = UnicodeAttribute()
    status = UnicodeAttribute()  # open | complete (expired is read from expires_at)
    offer_id = UnicodeAttribute()
    options = ListAttribute(of=UnicodeAttribute, default=list)
    # The new customer's fields (JSON), or None when the session names an existing customer.
    customer_fields = UnicodeAttribute(null=True)
    customer_id = UnicodeAttribute()  # given, or reserved for the customer the checkout makes
    customer_made = BooleanAttribute(default=False)
    subscription_id = UnicodeAttribute()  # reserved
    subscription_made = BooleanAttribute(default=False)
    currency = UnicodeAttribute()
    locale = UnicodeAttribute(null=True)
    success_url = UnicodeAttribute()
    cancel_url = UnicodeAttribute()
    created_at = UnicodeAttribute()
    expires_at = UnicodeAttribute()  # ISO 8601
    completed_at = UnicodeAttribute(null=True)
    claimed_until = UnicodeAttribute(null=True)  # ISO 8601, fixed width
    last_failure = UnicodeAttribute(null=True)  # the code of the last refused card

    @staticmethod
    def key(merchant_id: str, session_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{session_id}", CHECKOUT_SK

    def new_customer(self) -> dict | None:
        return json.loads(self.customer_fields) if self.customer_fields else None


class PortalSessionRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    portal_session_id = UnicodeAttribute()
    secret_digest = UnicodeAttribute()
    customer_id = UnicodeAttribute()
    return_url = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    # Unix seconds: the link's end, and the table's TTL attribute.
    expires_at = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, portal_session_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{portal_session_id}", PORTAL_SK


# -- checkout sessions ---------------------------------------------------------------


def create_checkout_session(record: CheckoutSessionRecord) -> None:
    record.save(condition=CheckoutSessionRecord.pk.does_not_exist())


def get_checkout_session(merchant_id: str, session_id: str, *, consistent: bool = False) -> CheckoutSessionRecord:
    if not isinstance(session_id, str) or not _ID.match(session_id):
        raise NotFound(f"no checkout session {session_id}")
    try:
        return CheckoutSessionRecord.get(*CheckoutSessionRecord.key(merchant_id, session_id),
                                         consistent_read=consistent)
    except DoesNotExist:
        raise NotFound(f"no checkout session {session_id}") from None


def claim_checkout(record: CheckoutSessionRecord, now_iso: str, until_iso: str) -> bool:
    """The right to make what the session sells, until `until_iso`: only
    while it is open and nobody else holds an unexpired claim."""
    model = CheckoutSessionRecord
    condition = (model.status == "open") & (model.claimed_until.does_not_exist() | (model.claimed_until < now_iso))
    return _conditional(record, [model.claimed_until.set(until_iso)], condition)


def record_checkout_progress(record: CheckoutSessionRecord, **fields) -> None:
    """What the claim holder made so far (customer_made, subscription_made, last_failure)."""
    model = CheckoutSessionRecord
    actions = [getattr(model, name).set(value) if value is not None else getattr(model, name).remove()
               for name, value in fields.items()]
    record.update(actions=actions)


def release_checkout(record: CheckoutSessionRecord) -> None:
    _conditional(record, [CheckoutSessionRecord.claimed_until.remove()], CheckoutSessionRecord.status == "open")


def complete_checkout(record: CheckoutSessionRecord, completed_at: str) -> bool:
    """`open` -> `complete`, once: False when it was complete already."""
    model = CheckoutSessionRecord
    return _conditional(record, [model.status.set("complete"), model.completed_at.set(completed_at),
                                 model.claimed_until.remove(), model.last_failure.remove()],
                        model.status == "open")


def _conditional(record, actions, condition) -> bool:
    try:
        record.update(actions=actions, condition=condition)
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


# -- portal sessions -------------------------------------------------------------------


def create_portal_session(record: PortalSessionRecord) -> None:
    record.save(condition=PortalSessionRecord.pk.does_not_exist())


def get_portal_session(merchant_id: str, portal_session_id: str) -> PortalSessionRecord:
    if not isinstance(portal_session_id, str) or not _ID.match(portal_session_id):
        raise NotFound(f"no portal session {portal_session_id}")
    try:
        return PortalSessionRecord.get(*PortalSessionRecord.key(merchant_id, portal_session_id))
    except DoesNotExist:
        raise NotFound(f"no portal session {portal_session_id}") from None
