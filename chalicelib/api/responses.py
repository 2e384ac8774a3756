"""The answers of the API as pydantic models, for the OpenAPI document only.

Services build their answers as dicts (they are the one home of what an
object holds); these models describe them so that the published document,
and schemathesis' check of every answer against it, say the same thing. A
route names its model with `endpoint(..., response="Customer")`: a model of
the view's own module, or of this one; this module is imported only when the
document is built, never on a request's path.

Objects list every field they always carry (required, nullable where the
field can be null) and leave room for fields added later (additional
properties are allowed, as a merchant's client must allow them).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Time = str  # ISO 8601, UTC, with `Z`
Money = str  # a decimal string in major units ("12.50")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Answer):
    type: str = Field(examples=["invalid_request_error"])
    code: str = Field(examples=["invalid_request"])
    message: str
    param: str | None = Field(description="the field at fault, e.g. components[1].tiers[0].up_to")
    request_id: str = Field(description="quote it to support; the logs carry the same id")


class Error(BaseModel):
    """API.md's error object: every 4xx and 5xx answer of a JSON route."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


class Health(_Answer):
    status: Literal["ok"]
    stage: str
    version: str


# -- merchants ---------------------------------------------------------------------------


class KeyPrefix(_Answer):
    prefix: str


class Address(_Answer):
    """Stripe's address shape."""

    line1: str
    line2: str | None = None
    postal_code: str
    city: str
    state: str | None = None
    country: str


class Merchant(_Answer):
    id: str = Field(examples=["mer_01jd3k5r8v6m2q9w4x7y0z1a2b"])
    object: Literal["merchant"]
    name: str
    default_currency: str
    alert_emails: list[str]
    tax_rates: dict[str, str]
    accounts: dict[str, str] = Field(description="account number per role of the accounting exports "
                                                 "(the French chart of accounts unless set)")
    invoice_prefix: str
    dunning_retry_days: list[int]
    locale: str
    timezone: str
    price_lists: dict[str, str] | None = Field(None, description="country -> the currency its customers pay in")
    fx_rates: dict[str, str] | None = Field(None, description="one unit of a currency in `default_currency`, "
                                                              "for the reports' converted total")
    fx_rates_set_at: dict[str, Time] | None = Field(None, description="when each rate was set")
    legal_name: str | None = Field(description="the registered name its invoices carry (else `name`)")
    address: Address | None
    siren: str | None = Field(description="French companies: the 9-digit SIREN")
    company_id: str | None = Field(description="outside France: the company's registration number")
    vat_number: str | None
    legal_form: str | None = Field(examples=["SAS"])
    share_capital: Money | None = Field(description="in `default_currency`")
    registration: str | None = Field(examples=["RCS Paris B 732 829 320"])
    api_keys: list[KeyPrefix]
    created_at: Time


class MerchantWithKey(Merchant):
    api_key: str = Field(description="the merchant's first key, shown only this once")


class ApiKey(_Answer):
    prefix: str
    api_key: str = Field(description="shown only this once")
    created_at: Time


class RevokedKey(_Answer):
    prefix: str
    deleted: Literal[True]


class StaffUser(_Answer):
    object: Literal["staff_user"]
    email: str
    role: Literal["owner", "staff", "viewer"]
    created_at: Time


class RemovedStaffUser(_Answer):
    email: str
    deleted: Literal[True]


# -- offers ------------------------------------------------------------------------------


class OfferVersionRef(_Answer):
    version: int
    effective_from: Time
    canceled: bool | None = Field(None, description="true for a price change canceled before it took effect")


class OfferObject(_Answer):
    id: str
    object: Literal["offer"]
    code: str
    name: str
    currency: str
    billing_interval: str
    interval_count: int
    trial_days: int
    commitment_months: int
    ladder: str | None
    tier_rank: int | None
    entitlements: list[str]
    portal_upgrades: list[str] = Field(description="the offers the customer portal may switch to")
    components: list[dict[str, Any]] = Field(description="the latest version's components, as posted")
    options: list[dict[str, Any]] = Field(description="the latest version's options, as posted")
    currency_options: dict[str, dict[str, Any]] | None = Field(
        None, description="the latest version's prices in other currencies ({\"USD\": {\"components\", "
                          "\"options\"}}), present when it has some")
    status: Literal["active", "archived"]
    version: int
    versions: list[OfferVersionRef]
    created_at: Time


