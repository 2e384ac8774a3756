"""/payees: resellers and licensors, their rules, resellers' API keys, and
their monthly statements (issue, paid, PDF, CSV)."""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.api.fields import STRICT, Code, Email, Name
from chalicelib.api.http import Call, endpoint, listing, pdf_response, require_accept
from chalicelib.domain.catalog import Percent, Price
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.whole_numbers import count_field
from chalicelib.services import payees, statements

blueprint = Blueprint(__name__)

MAX_RULES = 20
CodeList = Annotated[list[Code], Field(max_length=50)]
BASES = ("percent", "per_unit", "flat_per_new_subscription")


class AppliesTo(BaseModel):
    model_config = STRICT

    offer_codes: CodeList | None = None
    components: CodeList | None = None


class RuleBody(BaseModel):
    model_config = STRICT

    applies_to: AppliesTo = AppliesTo()
    percent: Percent | None = None
    per_unit: Price | None = None
    flat_per_new_subscription: Price | None = None
    first_months: count_field(1, 1200) | None = None
    then_percent: Percent | None = None

    def checked(self, index: int) -> dict:
        """The rule as stored (decimal strings); a 400 naming the field of what does not hold."""
        where = f"rules[{index}]"
        given = [name for name in BASES if getattr(self, name) is not None]
        if len(given) != 1:
            field = given[1] if len(given) > 1 else "percent"
            raise InvalidRequest(f"{where}.{field}: a rule takes exactly one of {', '.join(BASES)}",
                                 param=f"{where}.{field}")
        if self.then_percent is not None and self.first_months is None:
            raise InvalidRequest(f"{where}.first_months: then_percent applies after first_months",
                                 param=f"{where}.first_months")
        if self.first_months is not None and self.percent is None:
            raise InvalidRequest(f"{where}.first_months: only a percent rule has first months",
                                 param=f"{where}.first_months")
        rule = self.model_dump(mode="json", exclude_none=True)
        rule["applies_to"] = self.applies_to.model_dump(exclude_none=True)
        return rule


class NewPayee(BaseModel):
    model_config = STRICT

    kind: Literal["reseller", "licensor"]
    name: Name
    email: Email
    rules: Annotated[list[RuleBody], Field(min_length=1, max_length=MAX_RULES)]


class Payout(BaseModel):
    model_config = STRICT

    reference: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Empty(BaseModel):
    model_config = STRICT


# -- answers (for the OpenAPI document) ----------------------------------------------------

Time = str


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class _List(_Answer):
    has_more: bool
    next_cursor: str | None


class Payee(_Answer):
    id: str
    object: Literal["payee"]
    kind: Literal["reseller", "licensor"]
    name: str
    email: str
    rules: list[dict]
    api_keys: list[dict]
    created_at: Time


class PayeeList(_List):
    data: list[Payee]


class ResellerKey(_Answer):
    prefix: str
    api_key: str = Field(description="shown this once")
    reseller_id: str
    created_at: Time


class StatementLine(_Answer):
    kind: Literal["accrual", "reversal"]
    invoice_id: str
    invoice_number: str | None
    credit_note_id: str | None
    credit_note_number: str | None
    invoice_line_id: str | None = Field(description="null for a flat amount per new subscription")
    description: str
    base_amount: str
    parts: list[dict]
    amount: str
    currency: str


class StatementInvoice(_Answer):
    invoice_id: str
    invoice_number: str | None
    currency: str
    total: str


class Statement(_Answer):
    object: Literal["statement"]
    payee_id: str
    month: str
    status: Literal["draft", "issued", "paid"]
    number: str | None
    issued_at: Time | None
    paid_at: Time | None
    reference: str | None
    totals: dict[str, str]
    total: str | None
    currency: str | None
    invoices: list[StatementInvoice]
    lines: list[StatementLine]


# -- routes ----------------------------------------------------------------------------


@endpoint(blueprint, "/payees", methods=("POST",), status=201, response="Payee")
def create_payee(call: Call):
    body = call.body(NewPayee)
    fields = body.model_dump(exclude={"rules"})
    fields["rules"] = [rule.checked(index) for index, rule in enumerate(body.rules)]
    return payees.create_payee(call.merchant_id, fields)


@endpoint(blueprint, "/payees", response="PayeeList")
def list_payees(call: Call):
    items, next_cursor = payees.list_payees(call.merchant_id, limit=call.limit(), cursor=call.query("cursor"))
    return listing(items, next_cursor)


@endpoint(blueprint, "/payees/{payee_id}", response="Payee")
def get_payee(call: Call, payee_id: str):
    return payees.get_payee(call.merchant_id, payee_id)


@endpoint(blueprint, "/payees/{payee_id}/api-keys", methods=("POST",), status=201, response="ResellerKey")
def create_reseller_key(call: Call, payee_id: str):
    call.body(Empty)
    return payees.create_reseller_key(call.merchant_id, payee_id)


@endpoint(blueprint, "/payees/{payee_id}/api-keys/{prefix}", methods=("DELETE",), response="RevokedKey")
def revoke_reseller_key(call: Call, payee_id: str, prefix: str):
    return payees.revoke_reseller_key(call.merchant_id, payee_id, prefix)


@endpoint(blueprint, "/payees/{payee_id}/statements", response="Statement")
def get_statement(call: Call, payee_id: str):
    return statements.get_statement(call.merchant_id, payee_id, call.query("month"))


@endpoint(blueprint, "/payees/{payee_id}/statements/{month}/issue", methods=("POST",), response="Statement")
def issue_statement(call: Call, payee_id: str, month: str):
    call.body(Empty)
    return statements.issue_statement(call.merchant_id, payee_id, month)


@endpoint(blueprint, "/payees/{payee_id}/statements/{month}/paid", methods=("POST",), response="Statement")
def statement_paid(call: Call, payee_id: str, month: str):
    body = call.body(Payout)
    return statements.mark_paid(call.merchant_id, payee_id, month, body.reference)


@endpoint(blueprint, "/payees/{payee_id}/statements/{month}/pdf", response="application/pdf")
def statement_pdf(call: Call, payee_id: str, month: str):
    return pdf_response(call, "the statement as a PDF",
                        lambda: statements.statement_pdf(call.merchant_id, payee_id, month))


CSV = "text/csv"


@endpoint(blueprint, "/payees/{payee_id}/statements/{month}/csv", response=CSV)
def statement_csv(call: Call, payee_id: str, month: str):
    require_accept(call, CSV, "the statement as CSV")
    text, filename = statements.statement_csv(call.merchant_id, payee_id, month)
    return Response(body=text.encode(), status_code=200, headers={
        "Content-Type": f"{CSV}; charset=utf-8", "Content-Disposition": f'attachment; filename="{filename}"'})
