"""Customers, in the billing table.

- `{merchant_id}#{customer_id}` / `customer`: the customer. Its fields the
  merchant edits move under optimistic locking (`version`); the fields the
  payments and billing code own (`stripe_customer_id`, `default_card` with
  `card_expiry`, `credit_balances`) move by their own conditional updates,
  which never bump `version`: a card arriving while a merchant edits the
  customer's name must not make either fail.
- `{merchant_id}#customer_external_id#{external_id}` / `customer_external_id`:
  which customer holds an external id, written in the same transaction as the
  customer, so an external id is unique per merchant whatever runs
  concurrently (the same pattern as offer codes).
- `{merchant_id}#customer-names` / `{word}#{customer_id}`: one record per
  word of the customer's name (`name_tokens`: lower-cased, accents stripped),
  written in the same transaction as the customer and replaced with it on an
  edit, so a search by name is one Query of a prefix (`begins_with`): "dup"
  finds "Jean Dupont" and "Dupont SARL". Customers created before these
  records existed get theirs on their next edit (every edit writes them).

Indexes:
- gsi1 `{merchant_id}#customers` / `{customer_id}`: the merchant's
  customers, newest first (ids are time-sortable);
- gsi2 `{merchant_id}#customer_email#{lowercased e-mail}` / `{customer_id}`:
  customers by e-mail (several may share one);
- card_expiry `YYYY-MM` (sparse: only customers with a default card).

The customer's item collection: every record that belongs to one customer
(its subscriptions, invoices, devices, open alerts) carries
`gsi1pk = collection_pk(merchant_id, customer_id)` and
`gsi1sk = collection_sk(kind, id)` and declares a `CustomerCollection()`
index, so `related()` reads one kind of them with one Query, and the
customer page reads everything a customer has without a scan.
"""
from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal

from pynamodb.attributes import BooleanAttribute, MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.money import ZERO, format_amount
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, encode_cursor, page, transaction
from chalicelib.store.errors import is_condition_failure

CUSTOMER_SK = "customer"
CUSTOMER_ID = re.compile(r"^cus_[0-9a-z]{26}$")
EXTERNAL_ID_SK = "customer_external_id"
# A name is found by its first words (a transaction holds at most 100 items).
NAME_TOKENS_MAX = 8
NAME_TOKEN_CHARS = 64
# Name records one search page reads at most (one Query request): a query
# of several words keeps only the names that have them all.
NAME_SEARCH_READS = 100
_WORD = re.compile(r"[^\W_]+")


def customer_pk(merchant_id: str, customer_id: str) -> str:
    return f"{merchant_id}#{customer_id}"


def listing_pk(merchant_id: str) -> str:
    return f"{merchant_id}#customers"


def email_pk(merchant_id: str, email: str) -> str:
    return f"{merchant_id}#customer_email#{email.lower()}"


def names_pk(merchant_id: str) -> str:
    return f"{merchant_id}#customer-names"


