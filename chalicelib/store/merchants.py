"""Merchants and their API keys."""
from __future__ import annotations

from pynamodb.attributes import ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.domain.errors import NotFound
from chalicelib.store.base import AuditedRecord, BillingRecord, transaction


class MerchantRecord(AuditedRecord):
    merchant_id = UnicodeAttribute()
    name = UnicodeAttribute()
    default_currency = UnicodeAttribute()
    alert_emails = ListAttribute(of=UnicodeAttribute, default=list)
    # country -> rate as a decimal string ("20.0"); never a float.
    tax_rates = MapAttribute(default=dict)
    # country -> the currency its customers pay in ({"US": "USD", "JP": "JPY"}).
    price_lists = MapAttribute(null=True)
    # currency -> {"rate": decimal string, "set_at": ISO time}: the merchant's
    # rate of one unit of it in default_currency, for the reports' total.
    fx_rates = MapAttribute(null=True)
    # role -> account number of the accounting exports (domain/ledger.py),
    # only the roles the merchant set.
    accounts = MapAttribute(default=dict)
    invoice_prefix = UnicodeAttribute()
    dunning_retry_days = ListAttribute(of=NumberAttribute, default=list)
    locale = UnicodeAttribute(default="en")
    timezone = UnicodeAttribute(default="UTC")
    # The legal identity its invoices carry (docs/api.md, "Legal invoices"):
    # the address as Stripe's {line1, line2, postal_code, city, state, country}.
    legal_name = UnicodeAttribute(null=True)
    address = MapAttribute(null=True)
    siren = UnicodeAttribute(null=True)
    company_id = UnicodeAttribute(null=True)
    vat_number = UnicodeAttribute(null=True)
    legal_form = UnicodeAttribute(null=True)
    # A decimal string in the merchant's default currency.
    share_capital = UnicodeAttribute(null=True)
    registration = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    # prefix -> sha256 of the key, so a key can be revoked by its prefix.
    api_keys = MapAttribute(default=dict)
    version = NumberAttribute(default=1)

    @staticmethod
    def key(merchant_id: str) -> tuple[str, str]:
        return f"{merchant_id}#merchant", "merchant"

    def key_hashes(self) -> dict[str, str]:
        """prefix -> key hash, as a plain dict (raw map attributes load as MapAttribute)."""
        return _plain(self.api_keys)

    def tax_rate_table(self) -> dict[str, str]:
        return _plain(self.tax_rates)

    def price_list_table(self) -> dict[str, str]:
        return _plain(self.price_lists)

    def fx_rate_table(self) -> dict[str, dict]:
        return {code: _plain(value) if isinstance(value, MapAttribute) else dict(value)
                for code, value in _plain(self.fx_rates).items()}

    def account_table(self) -> dict[str, str]:
        return _plain(self.accounts)

    def address_dict(self) -> dict | None:
        return None if self.address is None else _plain(self.address)

    def legal_identity(self) -> dict:
        """The legal fields, as the merchant object and its invoices show them."""
        return {
            "legal_name": self.legal_name,
            "address": self.address_dict(),
            "siren": self.siren,
            "company_id": self.company_id,
            "vat_number": self.vat_number,
            "legal_form": self.legal_form,
            "share_capital": self.share_capital,
            "registration": self.registration,
        }


def _plain(value) -> dict:
    return value.as_dict() if isinstance(value, MapAttribute) else dict(value or {})


class ApiKeyRecord(BillingRecord):
    """The lookup from a presented key to its merchant. The partition key is
    the key's hash (the merchant is not known yet when a request arrives)."""

    merchant_id = UnicodeAttribute()
    prefix = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # A reseller's key (store/payees.py): it acts for the merchant, limited
    # to the reseller's customers and their subscriptions.
    reseller_id = UnicodeAttribute(null=True)

    @staticmethod
    def key(key_hash: str) -> tuple[str, str]:
        return f"key#{key_hash}", "api_key"


def get_merchant(merchant_id: str) -> MerchantRecord:
    try:
        return MerchantRecord.get(*MerchantRecord.key(merchant_id))
    except DoesNotExist:
        raise NotFound(f"no merchant {merchant_id}") from None


def create_merchant(record: MerchantRecord, key: ApiKeyRecord) -> None:
    """The merchant and its first key, together or not at all."""
    with transaction() as write:
        write.save(record, condition=MerchantRecord.pk.does_not_exist())
        write.save(key, condition=ApiKeyRecord.pk.does_not_exist())


def merchant_for_key(key_hash: str) -> str | None:
    try:
        return ApiKeyRecord.get(*ApiKeyRecord.key(key_hash)).merchant_id
    except DoesNotExist:
        return None


def owner_of_key(key_hash: str) -> tuple[str, str | None] | None:
    """(merchant, reseller or None) of a presented key, or None."""
    try:
        record = ApiKeyRecord.get(*ApiKeyRecord.key(key_hash))
    except DoesNotExist:
        return None
    return record.merchant_id, record.reseller_id


def add_api_key(merchant: MerchantRecord, key: ApiKeyRecord, key_hash: str) -> None:
    with transaction() as write:
        write.save(key, condition=ApiKeyRecord.pk.does_not_exist())
        write.update(
            merchant,
            actions=[MerchantRecord.api_keys[key.prefix].set(key_hash)],
            condition=MerchantRecord.pk.exists(),
        )


def remove_api_key(merchant: MerchantRecord, prefix: str) -> None:
    key_hash = merchant.key_hashes()[prefix]
    with transaction() as write:
        write.delete(ApiKeyRecord(*ApiKeyRecord.key(key_hash)))
        write.update(merchant, actions=[MerchantRecord.api_keys[prefix].remove()])


def save_merchant(record: MerchantRecord) -> None:
    """Write a changed merchant if nobody changed it since it was read."""
    expected = record.version
    record.version = expected + 1
    try:
        record.save(condition=MerchantRecord.version == expected)
    except PutError as error:
        record.version = expected
        from chalicelib.store.errors import raise_if_condition_failed

        raise_if_condition_failed(error, "the merchant was changed by another request; read it again")
        raise
