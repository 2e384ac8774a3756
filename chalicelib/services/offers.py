"""The catalog's use cases: create, read, list, archive offers and add versions,
and what the rest of the backend reads offers through.

Other services depend on four functions here:
- `load_offer(merchant_id, offer_id)`: the Offer model of the latest version;
- `terms_at(merchant_id, offer_id, at)`: (version number, Offer model) in force
  at an instant: the version with the greatest effective_from <= at, version
  1 for any instant before version 2 (also before the offer was created);
- `offer_summary(merchant_id, offer_id)`: the offer as the API shows it;
- `offer_archived(merchant_id, offer_id)`: True once archived (no new
  subscription may use it; existing ones go on).

An Offer model of one version is immutable (versions are never changed and
the offer's own fields are fixed at creation), so parsed models are kept per
container by (merchant, offer, version): a warm worker validates each version
once, and rating's price-book cache, keyed by the Offer object, keeps hitting.
"""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

from chalicelib.clock import clock, isoformat
from chalicelib.domain import catalog
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.ids import new_id
from chalicelib.store import offers as store

# A change checked against a ladder is written only if the ladder did not
# change meanwhile; on such a race the check runs again on the new state.
WRITE_ATTEMPTS = 3

_OFFER_ID = re.compile(r"^off_[0-9a-z]{26}$")

OFFER_FIELDS = (
    "code",
    "name",
    "currency",
    "billing_interval",
    "interval_count",
    "trial_days",
    "commitment_months",
    "ladder",
    "tier_rank",
    "entitlements",
    "portal_upgrades",
)


# ---------------------------------------------------------------------------
# The interface of the catalog for the other services


def load_offer(merchant_id: str, offer_id: str) -> catalog.Offer:
    """The Offer model of the offer's latest version (which may not be in
    force yet). NotFound for an unknown offer or another merchant's."""
    state = _load(merchant_id, offer_id)
    return state.model(state.versions[-1])


def terms_at(merchant_id: str, offer_id: str, at: datetime, currency: str | None = None,
             held: int | None = None) -> tuple[int, catalog.Offer]:
    """(version number, Offer model) in force at `at` (timezone-aware):
    the version with the greatest effective_from <= at; version 1 before
    version 2 starts, whenever that is. `currency`: the Offer as it bills in
    that currency (its `currency_options`). `held`: the version a subscription
    of this offer is on, which keeps it through a grandfathering price change."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("terms_at needs a timezone-aware instant")
    state = _load(merchant_id, offer_id)
    version = state.in_force(at, held)
    return version.version, state.model(version, currency)


def terms_for_billing(merchant_id: str, offer_id: str, at: datetime, currency: str | None = None,
                      held: int | None = None) -> tuple[int, catalog.Offer]:
    """`terms_at` for the billing run, which asks it for the same few offers
    thousands of times: answered from this container's last read of the
    offer when that read can tell, else read again.

    A version can only be added with `effective_from` not before its
    creation, so an offer read at instant L knows every version in force at
    any instant up to L: a boundary that had passed when the offer was
    read is answered exactly from it. The read is kept a minute at most."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("terms_for_billing needs a timezone-aware instant")
    key = (merchant_id, offer_id)
    now = clock().now()
    with _recent_lock:
        hit = _RECENT.get(key)
    if hit is None or at > hit[0] or now - hit[0] > _RECENT_FOR or now < hit[0]:
        hit = (now, _load(merchant_id, offer_id))
        with _recent_lock:
            _RECENT[key] = hit
            if len(_RECENT) > _PARSED_SIZE:
                _RECENT.pop(next(iter(_RECENT)))
    version = hit[1].in_force(at, held)
    return version.version, hit[1].model(version, currency)


_RECENT: dict[tuple[str, str], tuple[datetime, "_OfferState"]] = {}
_RECENT_FOR = timedelta(minutes=1)
_recent_lock = threading.Lock()


def offer_summary(merchant_id: str, offer_id: str) -> dict:
    """The offer as `GET /offers/{id}` shows it (`status` is active or archived)."""
    return _load(merchant_id, offer_id).serialize()


def offer_archived(merchant_id: str, offer_id: str) -> bool:
    """True once the offer is archived: no new subscription may use it."""
    return bool(_load(merchant_id, offer_id).record.archived)


# ---------------------------------------------------------------------------
# The API's use cases