class PriceChange(_Answer):
    id: str = Field(examples=["prc_01jd3k5r8v6m2q9w4x7y0z1a2b"])
    object: Literal["price_change"]
    offer_id: str
    version: int = Field(description="the offer version it scheduled")
    effective_at: Time
    existing: Literal["grandfather", "migrate"]
    notice_days: int
    status: Literal["scheduled", "effective", "canceled"]
    notice_at: Time | None = Field(description="when the customers are e-mailed (migrate only)")
    notice_sent_at: Time | None
    canceled_at: Time | None
    created_at: Time


# -- customers ---------------------------------------------------------------------------


class Card(_Answer):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class Customer(_Answer):
    id: str
    object: Literal["customer"]
    name: str
    email: str
    country: str
    external_id: str | None
    locale: str | None
    tax_exempt: bool
    address: Address | None
    vat_number: str | None = Field(description="a business customer's VAT number; one of another EU member "
                                               "state than the merchant's makes its invoices reverse-charge")
    metadata: dict[str, str]
    currency: str | None = Field(None, description="the currency its new subscriptions bill in, when set "
                                                   "(else the merchant's price list for its country)")
    default_payment_method: Card | None
    credit_balances: dict[str, Money] = Field(description="credit per currency, used first by the next invoices")
    reseller_id: str | None = Field(None, description="the reseller (a payee) that brought the customer")
    created_at: Time


# -- subscriptions -----------------------------------------------------------------------


class Subscription(_Answer):
    id: str
    object: Literal["subscription"]
    customer_id: str
    status: Literal["incomplete", "trialing", "active", "past_due", "canceled"]
    paused: bool
    cancel_at_period_end: bool
    offer_id: str
    offer_version: int
    currency: str
    options: list[str]
    price_overrides: dict[str, Any] | None
    current_period_start: Time | None
    current_period_end: Time | None
    commitment_ends_at: Time | None
    created_at: Time


class HistoryEntry(_Answer):
    at: Time
    type: str
    actor: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None = Field(default=None, description="why, when the change was given one")


class AuditEntry(_Answer):
    id: str = Field(examples=["aud_01jd3k5r8v6m2q9w4x7y0z1a2b"])
    object: Literal["audit_entry"]
    entity_type: str = Field(description="merchant, offer, offer_version, customer, subscription, invoice, "
                             "credit_note, device or staff_user")
    entity_id: str
    customer_id: str | None = Field(description="the customer the entity belongs to, if any")
    action: Literal["created", "updated", "deleted"]
    actor: str = Field(description="key:<prefix>, user:<email>, operator, customer, stripe or system:<job>",
                       examples=["key:sk_Ab3dE6gH"])
    at: Time
    before: dict[str, Any] = Field(description="the attributes that changed, as they were")
    after: dict[str, Any] = Field(description="the same attributes, as they became")


class InvoiceLine(_Answer):
    id: str | None = Field(default=None, description="il_…: names the line in a credit note (issued invoices)")
    kind: str = Field(description="fee, option, usage, minimum, proration, adjustment or credit")
    component: str | None
    description: str
    quantity: str | None
    unit_amount: str | None
    amount: Money
    period_start: Time | None
    period_end: Time | None
    label: str | None = Field(default=None, description="the line in the customer's language: the offer's and "
                                                        "the component's names, and what part of the price it is")
    offer_code: str | None = None
    offer_name: str | None = None
    component_name: str | None = Field(default=None, description="the component's or option's name")
    unit: str | None = Field(default=None, description="day, week, month, year, period, unit, block, hour or amount")


class TaxLine(_Answer):
    rate: str
    amount: Money


class UpcomingInvoice(_Answer):
    object: Literal["invoice"]
    status: Literal["upcoming"]
    customer_id: str
    subscription_id: str
    currency: str
    lines: list[InvoiceLine]
    subtotal: Money
    tax: list[TaxLine]
    total: Money
    amount_due: Money