def name_tokens(text: str) -> list[str]:
    """The words a name is found by: case folded, accents stripped, split
    on anything that is not a letter or a digit ("Jean-Loïc Dupont SARL" ->
    jean, loic, dupont, sarl); the first NAME_TOKENS_MAX distinct ones."""
    decomposed = unicodedata.normalize("NFKD", (text or "").casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    tokens: list[str] = []
    for word in _WORD.findall(plain):
        word = word[:NAME_TOKEN_CHARS]
        if word not in tokens:
            tokens.append(word)
            if len(tokens) == NAME_TOKENS_MAX:
                break
    return tokens


def collection_pk(merchant_id: str, customer_id: str) -> str:
    """gsi1pk of every record in a customer's item collection."""
    return f"{merchant_id}#{customer_id}"


def collection_sk(kind: str, item_id: str) -> str:
    """gsi1sk of a record in a customer's item collection: its kind, then its
    (time-sortable) id, so one kind reads newest first with a prefix."""
    return f"{kind}#{item_id}"


class CustomersOfMerchant(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class CustomersByEmail(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class CustomerCollection(GlobalSecondaryIndex):
    """gsi1 seen as a customer's item collection: declare
    `customer_collection = CustomerCollection()` on a record class whose
    items belong to a customer."""

    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class CustomersByCardExpiry(GlobalSecondaryIndex):
    """The `card_expiry` index: customers with a default card, by its last
    valid month (`YYYY-MM`), every merchant's (the daily expiry scan)."""

    class Meta:
        index_name = "card_expiry"
        projection = AllProjection()

    card_expiry = UnicodeAttribute(hash_key=True)
    pk = UnicodeAttribute(range_key=True)


class CardAttribute(MapAttribute):
    """The customer's default card as Stripe describes it; never its number."""

    brand = UnicodeAttribute()
    last4 = UnicodeAttribute()
    # Calendar numbers, not money.
    exp_month = NumberAttribute()
    exp_year = NumberAttribute()
    # The Stripe PaymentMethod to charge off-session (`pm_...`).
    payment_method_id = UnicodeAttribute(null=True)


class CustomerRecord(AuditedRecord):
    merchant_id = UnicodeAttribute()
    customer_id = UnicodeAttribute()
    name = UnicodeAttribute()
    email = UnicodeAttribute()
    country = UnicodeAttribute()
    external_id = UnicodeAttribute(null=True)
    locale = UnicodeAttribute(null=True)
    tax_exempt = BooleanAttribute(default=False)
    # Stripe's address shape; the VAT number of a business customer.
    address = MapAttribute(null=True)
    vat_number = UnicodeAttribute(null=True)
    # The currency its subscriptions bill in (the offers' `currency_options`);
    # none: the merchant's price list for its country, else the offer's.
    currency = UnicodeAttribute(null=True)
    metadata = MapAttribute(default=dict)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute(null=True)
    version = NumberAttribute(default=1)
    # Filled by the payments code.
    stripe_customer_id = UnicodeAttribute(null=True)
    # The Stripe customer deleted last (`customer.deleted`): the next one is
    # created under an idempotency key naming it, or Stripe would answer the
    # deleted one again for 24 h.
    deleted_stripe_customer_id = UnicodeAttribute(null=True)
    default_card = CardAttribute(null=True)
    # `YYYY-MM`, the default card's last valid month (the card_expiry index).
    card_expiry = UnicodeAttribute(null=True)
    # currency -> decimal string ("12.50"), only currencies with a balance;
    # moved by the invoice engine (`credit_balance_update`).
    credit_balances = MapAttribute(default=dict)
    # The reseller (a payee, store/payees.py) that brought the customer:
    # its commissions, and what its key sees. Set when the customer is made.
    reseller_id = UnicodeAttribute(null=True)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    gsi2pk = UnicodeAttribute()
    gsi2sk = UnicodeAttribute()
    by_merchant = CustomersOfMerchant()
    by_email = CustomersByEmail()
    by_card_expiry = CustomersByCardExpiry()

    @staticmethod
    def key(merchant_id: str, customer_id: str) -> tuple[str, str]:
        return customer_pk(merchant_id, customer_id), CUSTOMER_SK

    def card(self) -> dict | None:
        """The default card as a plain dict (brand, last4, exp_month, exp_year, payment_method_id)."""
        if self.default_card is None:
            return None
        card = self.default_card
        return {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": int(card.exp_month),
            "exp_year": int(card.exp_year),
            "payment_method_id": card.payment_method_id,
        }

    def metadata_dict(self) -> dict[str, str]:
        return _plain(self.metadata)

    def address_dict(self) -> dict | None:
        return None if self.address is None else _plain(self.address)

    def credit_balance(self, currency: str) -> Decimal:
        """The customer's credit in `currency` (0 when none)."""
        text = _plain(self.credit_balances).get(currency)
        return ZERO if text is None else Decimal(text)

    def credit_balance_table(self) -> dict[str, str]:
        return _plain(self.credit_balances)


class ExternalIdRecord(BillingRecord):
    """Which customer holds an external id: its uniqueness per merchant."""

    customer_id = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, external_id: str) -> tuple[str, str]:
        return f"{merchant_id}#customer_external_id#{external_id}", EXTERNAL_ID_SK


class NameTokenRecord(BillingRecord):
    """One word of a customer's name (the search by name), with the whole
    name, so a search of several words checks them without reading the
    customer."""

    customer_id = UnicodeAttribute()
    name = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, token: str, customer_id: str) -> tuple[str, str]:
        return names_pk(merchant_id), f"{token}#{customer_id}"

    @property
    def token(self) -> str:
        return self.sk.rpartition("#")[0]


def _plain(value) -> dict:
    return value.as_dict() if isinstance(value, MapAttribute) else dict(value or {})


def new_customer_record(merchant_id: str, customer_id: str, created_at: str, **fields) -> CustomerRecord:
    """A customer record with its keys and index keys derived from its fields."""
    return CustomerRecord(
        *CustomerRecord.key(merchant_id, customer_id),
        merchant_id=merchant_id,
        customer_id=customer_id,
        created_at=created_at,
        gsi1pk=listing_pk(merchant_id),
        gsi1sk=customer_id,
        gsi2pk=email_pk(merchant_id, fields["email"]),
        gsi2sk=customer_id,
        **fields,
    )


# ---------------------------------------------------------------------------
# Reads


def get_customer(merchant_id: str, customer_id: str, *, consistent: bool = False) -> CustomerRecord:
    """The customer, or NotFound (also for another merchant's)."""
    if not isinstance(customer_id, str) or not CUSTOMER_ID.match(customer_id):
        raise NotFound(f"no customer {customer_id}")
    try:
        return CustomerRecord.get(*CustomerRecord.key(merchant_id, customer_id), consistent_read=consistent)
    except DoesNotExist:
        raise NotFound(f"no customer {customer_id}") from None


def list_customers(merchant_id: str, limit: int, cursor: str | None) -> tuple[list[CustomerRecord], str | None]:
    """A page of the merchant's customers, newest first."""
    start = _cursor(cursor, merchant_id, "gsi1pk", listing_pk(merchant_id))
    query = CustomerRecord.by_merchant.query(
        listing_pk(merchant_id), limit=limit + 1, last_evaluated_key=start, scan_index_forward=False
    )
    return page(query, limit)


def customers_by_email(
    merchant_id: str, email: str, limit: int, cursor: str | None
) -> tuple[list[CustomerRecord], str | None]:
    """A page of the customers with this e-mail (case-insensitive), newest first."""
    key = email_pk(merchant_id, email)
    start = _cursor(cursor, merchant_id, "gsi2pk", key)
    query = CustomerRecord.by_email.query(key, limit=limit + 1, last_evaluated_key=start, scan_index_forward=False)
    return page(query, limit)


def customers_with_card_expiring(month: str):
    """Every customer (all merchants) whose default card's last valid month
    is `month` (`YYYY-MM`): one Query of the card_expiry index, paged by
    PynamoDB as it is iterated."""
    return CustomerRecord.by_card_expiry.query(month)


def customer_by_external_id(merchant_id: str, external_id: str) -> CustomerRecord | None:
    try:
        owner = ExternalIdRecord.get(*ExternalIdRecord.key(merchant_id, external_id), consistent_read=True)
    except DoesNotExist:
        return None
    try:
        return get_customer(merchant_id, owner.customer_id)
    except NotFound:
        return None


def get_customers(merchant_id: str, customer_ids) -> list[CustomerRecord]:
    """The merchant's customers of these ids that exist, in the order given
    (BatchGetItem, 100 keys a request; another merchant's ids are not found)."""
    wanted = [c for c in dict.fromkeys(customer_ids) if isinstance(c, str) and CUSTOMER_ID.match(c)]
    if not wanted:
        return []
    found = {r.customer_id: r for r in CustomerRecord.batch_get([CustomerRecord.key(merchant_id, c) for c in wanted])}
    return [found[c] for c in wanted if c in found]


def customer_ids_by_name(merchant_id: str, words: list[str], limit: int,
                         cursor: str | None) -> tuple[list[str], str | None]:
    """A page of the customers whose name has, for each of `words`
    (`name_tokens` of the search), a word that starts with it; in the order
    of the longest search word's matches (alphabetical), each customer once.

    One Query of the name records by the prefix of the longest word, reading
    at most NAME_SEARCH_READS of them: a page may hold fewer than `limit`
    customers and still have a next one."""
    if not words:
        return [], None
    lead = max(words, key=len)
    key = names_pk(merchant_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and (set(start) != {"pk", "sk"} or start["pk"].get("S") != key
                              or not str(start["sk"].get("S", "")).startswith(lead)):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = NameTokenRecord.query(key, NameTokenRecord.sk.startswith(lead), last_evaluated_key=start,
                                  limit=NAME_SEARCH_READS, page_size=NAME_SEARCH_READS)
    found: list[str] = []
    last = None
    read = 0
    for record in query:
        read += 1
        tokens = name_tokens(record.name)
        # A name with two words that start with `lead` is shown at the first only.
        first = min((t for t in tokens if t.startswith(lead)), default=None)
        if first == record.token and all(any(t.startswith(w) for t in tokens) for w in words):
            if len(found) == limit:
                return found, _name_cursor(last)
            found.append(record.customer_id)
        last = record
    if read == NAME_SEARCH_READS and last is not None:
        return found, _name_cursor(last)
    return found, None


def _name_cursor(record: NameTokenRecord | None) -> str | None:
    return None if record is None else encode_cursor({"pk": {"S": record.pk}, "sk": {"S": record.sk}})


def related(record_class, merchant_id: str, customer_id: str, kind: str, *, limit: int | None = None,
            cursor: str | None = None, filter_condition=None) -> tuple[list, str | None]:
    """Records of one kind in a customer's item collection, newest first:
    one Query of gsi1 (`record_class` declares a CustomerCollection index
    named `customer_collection`). Without `limit`, all of them."""
    key = collection_pk(merchant_id, customer_id)
    start = _cursor(cursor, merchant_id, "gsi1pk", key)
    condition = record_class.gsi1sk.startswith(f"{kind}#")
    query = record_class.customer_collection.query(
        key, condition, filter_condition=filter_condition, scan_index_forward=False, last_evaluated_key=start,
        limit=None if limit is None else limit + 1,
    )
    if limit is None:
        return list(query), None
    return page(query, limit)


def _cursor(cursor: str | None, merchant_id: str, index_key: str, expected: str) -> dict | None:
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get(index_key, {}).get("S") != expected:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    return start


# ---------------------------------------------------------------------------
# Writes


def create_customer(record: CustomerRecord) -> None:
    """The customer, its external id (if any) and the words of its name,
    together or not at all; Conflict `duplicate_external_id` when another
    customer holds the external id."""
    try:
        with transaction(_attempt_token()) as write:
            write.save(record, condition=CustomerRecord.pk.does_not_exist())
            if record.external_id is not None:
                write.save(_external_id(record), condition=ExternalIdRecord.pk.does_not_exist())
            for token in name_tokens(record.name):
                write.save(_name_token(record.merchant_id, token, record.customer_id, record.name))
            if record.reseller_id is not None:
                from chalicelib.store.payees import book_entry

                write.save(book_entry(record.merchant_id, record.reseller_id, record.customer_id))
    except TransactWriteError as error:
        if is_condition_failure(error) and record.external_id is not None:
            _raise_external_id_taken(record.merchant_id, record.external_id)
        raise


# Fields a merchant edits, and those it may clear with null.
EDITABLE = ("name", "email", "country", "external_id", "locale", "tax_exempt", "metadata", "address", "vat_number",
            "currency")
CLEARABLE = ("external_id", "locale", "address", "vat_number", "currency")


def update_customer(record: CustomerRecord, changes: dict, updated_at: str) -> CustomerRecord:
    """Apply the merchant's `changes` to the customer as read in `record`.

    Written only if nobody changed the merchant's fields since (`version`),
    else Conflict `version_conflict`. A new external id is claimed and the
    old one released in the same transaction (Conflict
    `duplicate_external_id` when another customer holds it). Returns the
    customer as stored afterwards."""
    expected = int(record.version)
    actions = []
    for name, value in changes.items():
        if name not in EDITABLE:
            raise ValueError(f"{name} is not a field the merchant edits")
        attribute = getattr(CustomerRecord, name)
        if value is None:
            if name not in CLEARABLE:
                raise ValueError(f"{name} cannot be cleared")
            actions.append(attribute.remove())
        else:
            actions.append(attribute.set(value))
    if "email" in changes:
        actions.append(CustomerRecord.gsi2pk.set(email_pk(record.merchant_id, changes["email"])))
    actions += [CustomerRecord.version.set(expected + 1), CustomerRecord.updated_at.set(updated_at)]
    condition = CustomerRecord.pk.exists() & (CustomerRecord.version == expected)
    old_external = record.external_id
    new_external = changes.get("external_id", old_external)
    name = changes.get("name", record.name)
    tokens = name_tokens(name)
    try:
        with transaction(_attempt_token()) as write:
            write.update(record, actions=actions, condition=condition)
            # Every edit writes the name's words (a customer made before they
            # existed gets them here) and drops those of a former name.
            for token in tokens:
                write.save(_name_token(record.merchant_id, token, record.customer_id, name))
            for token in set(name_tokens(record.name)) - set(tokens):
                write.delete(NameTokenRecord(*NameTokenRecord.key(record.merchant_id, token, record.customer_id)))
            if new_external != old_external:
                if old_external is not None:
                    write.delete(
                        ExternalIdRecord(*ExternalIdRecord.key(record.merchant_id, old_external)),
                        condition=ExternalIdRecord.customer_id == record.customer_id,
                    )
                if new_external is not None:
                    write.save(
                        ExternalIdRecord(
                            *ExternalIdRecord.key(record.merchant_id, new_external), customer_id=record.customer_id
                        ),
                        condition=ExternalIdRecord.pk.does_not_exist(),
                    )
    except TransactWriteError as error:
        if not is_condition_failure(error):
            raise
        if new_external is not None and new_external != old_external:
            holder = customer_by_external_id(record.merchant_id, new_external)
            if holder is not None and holder.customer_id != record.customer_id:
                _raise_external_id_taken(record.merchant_id, new_external)
        raise Conflict("the customer was changed by another request; read it again", code="version_conflict") from error
    return get_customer(record.merchant_id, record.customer_id, consistent=True)


def set_default_card(merchant_id: str, customer_id: str, card: dict | None) -> CustomerRecord:
    """Make `card` the customer's default card (None: the customer has none).

    `card` = {"brand", "last4", "exp_month", "exp_year"[, "payment_method_id"]};
    `card_expiry` (`YYYY-MM`) moves with it, so the expiring-card scan finds
    it by month. Idempotent (the same card twice is the same state); a
    customer that does not exist is NotFound, never created."""
    record = CustomerRecord(*CustomerRecord.key(merchant_id, customer_id))
    if card is None:
        actions = [CustomerRecord.default_card.remove(), CustomerRecord.card_expiry.remove()]
    else:
        value = _card(card)
        actions = [
            CustomerRecord.default_card.set(value),
            CustomerRecord.card_expiry.set(f"{int(value.exp_year):04d}-{int(value.exp_month):02d}"),
        ]
    try:
        record.update(actions=actions, condition=CustomerRecord.pk.exists())
    except UpdateError as error:
        if is_condition_failure(error):
            raise NotFound(f"no customer {customer_id}") from None
        raise
    return record


def set_stripe_customer_id(merchant_id: str, customer_id: str, stripe_customer_id: str) -> CustomerRecord:
    """Record the customer's Stripe customer once.

    Idempotent: setting the id it already has changes nothing. Setting
    another one is Conflict `stripe_customer_exists` (two Stripe customers
    for one customer would split its cards): the caller uses the stored one."""
    record = CustomerRecord(*CustomerRecord.key(merchant_id, customer_id))
    condition = CustomerRecord.pk.exists() & (
        CustomerRecord.stripe_customer_id.does_not_exist() | (CustomerRecord.stripe_customer_id == stripe_customer_id)
    )
    try:
        record.update(actions=[CustomerRecord.stripe_customer_id.set(stripe_customer_id)], condition=condition)
    except UpdateError as error:
        if not is_condition_failure(error):
            raise
        existing = get_customer(merchant_id, customer_id, consistent=True)
        raise Conflict(
            f"customer {customer_id} already has the Stripe customer {existing.stripe_customer_id}",
            code="stripe_customer_exists",
        ) from None
    return record


def credit_balance_update(write, merchant_id: str, customer_id: str, currency: str, before: Decimal,
                          after: Decimal) -> None:
    """Add to the transaction `write` the move of the customer's credit in
    `currency` from `before` (as read) to `after`; the transaction fails if
    the balance is no longer `before` (another invoice used it meanwhile)."""
    if after < 0:
        raise ValueError("a credit balance is never negative")
    path = CustomerRecord.credit_balances[currency]
    if before == 0:
        condition = path.does_not_exist() | (path == format_amount(ZERO, currency))
    else:
        condition = path == format_amount(before, currency)
    write.update(
        CustomerRecord(*CustomerRecord.key(merchant_id, customer_id)),
        actions=[path.set(format_amount(after, currency))],
        condition=CustomerRecord.pk.exists() & condition,
    )


def _card(card: dict) -> CardAttribute:
    unknown = set(card) - {"brand", "last4", "exp_month", "exp_year", "payment_method_id"}
    if unknown:
        raise ValueError(f"unknown card fields {sorted(unknown)}")
    month, year = card["exp_month"], card["exp_year"]
    if not (isinstance(month, int) and 1 <= month <= 12 and isinstance(year, int) and 2000 <= year <= 9999):
        raise ValueError("exp_month is 1..12 and exp_year a four-digit year")
    last4 = str(card["last4"])
    if len(last4) != 4 or not last4.isdigit():
        raise ValueError("last4 is four digits")
    return CardAttribute(
        brand=str(card["brand"]), last4=last4, exp_month=month, exp_year=year,
        payment_method_id=card.get("payment_method_id"),
    )


def _external_id(record: CustomerRecord) -> ExternalIdRecord:
    return ExternalIdRecord(
        *ExternalIdRecord.key(record.merchant_id, record.external_id), customer_id=record.customer_id
    )


def _name_token(merchant_id: str, token: str, customer_id: str, name: str) -> NameTokenRecord:
    return NameTokenRecord(*NameTokenRecord.key(merchant_id, token, customer_id), customer_id=customer_id, name=name)


def _raise_external_id_taken(merchant_id: str, external_id: str):
    holder = customer_by_external_id(merchant_id, external_id)
    who = f"customer {holder.customer_id}" if holder else "another customer"
    raise Conflict(
        f"external_id: {who} already has the external id {external_id!r}",
        param="external_id",
        code="duplicate_external_id",
    )


def _attempt_token() -> str:
    # One token per attempt: a transaction the SDK retries after a lost
    # answer is not applied twice.
    return uuid.uuid4().hex
