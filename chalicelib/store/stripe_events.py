"""What the Stripe webhook and the payment page have already done.

- `stripe_event#{event_id}` / `stripe_event`: one record per Stripe event
  received. Stripe delivers an event at least once (and again whenever we
  did not answer 2xx), so the first delivery claims the event with a
  conditional put; a later delivery of a claimed event changes nothing.
  The webhook is platform-level: the event is not known to belong to a
  merchant before it is read, so, like the API-key lookup, this key does
  not start with a merchant id (docs/architecture.md). Expires after
  `EVENT_RETENTION_DAYS` (TTL `expires_at`): Stripe stops redelivering an
  event after three days.
- `{merchant_id}#{setup_intent_id}` / `card_setup`: a SetupIntent whose card
  was made the customer's default and whose open invoices were retried,
  through the page's `/complete` or the `setup_intent.succeeded` webhook,
  whichever came first. The other one then finds it and does nothing.
- `{merchant_id}#{customer_id}` / `card_setup_latest`: the creation time of
  the newest SetupIntent whose card became the customer's default. A
  SetupIntent older than that (its webhook redelivered late, after the
  customer set up another card) never takes the default back.
- `forget_stripe_customer`: the one write of the payments code to the
  customer record outside store/customers.py's own setters: clearing the
  Stripe customer and the card together, on condition, has no setter there.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.clock import isoformat
from chalicelib.store.base import BillingRecord
from chalicelib.store.errors import is_condition_failure

EVENT_RETENTION_DAYS = 30
# A delivery that claimed an event and then died (Lambda timeout) leaves it
# "processing": Stripe's next delivery may take it over after this long.
PROCESSING_LEASE = timedelta(minutes=5)
CARD_SETUP_RETENTION_DAYS = 400


class StripeEventRecord(BillingRecord):
    event_type = UnicodeAttribute()
    state = UnicodeAttribute()  # processing | done
    claimed_at = UnicodeAttribute()
    expires_at = TTLAttribute()

    @staticmethod
    def key(event_id: str) -> tuple[str, str]:
        return f"stripe_event#{event_id}", "stripe_event"


class CardSetupRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    customer_id = UnicodeAttribute()
    setup_intent_id = UnicodeAttribute()
    payment_method_id = UnicodeAttribute()
    # "page" (POST /pay/{token}/complete) or "webhook" (setup_intent.succeeded).
    completed_by = UnicodeAttribute()
    completed_at = UnicodeAttribute()
    # The SetupIntent's creation (epoch seconds): not money, an int is exact.
    setup_intent_created = NumberAttribute()
    expires_at = TTLAttribute()

    @staticmethod
    def key(merchant_id: str, setup_intent_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{setup_intent_id}", "card_setup"


class LatestCardSetupRecord(BillingRecord):
    setup_intent_id = UnicodeAttribute()
    # Epoch seconds of the SetupIntent's creation at Stripe.
    setup_intent_created = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, customer_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{customer_id}", "card_setup_latest"


def claim_newest_card_setup(merchant_id: str, customer_id: str, setup_intent_id: str, created: int) -> bool:
    """True if no newer SetupIntent has made its card the customer's default:
    this one may (and is now the newest). Repeating it for the same
    SetupIntent is True again. Stripe's `created` counts seconds, so two
    setups of the same second tie and the later arrival wins: a customer
    entering a second card is always the later one."""
    record = LatestCardSetupRecord(
        *LatestCardSetupRecord.key(merchant_id, customer_id),
        setup_intent_id=setup_intent_id,
        setup_intent_created=created,
    )
    try:
        record.save(
            condition=LatestCardSetupRecord.pk.does_not_exist()
            | (LatestCardSetupRecord.setup_intent_created <= created)
            | (LatestCardSetupRecord.setup_intent_id == setup_intent_id)
        )
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def claim_event(event_id: str, event_type: str, now: datetime) -> bool:
    """True if this delivery is the one to handle the event: nobody claimed
    it, or a claim was left unfinished for longer than the lease."""
    record = StripeEventRecord(
        *StripeEventRecord.key(event_id),
        event_type=event_type,
        state="processing",
        claimed_at=isoformat(now),
        expires_at=now + timedelta(days=EVENT_RETENTION_DAYS),
    )
    stale = isoformat(now - PROCESSING_LEASE)
    try:
        record.save(
            condition=StripeEventRecord.pk.does_not_exist()
            | ((StripeEventRecord.state == "processing") & (StripeEventRecord.claimed_at < stale))
        )
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def finish_event(event_id: str) -> None:
    StripeEventRecord(*StripeEventRecord.key(event_id)).update(actions=[StripeEventRecord.state.set("done")])


def release_event(event_id: str) -> None:
    """Forget a claim whose handling failed, so Stripe's redelivery runs it again."""
    from pynamodb.exceptions import DeleteError

    try:
        StripeEventRecord(*StripeEventRecord.key(event_id)).delete(condition=StripeEventRecord.state == "processing")
    except DeleteError as error:
        if not is_condition_failure(error):
            raise


def card_setup_done(merchant_id: str, setup_intent_id: str) -> CardSetupRecord | None:
    try:
        return CardSetupRecord.get(*CardSetupRecord.key(merchant_id, setup_intent_id), consistent_read=True)
    except DoesNotExist:
        return None


def record_card_setup(
    *, merchant_id: str, customer_id: str, setup_intent_id: str, payment_method_id: str,
    setup_intent_created: int, completed_by: str, now: datetime,
) -> None:
    """Mark the SetupIntent's outcome done; a second marker changes nothing."""
    record = CardSetupRecord(
        *CardSetupRecord.key(merchant_id, setup_intent_id),
        merchant_id=merchant_id,
        customer_id=customer_id,
        setup_intent_id=setup_intent_id,
        payment_method_id=payment_method_id,
        completed_by=completed_by,
        completed_at=isoformat(now),
        setup_intent_created=setup_intent_created,
        expires_at=now + timedelta(days=CARD_SETUP_RETENTION_DAYS),
    )
    try:
        record.save(condition=CardSetupRecord.pk.does_not_exist())
    except PutError as error:
        if not is_condition_failure(error):
            raise


def forget_stripe_customer(merchant_id: str, customer_id: str, stripe_customer_id: str) -> bool:
    """Our customer loses its Stripe customer and default card (`customer.deleted`).

    One conditional update of the customer record: only if it still points
    at that Stripe customer (a newer one, created since, is kept), and the
    card goes with it, its expiry index entry too; the deleted id is kept
    (`deleted_stripe_customer_id`) for the next one's idempotency key. False when there was
    nothing to forget. Only the payments fields are touched, never
    `version` (see store/customers.py)."""
    from pynamodb.exceptions import UpdateError

    from chalicelib.store.customers import CustomerRecord

    record = CustomerRecord(*CustomerRecord.key(merchant_id, customer_id))
    try:
        record.update(
            actions=[
                CustomerRecord.stripe_customer_id.remove(),
                CustomerRecord.deleted_stripe_customer_id.set(stripe_customer_id),
                CustomerRecord.default_card.remove(),
                CustomerRecord.card_expiry.remove(),
            ],
            condition=CustomerRecord.pk.exists() & (CustomerRecord.stripe_customer_id == stripe_customer_id),
        )
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True