class SubscriptionUsage(_Answer):
    object: Literal["usage"]
    subscription_id: str
    period_start: Time
    period_end: Time
    invoiced: bool
    meters: dict[str, dict[str, Any]] = Field(description="per meter, the period's aggregated quantity")


# -- customers, as one page ----------------------------------------------------------------


class CustomerRelationship(Customer):
    """The whole relationship on one page (API.md)."""

    subscriptions: list[Subscription]
    latest_invoices: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    open_alerts: list[dict[str, Any]]
    currency: str = Field(description="the customer's billing currency: its latest subscription's (or invoice's), "
                                      "else the merchant's default")
    credit_balance: Money = Field(description="credit in `currency`, used first by the next invoices")
    payments: list[dict[str, Any]] = Field(description="payments of every method (card, cash, cheque, "
                                                       "bank_transfer), newest first")
    credit_notes: list[dict[str, Any]] = Field(description="the latest credit notes, newest first")


class PaymentLink(_Answer):
    url: str
    expires_at: Time


class CardSaved(_Answer):
    default_payment_method: Card


# -- devices and usage -------------------------------------------------------------------


class Device(_Answer):
    id: str
    object: Literal["device"]
    device_id: str
    subscription_id: str
    customer_id: str
    attached_at: Time
    counters: dict[str, dict[str, Any]] = Field(description="the last accepted reading per counter")
    last_reading: dict[str, Any] | None
    late_readings: int
    counter_resets: int
    attachments: list[dict[str, Any]]


class UsageRecorded(_Answer):
    accepted: int
    duplicates: int


# -- invoices ----------------------------------------------------------------------------


class PaymentAttempt(_Answer):
    at: Time
    status: str
    payment_intent: str | None
    failure_code: str | None


class CreditNoteRef(_Answer):
    id: str
    number: str
    total: Money
    refund: Literal["card", "credit_balance", "none"]
    created_at: Time


class OfflinePaymentEntry(_Answer):
    id: str = Field(examples=["pay_01jd3k5r8v6m2q9w4x7y0z1a2b"])
    method: str = Field(description="cash, cheque or bank_transfer (card on the customer page)")
    amount: Money = Field(description="what was received")
    applied: Money = Field(description="what of it paid the invoice")
    to_credit_balance: Money = Field(description="what of it went to the customer's credit balance")
    reference: str | None
    received_at: Time
    created_at: Time


class Invoice(_Answer):
    id: str
    object: Literal["invoice"]
    number: str | None
    status: Literal["draft", "open", "paid", "void", "uncollectible"]
    customer_id: str
    subscription_id: str | None
    currency: str
    period_start: Time | None
    period_end: Time | None
    lines: list[InvoiceLine]
    subtotal: Money
    tax: list[TaxLine]
    credit_applied: Money
    total: Money
    amount_paid: Money
    amount_due: Money
    payment_attempts: list[PaymentAttempt]
    next_payment_attempt: Time | None
    amount_credited: Money = Field(description="the total of its credit notes")
    credit_notes: list[CreditNoteRef]
    payments: list[OfflinePaymentEntry] = Field(description="payments recorded offline (cash, cheque, transfer)")
    created_at: Time


class Payment(OfflinePaymentEntry):
    """An offline payment, as recorded, with the invoice as it stands after it."""

    object: Literal["payment"]
    currency: str
    invoice_id: str
    customer_id: str
    invoice: Invoice


class CreditNoteLineAnswer(_Answer):
    invoice_line_id: str | None = Field(description="the invoice line credited; null for a credit note of an amount")
    description: str
    amount: Money = Field(description="pre-tax")


class CreditNote(_Answer):
    id: str = Field(examples=["cn_01jd3k5r8v6m2q9w4x7y0z1a2b"])
    object: Literal["credit_note"]
    number: str = Field(examples=["ODCN2026-000001"])
    status: Literal["issued"]
    type: Literal["pre_payment", "post_payment"] = Field(
        description="pre_payment: it lowered an open invoice's amount due; post_payment: on a paid invoice")
    invoice_id: str
    invoice_number: str | None
    customer_id: str
    subscription_id: str | None
    currency: str
    reason: Literal["duplicate", "product_unsatisfactory", "order_change", "goodwill"]
    memo: str | None
    lines: list[CreditNoteLineAnswer]
    subtotal: Money
    tax: list[TaxLine]
    total: Money
    reverse_charge: bool
    refund: Literal["card", "credit_balance", "none"]
    refund_status: Literal["pending", "succeeded", "failed", "canceled"] | None = Field(
        description="card refunds only")
    stripe_refund_id: str | None
    refund_failure_code: str | None
    created_at: Time