def create_offer(merchant_id: str, offer: catalog.Offer) -> dict:
    """Create an offer with its terms as version 1.

    Refused: a rule of the catalog broken (400 naming the field), a code the
    merchant already uses (400 `duplicate_code`), a ladder the new offer
    would break now or at any scheduled version of its other members (400
    `ladder_violation`)."""
    catalog.validate_offer(offer)
    now = clock().now()
    offer_id = new_id("off")
    created_at = isoformat(now)
    record = store.OfferRecord(
        *store.OfferRecord.key(merchant_id, offer_id),
        merchant_id=merchant_id,
        offer_id=offer_id,
        code=offer.code,
        name=offer.name,
        currency=offer.currency,
        billing_interval=offer.billing_interval,
        interval_count=offer.interval_count,
        trial_days=offer.trial_days,
        commitment_months=offer.commitment_months,
        ladder=offer.ladder,
        tier_rank=offer.tier_rank,
        entitlements=list(offer.entitlements),
        portal_upgrades=_checked_portal_upgrades(merchant_id, offer),
        archived=False,
        created_at=created_at,
        latest_version=1,
        version_starts=[created_at],
        gsi1pk=store.listing_pk(merchant_id),
        gsi1sk=offer_id,
    )
    first = _version_record(merchant_id, offer_id, 1, created_at, offer, created_at)
    for attempt in range(WRITE_ATTEMPTS):
        owner = store.code_owner(merchant_id, offer.code)
        if owner == offer_id:  # written by an attempt whose answer was lost
            return get_offer(merchant_id, offer_id)
        if owner is not None:
            raise InvalidRequest(
                f"code: offer {owner} already has the code {offer.code!r}", param="code", code="duplicate_code"
            )
        ladder = None
        if offer.ladder is not None:
            ladder = store.get_ladder(merchant_id, offer.ladder)
            members = [_load(merchant_id, member) for member in (ladder.members if ladder else [])]
            _check_ladder(
                [m.schedule() for m in members if not m.record.archived] + [[(None, offer)]], since=now
            )
        try:
            store.create_offer(record, first, ladder)
        except Conflict:
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            continue
        created = _OfferState(record, [first]).serialize()
        return created
    raise AssertionError("unreachable")


def get_offer(merchant_id: str, offer_id: str) -> dict:
    return offer_summary(merchant_id, offer_id)


