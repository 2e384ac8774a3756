"""Merchants: creation by the operator, settings, API keys."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata

from chalicelib import config
from chalicelib.clock import clock, isoformat
from chalicelib.domain.errors import AuthenticationError, InvalidRequest, NotFound
from chalicelib.domain.ledger import accounts_map
from chalicelib.ids import new_id
from chalicelib.store import merchants as store

# A warm Lambda remembers which merchant a key belongs to for this long, so a
# busy merchant's requests do not each pay a DynamoDB read. A revoked key is
# refused at once by the container that revoked it and within this delay by
# every other one.
KEY_CACHE_SECONDS = 60
_key_cache: dict[str, tuple[tuple[str, str | None], float]] = {}

DEFAULTS = {
    "alert_emails": [],
    "tax_rates": {},
    "dunning_retry_days": [1, 3, 5, 7],
    "locale": "en",
    "timezone": "UTC",
}


# When the operator gives none: the prefix of the merchant's invoice numbers
# (`{prefix}{YYYY}-{000001}`) is made from its name, within InvoicePrefix's
# pattern (chalicelib/api/merchants.py).
PREFIX_LENGTH = (2, 6)
FALLBACK_PREFIX = "INV"


def invoice_prefix_from(name: str) -> str:
    """The initials of the name's first words, upper case, ASCII ("Optique
    Durand" -> "OD"); a one-word name gives its first letters ("Fuzz" ->
    "FU"); a name without a Latin letter or digit gives "INV"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().upper()
    words = re.findall(r"[A-Z0-9]+", ascii_name)
    shortest, longest = PREFIX_LENGTH
    prefix = "".join(word[0] for word in words)[:longest]
    if len(prefix) < shortest and words:
        prefix = (prefix + "".join(words)[1:])[:shortest]
    return prefix if len(prefix) >= shortest else FALLBACK_PREFIX


def hash_key(api_key: str) -> str:
    # Keys carry 256 random bits: a plain SHA-256 is enough, no slow KDF needed.
    return hashlib.sha256(api_key.encode()).hexdigest()


# A key is shown, listed, revoked and named in the audit trail by its first
# characters: "sk_" and 8 of its 43 random ones (48 of its 256 bits), enough
# to tell a merchant's keys apart, far too few to guess the rest from.
KEY_PREFIX_LENGTH = 11


def key_prefix(api_key: str) -> str:
    return api_key[:KEY_PREFIX_LENGTH]


def _new_key(merchant_id: str) -> tuple[str, store.ApiKeyRecord]:
    api_key = f"sk_{secrets.token_urlsafe(32)}"
    prefix = key_prefix(api_key)
    record = store.ApiKeyRecord(
        *store.ApiKeyRecord.key(hash_key(api_key)),
        merchant_id=merchant_id,
        prefix=prefix,
        created_at=isoformat(clock().now()),
    )
    return api_key, record


def create_merchant(fields: dict, owner: tuple[str, str | None] | None = None) -> dict:
    """A merchant and its first API key; with `owner` (e-mail, password),
    also its first console user, made first so that a refused password
    leaves no merchant behind."""
    fields = {"invoice_prefix": invoice_prefix_from(fields["name"]), **fields}
    merchant_id = new_id("mer")
    if owner is not None:
        from chalicelib.services import staff

        staff.add_member(merchant_id, owner[0], "owner", owner[1], actor="operator")
    api_key, key_record = _new_key(merchant_id)
    record = store.MerchantRecord(
        *store.MerchantRecord.key(merchant_id),
        merchant_id=merchant_id,
        created_at=isoformat(clock().now()),
        api_keys={key_record.prefix: key_record.pk.split("#", 1)[1]},
        **{**DEFAULTS, **fields},
    )
    try:
        store.create_merchant(record, key_record)
    except Exception:
        if owner is not None:
            staff.remove_member(merchant_id, owner[0])
        raise
    return {**serialize(record), "api_key": api_key}


def get_merchant(merchant_id: str) -> dict:
    return serialize(store.get_merchant(merchant_id))


def update_merchant(merchant_id: str, changes: dict) -> dict:
    record = store.get_merchant(merchant_id)
    if "siren" in changes or "vat_number" in changes:
        _check_legal_identity(changes.get("siren", record.siren), changes.get("vat_number", record.vat_number))
    if "accounts" in changes:
        # The roles given are set; the others keep their numbers.
        changes = {**changes, "accounts": {**record.account_table(), **changes["accounts"]}}
    if "fx_rates" in changes:
        changes = {**changes, "fx_rates": _dated_fx_rates(record, changes["fx_rates"],
                                                          changes.get("default_currency", record.default_currency))}
    for name, value in changes.items():
        setattr(record, name, value)
    store.save_merchant(record)
    return serialize(record)


