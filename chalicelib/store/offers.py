"""Offers of the catalog and their versions, in the billing table.

One offer is one partition, `pk = {merchant_id}#{offer_id}`:
- `sk = offer`: the offer's own fields (code, name, currency, interval,
  ladder, rank, entitlements: fixed at creation), `archived`, the number of
  its latest version and the start of each version (`version_starts`, so a
  listing shows the schedule without reading every version);
- `sk = version#000001`, `version#000002` ...: each version's
  `effective_from` and terms (components, options) as the JSON the merchant
  sent. Version 1 is written with the offer. Versions are never changed.
Both kinds share a discriminator attribute (`kind`), so one Query reads an
offer with all its versions.

Beside them:
- `{merchant_id}#offer_code#{code}` / `offer_code`: the offer holding a code,
  written in the offer's creating transaction, so a code is unique per
  merchant whatever runs concurrently;
- `{merchant_id}#ladder#{ladder}` / `ladder`: the ladder's members and a
  revision. Whoever adds a member or a version to a ladder read the
  revision before checking the ladder rule and bumps it in the same
  transaction: two changes checked against the same state cannot both be
  written, so the rule holds under concurrency. It is read consistently
  (a GSI would be eventually consistent: a member created a moment ago
  could be missed).

Listing: offer records carry `gsi1pk = {merchant_id}#offers`,
`gsi1sk = {offer_id}` (ids are time-sortable).
"""
from __future__ import annotations

import uuid