def list_offers(merchant_id: str, *, limit: int = 20, cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of the merchant's offers, newest first, each as `get_offer` shows it."""
    records, next_cursor = store.list_offers(merchant_id, limit, cursor)
    latest = store.latest_versions(records)
    return [_OfferState(record, [latest[record.offer_id]]).serialize() for record in records], next_cursor


def archive_offer(merchant_id: str, offer_id: str) -> dict:
    """No new subscriptions; existing ones go on. Archiving twice is harmless."""
    state = _load(merchant_id, offer_id)
    store.archive_offer(state.record, isoformat(clock().now()))
    return state.serialize()


def add_version(merchant_id: str, offer_id: str, version: catalog.OfferVersion, *,
                price_change: dict | None = None) -> dict:
    """New terms for periods starting at or after `effective_from`.

    `effective_from` must not be in the past (a period already started keeps
    the terms it started with, and usage already billed in arrears is not
    re-rated) and must come after the latest version's. The terms must obey
    the catalog's rules in the offer's currency, keep every component (with
    its type) and option of the latest version (subscriptions choose options
    and override component prices by code), and keep the offer's ladder
    consistent from `effective_from` on. `price_change` ({"id", "existing",
    "notice_days", "notice_at"}): the version is a price change
    (services/price_changes.py); a migrating one's notice is written with it."""
    for attempt in range(WRITE_ATTEMPTS):
        state = _load(merchant_id, offer_id)
        record = state.record
        catalog.validate_terms(record.currency, version.components, version.options)
        catalog.validate_currency_options(record.currency, version, version.currency_options)
        latest = state.live_versions()[-1]
        _check_keeps_choices(state.model(latest), version)
        now = clock().now()
        if version.effective_from < now:
            raise InvalidRequest(
                f"effective_from: {isoformat(version.effective_from)} is in the past (now {isoformat(now)}); "
                "a version applies to periods that have not started yet",
                param="effective_from",
            )
        if latest.version > 1 and version.effective_from <= _instant(latest.effective_from):
            raise InvalidRequest(
                f"effective_from: must be after version {latest.version}'s ({latest.effective_from})",
                param="effective_from",
            )
        number = state.versions[-1].version + 1
        candidate = state.model(latest).model_copy(update={"components": version.components, "options": version.options,
                                                           "currency_options": version.currency_options})
        ladder = None
        if record.ladder is not None and not record.archived:
            ladder = store.get_ladder(merchant_id, record.ladder)
            others = [_load(merchant_id, m) for m in (ladder.members if ladder else []) if m != offer_id]
            _check_ladder(
                [m.schedule() for m in others if not m.record.archived]
                + [state.schedule() + [(version.effective_from, candidate)]],
                since=version.effective_from,
                field_of_version=True,
            )
        new = _version_record(merchant_id, offer_id, number, isoformat(version.effective_from), version, isoformat(now))
        notice = None
        if price_change is not None:
            new.price_change_id, new.existing = price_change["id"], price_change["existing"]
            new.notice_days = price_change["notice_days"]
            if price_change["existing"] == "migrate":
                notice = _price_notice(merchant_id, offer_id, number, price_change)
        try:
            store.add_version(record, new, ladder, notice)
        except Conflict:
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            continue
        record.latest_version = number
        record.version_starts = [*record.version_starts, new.effective_from]
        changed = _OfferState(record, [*state.versions, new]).serialize()
        return changed
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# Internals


def _price_notice(merchant_id: str, offer_id: str, number: int, price_change: dict) -> store.PriceNoticeRecord:
    from chalicelib.store.due import due_key, due_shard_of

    return store.PriceNoticeRecord(
        *store.PriceNoticeRecord.key(merchant_id, price_change["id"]), merchant_id=merchant_id, offer_id=offer_id,
        price_change_id=price_change["id"], version=number, due_shard=due_shard_of(price_change["id"]),
        due_at=due_key(price_change["notice_at"]))


def price_change_versions(merchant_id: str, offer_id: str) -> tuple[store.OfferRecord, list[store.OfferVersionRecord]]:
    """The offer and its versions that are price changes, oldest first."""
    state = _load(merchant_id, offer_id)
    return state.record, [v for v in state.versions if v.price_change_id]


def _version_record(merchant_id, offer_id, number, effective_from, terms, created_at) -> store.OfferVersionRecord:
    # exclude_unset keeps what the merchant sent (defaults stay defaults);
    # never exclude_none: an open tier's `up_to: null` means something.
    dumped = terms.model_dump(mode="json", exclude_unset=True, include={"components", "options", "currency_options"})
    if not dumped.get("currency_options"):
        dumped.pop("currency_options", None)
    return store.OfferVersionRecord(
        *store.OfferVersionRecord.key(merchant_id, offer_id, number),
        version=number,
        effective_from=effective_from,
        terms=json.dumps(dumped, separators=(",", ":")),
        created_at=created_at,
    )


def _check_keeps_choices(latest: catalog.Offer, version: catalog.OfferVersion) -> None:
    kept = set(version.currency_options or {})
    for code in sorted(set(latest.currency_options or {}) - kept):
        raise InvalidRequest(
            f"currency_options: {code} is missing in the new version; subscriptions bill in it, so a version "
            "keeps the currencies of the one before", param="currency_options")
    types = {c.code: c.type for c in version.components}
    for component in latest.components:
        if types.get(component.code) != component.type:
            found = f"a {types[component.code]} component" if component.code in types else "missing"
            raise InvalidRequest(
                f"components: {component.code!r} ({component.type}) is {found} in the new version; a version "
                "changes prices and may add components, but keeps each one with its type "
                "(subscriptions override its prices by code)",
                param="components",
            )
    codes = {o.code for o in version.options}
    for option in latest.options:
        if option.code not in codes:
            raise InvalidRequest(
                f"options: option {option.code!r} is missing in the new version; a version may change its price "
                "but keeps every option (subscriptions choose them by code)",
                param="options",
            )


def _check_ladder(
    schedules: list[list[tuple[datetime | None, catalog.Offer]]], *, since: datetime, field_of_version: bool = False
) -> None:
    """The ladder rule at `since` and at every later instant where a member's
    terms change: a ladder consistent today must stay so when a scheduled
    version of one of its offers comes into force.

    A version cannot change the offer's rank, currency or interval, which the
    rule's `param` names: a version's violation names no field (its flat
    prices and options together break the ladder)."""
    instants = {since} | {start for schedule in schedules for start, _ in schedule if start is not None and start > since}
    for instant in sorted(instants):
        members = [_in_force(schedule, instant) for schedule in schedules]
        try:
            catalog.check_ladder(members)
        except InvalidRequest as error:
            if instant > since:
                error.message += f" (from {isoformat(instant)}, when a scheduled version comes into force)"
            if field_of_version:
                error.param = None
            raise


def _in_force(schedule: list[tuple[datetime | None, catalog.Offer]], at: datetime) -> catalog.Offer:
    current = schedule[0][1]
    for start, offer in schedule:
        if start is None or start <= at:
            current = offer
    return current


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _load(merchant_id: str, offer_id: str) -> "_OfferState":
    if not isinstance(offer_id, str) or not _OFFER_ID.match(offer_id):
        raise NotFound(f"no offer {offer_id}")
    return _OfferState(*store.load_offer(merchant_id, offer_id))


class _OfferState:
    """An offer record with some of its versions (all when loaded, the latest when listed)."""

    def __init__(self, record: store.OfferRecord, versions: list[store.OfferVersionRecord]):
        self.record = record
        self.versions = versions

    def in_force(self, at: datetime, held: int | None = None) -> store.OfferVersionRecord:
        """The version in force at `at`: a canceled price change never is;
        a grandfathering one is not for a subscription `held` on an older version."""
        current = self.versions[0]
        for version in self.versions[1:]:
            if version.canceled_at or (held is not None and version.version > held
                                       and version.existing == "grandfather"):
                continue
            if _instant(version.effective_from) <= at:
                current = version
        return current

    def live_versions(self) -> list[store.OfferVersionRecord]:
        """The versions that are or will be in force for someone (not canceled)."""
        return [v for v in self.versions if not v.canceled_at]

    def schedule(self) -> list[tuple[datetime | None, catalog.Offer]]:
        """(start, Offer) per version; version 1 starts with time itself (None)."""
        return [(None if v.version == 1 else _instant(v.effective_from), self.model(v)) for v in self.live_versions()]

    def model(self, version: store.OfferVersionRecord, currency: str | None = None) -> catalog.Offer:
        offer = _parsed_offer(self.record, version)
        return offer if currency is None or currency == offer.currency else _in_currency(offer, currency)

    def serialize(self) -> dict:
        record = self.record
        shown = record.shown_version()
        terms = json.loads(next(v for v in self.versions if int(v.version) == shown).terms)
        canceled = {int(n) for n in record.canceled_versions or []}
        return {
            "id": record.offer_id,
            "object": "offer",
            **_offer_fields(record),
            "components": terms["components"],
            "options": terms.get("options", []),
            **({"currency_options": terms["currency_options"]} if terms.get("currency_options") else {}),
            "status": "archived" if record.archived else "active",
            "version": shown,
            "versions": [
                {"version": number, "effective_from": start, **({"canceled": True} if number in canceled else {})}
                for number, start in enumerate(record.version_starts, start=1)
            ],
            "created_at": record.created_at,
        }


def _offer_fields(record: store.OfferRecord) -> dict:
    fields = {name: getattr(record, name) for name in OFFER_FIELDS}
    for name in ("interval_count", "trial_days", "commitment_months", "tier_rank"):
        if fields[name] is not None:
            fields[name] = int(fields[name])
    fields["entitlements"] = list(fields["entitlements"] or [])
    fields["portal_upgrades"] = list(fields["portal_upgrades"] or [])
    return fields


def _checked_portal_upgrades(merchant_id: str, offer: catalog.Offer) -> list[str]:
    """The offers a portal may switch to: the merchant's, live, billing the
    same currency and interval (what a change of offer requires)."""
    for j, offer_id in enumerate(offer.portal_upgrades):
        param = f"portal_upgrades[{j}]"
        try:
            target = _load(merchant_id, offer_id).record
        except NotFound:
            raise InvalidRequest(f"{param}: no offer {offer_id}", param=param) from None
        if target.archived:
            raise InvalidRequest(f"{param}: offer {offer_id} is archived", param=param)
        if (target.currency, target.billing_interval, int(target.interval_count)) != (
                offer.currency, offer.billing_interval, offer.interval_count):
            raise InvalidRequest(f"{param}: offer {offer_id} bills another currency or interval", param=param)
    return list(offer.portal_upgrades)


def _in_currency(offer: catalog.Offer, currency: str) -> catalog.Offer:
    """The version's Offer in another of its currencies, built once per
    container (rating's price books are keyed by the Offer object)."""
    key = (id(offer), currency)
    with _parsed_lock:
        hit = _IN_CURRENCY.get(key)
        if hit is not None and hit[0] is offer:
            return hit[1]
    priced = offer.in_currency(currency)
    with _parsed_lock:
        _IN_CURRENCY[key] = (offer, priced)
        if len(_IN_CURRENCY) > _PARSED_SIZE:
            _IN_CURRENCY.pop(next(iter(_IN_CURRENCY)))
    return priced


_IN_CURRENCY: dict[tuple, tuple[catalog.Offer, catalog.Offer]] = {}
_PARSED: OrderedDict[tuple[str, str, int], catalog.Offer] = OrderedDict()
_PARSED_SIZE = 2048
_parsed_lock = threading.Lock()


def _parsed_offer(record: store.OfferRecord, version: store.OfferVersionRecord) -> catalog.Offer:
    """The Offer model of one version, parsed once per container."""
    key = (record.merchant_id, record.offer_id, int(version.version))
    with _parsed_lock:
        hit = _PARSED.get(key)
        if hit is not None:
            _PARSED.move_to_end(key)
            return hit
    # Validated when written: only the shape is parsed again here.
    offer = catalog.Offer.model_validate({**_offer_fields(record), **json.loads(version.terms)})
    with _parsed_lock:
        offer = _PARSED.setdefault(key, offer)
        if len(_PARSED) > _PARSED_SIZE:
            _PARSED.popitem(last=False)
    return offer