def _dated_fx_rates(record: store.MerchantRecord, rates: dict[str, str], default_currency: str) -> dict:
    """The new rates (they replace the old ones), each with the time it was
    set: a rate sent again unchanged keeps its date."""
    if default_currency in rates:
        raise InvalidRequest(f"fx_rates.{default_currency}: the default currency needs no rate",
                             param=f"fx_rates.{default_currency}")
    old = record.fx_rate_table()
    now = isoformat(clock().now())
    return {code: {"rate": rate, "set_at": old[code]["set_at"] if old.get(code, {}).get("rate") == rate else now}
            for code, rate in rates.items()}


def _check_legal_identity(siren: str | None, vat_number: str | None) -> None:
    """A French VAT number holds the SIREN: the one set and the one kept agree."""
    from chalicelib.domain import legal

    try:
        legal.check_siren_matches_vat(siren, vat_number)
    except ValueError as error:
        raise InvalidRequest(f"vat_number: {error}", param="vat_number") from None


def create_api_key(merchant_id: str) -> dict:
    record = store.get_merchant(merchant_id)
    api_key, key_record = _new_key(merchant_id)
    store.add_api_key(record, key_record, hash_key(api_key))
    return {"prefix": key_record.prefix, "api_key": api_key, "created_at": key_record.created_at}


def revoke_api_key(merchant_id: str, prefix: str) -> dict:
    record = store.get_merchant(merchant_id)
    key_hashes = record.key_hashes()
    if prefix not in key_hashes:
        raise NotFound(f"no API key with prefix {prefix}")
    if len(key_hashes) == 1:
        raise InvalidRequest("the last API key cannot be revoked; create another first", param="prefix")
    key_hash = key_hashes[prefix]
    store.remove_api_key(record, prefix)
    _key_cache.pop(key_hash, None)
    return {"prefix": prefix, "deleted": True}


def authenticate_merchant(api_key: str | None) -> str:
    """The merchant a presented key belongs to, or AuthenticationError."""
    return authenticate_key(api_key)[0]


def authenticate_key(api_key: str | None) -> tuple[str, str | None]:
    """(merchant, reseller) of a presented key: the reseller is None for a
    merchant's own key, a payee id for a reseller's (services/payees.py).
    AuthenticationError for a missing or unknown key."""
    if not api_key:
        raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
    key_hash = hash_key(api_key)
    cached = _key_cache.get(key_hash)
    now = time.monotonic()
    if cached and now - cached[1] < KEY_CACHE_SECONDS:
        return cached[0]
    owner = store.owner_of_key(key_hash)
    if owner is None:
        raise AuthenticationError("invalid API key")
    _key_cache[key_hash] = (owner, now)
    return owner


def forget_key(key_hash: str) -> None:
    """A revoked key is refused at once by this container."""
    _key_cache.pop(key_hash, None)


def new_reseller_key(merchant_id: str, reseller_id: str) -> tuple[str, store.ApiKeyRecord]:
    """A key of the merchant's kind that acts for one reseller (its lookup record not written yet)."""
    api_key, record = _new_key(merchant_id)
    record.reseller_id = reseller_id
    return api_key, record


def authenticate_operator(api_key: str | None) -> None:
    if not api_key or not hmac.compare_digest(api_key.encode(), config.secret("admin_api_key").encode()):
        raise AuthenticationError("this route needs the platform operator key")


def serialize(record: store.MerchantRecord) -> dict:
    return {
        "id": record.merchant_id,
        "object": "merchant",
        "name": record.name,
        "default_currency": record.default_currency,
        "alert_emails": list(record.alert_emails or []),
        "tax_rates": record.tax_rate_table(),
        "accounts": accounts_map(record.account_table()),
        "invoice_prefix": record.invoice_prefix,
        "dunning_retry_days": [int(d) for d in record.dunning_retry_days or []],
        "locale": record.locale,
        "timezone": record.timezone,
        **_currency_settings(record),
        **record.legal_identity(),
        "api_keys": [{"prefix": prefix} for prefix in sorted(record.key_hashes())],
        "created_at": record.created_at,
    }


def _currency_settings(record: store.MerchantRecord) -> dict:
    """`price_lists`, `fx_rates` and the time each rate was set, once the merchant has some."""
    shown = {}
    if record.price_lists:
        shown["price_lists"] = record.price_list_table()
    rates = record.fx_rate_table()
    if rates:
        shown["fx_rates"] = {code: value["rate"] for code, value in sorted(rates.items())}
        shown["fx_rates_set_at"] = {code: value["set_at"] for code, value in sorted(rates.items())}
    return shown