from pynamodb.attributes import (
    BooleanAttribute,
    DiscriminatorAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, page, transaction
from chalicelib.store.errors import is_condition_failure

OFFER_SK = "offer"
PRICE_NOTICE_SK = "price_notice"


def offer_pk(merchant_id: str, offer_id: str) -> str:
    return f"{merchant_id}#{offer_id}"


def version_sk(number: int) -> str:
    return f"version#{number:06d}"


def listing_pk(merchant_id: str) -> str:
    return f"{merchant_id}#offers"


class OffersOfMerchant(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class OfferPart(AuditedRecord):
    """A record of an offer's partition: the offer itself or one of its versions."""

    kind = DiscriminatorAttribute()


class OfferRecord(OfferPart, discriminator="offer"):
    merchant_id = UnicodeAttribute()
    offer_id = UnicodeAttribute()
    code = UnicodeAttribute()
    name = UnicodeAttribute()
    currency = UnicodeAttribute()
    billing_interval = UnicodeAttribute()
    # Counts, never money: NumberAttribute is exact for these small integers.
    interval_count = NumberAttribute()
    trial_days = NumberAttribute()
    commitment_months = NumberAttribute()
    ladder = UnicodeAttribute(null=True)
    tier_rank = NumberAttribute(null=True)
    entitlements = ListAttribute(of=UnicodeAttribute, default=list)
    portal_upgrades = ListAttribute(of=UnicodeAttribute, default=list)
    archived = BooleanAttribute(default=False)
    archived_at = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    latest_version = NumberAttribute()
    # effective_from of version n at index n-1 (ISO 8601, Z).
    version_starts = ListAttribute(of=UnicodeAttribute, default=list)
    # Numbers of the versions whose price change was canceled before it took effect.
    canceled_versions = ListAttribute(of=NumberAttribute, default=list)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    by_merchant = OffersOfMerchant()

    @staticmethod
    def key(merchant_id: str, offer_id: str) -> tuple[str, str]:
        return offer_pk(merchant_id, offer_id), OFFER_SK

    def shown_version(self) -> int:
        """The latest version that is not a canceled price change."""
        canceled = {int(n) for n in self.canceled_versions or []}
        return max(n for n in range(1, int(self.latest_version) + 1) if n not in canceled)


class OfferVersionRecord(OfferPart, discriminator="offer_version"):
    version = NumberAttribute()
    effective_from = UnicodeAttribute()
    # {"components": [...], "options": [...]} as the merchant sent them
    # (amounts as decimal strings, an open tier's `up_to: null` kept).
    terms = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # A version scheduled as a price change (POST /offers/{id}/price-changes):
    # its id, what existing subscriptions do (`grandfather`: keep their
    # version; `migrate`: move at their first boundary from effective_from),
    # how many days before the customers hear of it, and its cancellation
    # (a canceled version is never in force).
    price_change_id = UnicodeAttribute(null=True)
    existing = UnicodeAttribute(null=True)
    notice_days = NumberAttribute(null=True)
    canceled_at = UnicodeAttribute(null=True)

    @staticmethod
    def key(merchant_id: str, offer_id: str, number: int) -> tuple[str, str]:
        return offer_pk(merchant_id, offer_id), version_sk(number)


class PriceNoticeRecord(BillingRecord):
    """The customers' notice of a migrating price change, in the `due` index
    (sk `price_notice`) at the time it is to be sent; it leaves the index
    once every e-mail is recorded (each one an alert, once per subscription)."""

    merchant_id = UnicodeAttribute()
    offer_id = UnicodeAttribute()
    price_change_id = UnicodeAttribute()
    version = NumberAttribute()
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    sent_at = UnicodeAttribute(null=True)

    @staticmethod
    def key(merchant_id: str, price_change_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{price_change_id}", PRICE_NOTICE_SK


class OfferCodeRecord(BillingRecord):
    """Which offer holds a code: the uniqueness of codes per merchant."""

    offer_id = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, code: str) -> tuple[str, str]:
        return f"{merchant_id}#offer_code#{code}", "offer_code"


class LadderRecord(BillingRecord):
    """The offers of one ladder (archived ones included) and a revision bumped
    by every change that was checked against the ladder rule."""

    members = ListAttribute(of=UnicodeAttribute, default=list)
    revision = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, ladder: str) -> tuple[str, str]:
        return f"{merchant_id}#ladder#{ladder}", "ladder"


# ---------------------------------------------------------------------------
# Reads


def load_offer(merchant_id: str, offer_id: str) -> tuple[OfferRecord, list[OfferVersionRecord]]:
    """The offer and all its versions (oldest first) in one consistent Query."""
    offer = None
    versions = []
    for record in OfferPart.query(offer_pk(merchant_id, offer_id), consistent_read=True):
        if isinstance(record, OfferRecord):
            offer = record
        else:
            versions.append(record)
    if offer is None:
        raise NotFound(f"no offer {offer_id}")
    versions.sort(key=lambda v: v.version)
    return offer, versions


def latest_versions(offers: list[OfferRecord]) -> dict[str, OfferVersionRecord]:
    """offer_id -> latest version record, in one BatchGet for a page of offers."""
    if not offers:
        return {}
    keys = [OfferVersionRecord.key(o.merchant_id, o.offer_id, o.shown_version()) for o in offers]
    by_pk = {o.pk: o.offer_id for o in offers}
    return {by_pk[record.pk]: record for record in OfferVersionRecord.batch_get(keys, consistent_read=True)}


def list_offers(merchant_id: str, limit: int, cursor: str | None) -> tuple[list[OfferRecord], str | None]:
    """A page of the merchant's offers, newest first."""
    start = decode_cursor(cursor, merchant_id)
    if start is not None and not _listing_key(start, merchant_id):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = OfferRecord.by_merchant.query(
        listing_pk(merchant_id), limit=limit + 1, last_evaluated_key=start, scan_index_forward=False
    )
    return page(query, limit)


def _listing_key(key: dict, merchant_id: str) -> bool:
    # A key DynamoDB would refuse as ExclusiveStartKey (another index's,
    # another merchant's listing, extra or oversized attributes) must be a
    # 400 here, not a 500 there.
    return (
        set(key) == {"pk", "sk", "gsi1pk", "gsi1sk"}
        and all(set(v) == {"S"} and isinstance(v["S"], str) and 0 < len(v["S"]) <= 1024 for v in key.values())
        and key["gsi1pk"]["S"] == listing_pk(merchant_id)
    )


def code_owner(merchant_id: str, code: str) -> str | None:
    """The offer holding `code`, if any."""
    try:
        return OfferCodeRecord.get(*OfferCodeRecord.key(merchant_id, code), consistent_read=True).offer_id
    except DoesNotExist:
        return None


def get_ladder(merchant_id: str, ladder: str) -> LadderRecord | None:
    try:
        return LadderRecord.get(*LadderRecord.key(merchant_id, ladder), consistent_read=True)
    except DoesNotExist:
        return None


# ---------------------------------------------------------------------------
# Writes


def create_offer(offer: OfferRecord, first: OfferVersionRecord, ladder: LadderRecord | None) -> None:
    """The offer, its version 1, its code and its ladder membership, together or not at all.

    `ladder` is the ladder record as read before the ladder rule was checked
    (None: the offer is on a ladder nobody created yet, or on none).
    Conflict when the code was taken or the ladder changed meanwhile."""
    with _writing("the catalog changed while this offer was checked; retry"):
        with transaction(_attempt_token()) as write:
            write.save(offer, condition=OfferRecord.pk.does_not_exist())
            write.save(first, condition=OfferVersionRecord.pk.does_not_exist())
            write.save(
                OfferCodeRecord(*OfferCodeRecord.key(offer.merchant_id, offer.code), offer_id=offer.offer_id),
                condition=OfferCodeRecord.pk.does_not_exist(),
            )
            if offer.ladder is not None:
                _join_ladder(write, offer, ladder)


def _join_ladder(write, offer: OfferRecord, ladder: LadderRecord | None) -> None:
    if ladder is None:
        write.save(
            LadderRecord(*LadderRecord.key(offer.merchant_id, offer.ladder), members=[offer.offer_id], revision=1),
            condition=LadderRecord.pk.does_not_exist(),
        )
    else:
        write.update(
            ladder,
            actions=[
                LadderRecord.members.set(LadderRecord.members.append([offer.offer_id])),
                LadderRecord.revision.set(ladder.revision + 1),
            ],
            condition=LadderRecord.revision == ladder.revision,
        )


def add_version(offer: OfferRecord, version: OfferVersionRecord, ladder: LadderRecord | None,
                notice: PriceNoticeRecord | None = None) -> None:
    """Append `version` (the offer's latest_version + 1) if nobody added one
    since `offer` was read, and, for an offer checked against its ladder,
    if the ladder did not change since `ladder` was read; with `notice`,
    the customers' notice of its price change, due when it is to be sent."""
    with _writing("the offer or its ladder changed while this version was checked; retry"):
        with transaction(_attempt_token()) as write:
            write.save(version, condition=OfferVersionRecord.pk.does_not_exist())
            if notice is not None:
                write.save(notice, condition=PriceNoticeRecord.pk.does_not_exist())
            write.update(
                offer,
                actions=[
                    OfferRecord.latest_version.set(version.version),
                    OfferRecord.version_starts.set(OfferRecord.version_starts.append([version.effective_from])),
                ],
                condition=OfferRecord.latest_version == offer.latest_version,
            )
            if ladder is not None:
                write.update(
                    ladder,
                    actions=[LadderRecord.revision.set(ladder.revision + 1)],
                    condition=LadderRecord.revision == ladder.revision,
                )


def cancel_version(offer: OfferRecord, version: OfferVersionRecord, at: str) -> None:
    """Cancel a version's pending price change: the version is never in
    force, the offer lists it canceled, its notice leaves the due index.
    Conflict when it was canceled meanwhile."""
    with _writing("the price change was canceled meanwhile"):
        with transaction(_attempt_token()) as write:
            write.update(version, actions=[OfferVersionRecord.canceled_at.set(at)],
                         condition=OfferVersionRecord.pk.exists() & OfferVersionRecord.canceled_at.does_not_exist())
            write.update(offer, actions=[OfferRecord.canceled_versions.set(
                (OfferRecord.canceled_versions | []).append([int(version.version)]))])
            if version.existing == "migrate" and version.price_change_id:
                notice = PriceNoticeRecord(*PriceNoticeRecord.key(offer.merchant_id, version.price_change_id))
                write.update(notice, actions=[PriceNoticeRecord.due_shard.remove(), PriceNoticeRecord.due_at.remove()])


def due_price_notice(merchant_id: str, price_change_id: str) -> PriceNoticeRecord | None:
    try:
        return PriceNoticeRecord.get(*PriceNoticeRecord.key(merchant_id, price_change_id), consistent_read=True)
    except DoesNotExist:
        return None


def price_notice_sent(notice: PriceNoticeRecord, at: str) -> None:
    """Every e-mail of the notice is recorded: it leaves the due index."""
    notice.update(actions=[PriceNoticeRecord.sent_at.set(at), PriceNoticeRecord.due_shard.remove(),
                           PriceNoticeRecord.due_at.remove()])


def archive_offer(offer: OfferRecord, at: str) -> None:
    """Mark the offer archived (once: archiving again changes nothing)."""
    if offer.archived:
        return
    try:
        offer.update(
            actions=[OfferRecord.archived.set(True), OfferRecord.archived_at.set(at)],
            condition=OfferRecord.pk.exists() & (OfferRecord.archived == False),  # noqa: E712
        )
    except UpdateError as error:
        if not is_condition_failure(error):
            raise
        # Archived by a concurrent request: the outcome asked for holds.
        offer.archived = True


def _attempt_token() -> str:
    # One token per attempt: when the SDK retries a transaction whose answer
    # was lost, DynamoDB sees the same token and does not apply it twice
    # (which would fail its own conditions and look like a conflict).
    return uuid.uuid4().hex


class _writing:
    """Turn a failed condition of a write into Conflict (the caller may re-read and retry)."""

    def __init__(self, message: str):
        self.message = message

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, (TransactWriteError, PutError, UpdateError)) and is_condition_failure(error):
            raise Conflict(self.message, code="version_conflict") from error
        return False