# -- reports -----------------------------------------------------------------------------


class CurrencyFigures(_Answer):
    mrr: Money = Field(description="mrr_recurring + mrr_usage")
    mrr_recurring: Money = Field(description="recurring fees of live subscriptions at the month's end, per month")
    mrr_usage: Money = Field(description="average usage charges of the month and the two before it")
    arr: Money = Field(description="12 x mrr")
    active_subscriptions: int = Field(description="live (active or past_due, not paused) at the month's end")
    active_subscriptions_at_start: int
    new_subscriptions: int
    churned_subscriptions: int
    churn_rate: str | None = Field(description="churned / active at the month's start; null when none was active")
    invoiced: Money
    collected: Money
    outstanding: Money = Field(description="amount due on open invoices at the month's end")
    usage_charges: Money
    usage: dict[str, str] = Field(description="per meter, the quantity used in the month")


class FxRateUsed(_Answer):
    rate: str = Field(examples=["0.92"], description="one unit of the currency in the merchant's")
    set_at: Time | None


class ConvertedTotal(_Answer):
    currency: str = Field(description="the merchant's default_currency")
    mrr: Money
    mrr_recurring: Money
    mrr_usage: Money
    arr: Money
    invoiced: Money
    collected: Money
    outstanding: Money
    usage_charges: Money
    converted: list[str] = Field(description="currencies converted at the merchant's fx_rates")
    not_converted: list[str] = Field(description="currencies without a rate: left out of the total")
    rates: dict[str, FxRateUsed]


class ReportSummary(_Answer):
    object: Literal["report"]
    month: str = Field(examples=["2026-10"])
    currencies: dict[str, CurrencyFigures]
    total: ConvertedTotal | None = Field(None, description="present when a currency other than the merchant's "
                                                           "has figures: the sums in default_currency")


class RevenueFigures(_Answer):
    recognized: Money = Field(description="revenue recognised in the month (net of tax): each invoice line "
                                          "spread by day over its service period, credit notes reversing it")
    invoiced: Money = Field(description="invoice lines finalized in the month, net of tax")
    credited: Money = Field(description="credit notes (and voided invoices) of the month, net of tax")
    deferred_at_start: Money = Field(description="invoiced - credited - recognised before the month")
    deferred: Money = Field(description="deferred revenue at the month's end")


class RevenueReport(_Answer):
    object: Literal["revenue_report"]
    month: str = Field(examples=["2026-11"])
    currencies: dict[str, RevenueFigures]


class UsageBucket(_Answer):
    quantity: str
    subscriptions: list[dict[str, str]] = Field(description="[{subscription_id, quantity}]")


class UsageReport(_Answer):
    object: Literal["usage_report"]
    meter: str
    group_by: Literal["day", "month"]
    data: list[UsageBucket] = Field(description="per day (`day`) or month (`month`), oldest first")


# -- webhooks and the local stage ----------------------------------------------------------


class WebhookReceived(_Answer):
    handled: bool


class Clock(_Answer):
    now: Time


class ClockMoved(Clock):
    jobs: Any = Field(description="what each scheduled job that fell due did")


class OpenApiDocument(_Answer):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


# -- lists ---------------------------------------------------------------------------------


class _List(_Answer):
    has_more: bool
    next_cursor: str | None


class StaffUserList(_List):
    data: list[StaffUser]


class OfferList(_List):
    data: list[OfferObject]


class PriceChangeList(_List):
    data: list[PriceChange]


class CustomerList(_List):
    data: list[Customer]


class SubscriptionList(_List):
    data: list[Subscription]


class HistoryList(_List):
    data: list[HistoryEntry]


class AuditEntryList(_List):
    data: list[AuditEntry]


class InvoiceList(_List):
    data: list[Invoice]


class CreditNoteList(_List):
    data: list[CreditNote]
