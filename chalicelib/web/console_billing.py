"""The console's page of one subscription, for a customer who is not online:
its terms, current period, commitment, scheduled change or cancellation,
history and upcoming invoice, and the actions staff take for the customer:
change the offer or options (now or at the period end), pause, resume,
cancel (now or at the period end, with a reason), reactivate, grant an
option free or a credit as a compensation (with a reason), e-mail a
payment link. The invoices' pages are console_invoices.py; both share the
form handling of billing_forms.py.

Every action calls the service the API calls, as the signed-in member
(`user:<email>` in the history), its form checked by the API's request
model, so an error shows beside the input it is about with the API's
words. Each form carries a one-time token generated when it is rendered:
the post runs once (the API's Idempotency-Key mechanism,
`http.once_per_key`), a second post of the same form is answered with the
first one's answer. What the state refuses (409) is said on the page.
"""
from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import urlencode

from chalice import Blueprint

from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.web.billing_forms import (
    FieldProblem, decimal_input, form_token, left_to_credit, new_form_token, refusal, run_form, valid,
)
from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

HISTORY_SHOWN = 20
OFFERS_LISTED = 100
CANCEL_REASONS = ("customer_request", "moved_away", "unhappy", "other")
# Confirmations after an action (`?done=`).
NOTICES = ("billing_done_changed", "billing_done_change_scheduled", "billing_done_change_unscheduled",
           "billing_done_paused", "billing_done_resumed", "billing_done_canceled", "billing_done_cancel_scheduled",
           "billing_done_reactivated",
           "billing_done_option_free", "billing_done_option_free_scheduled", "billing_done_credit",
           "billing_done_link_sent", "billing_done_link_queued")
# Fields of a history entry shown by name, in this order.
HISTORY_FIELDS = ("status", "offer_id", "offer_version", "options", "price_overrides", "paused",
                  "cancel_at_period_end", "cancel_at", "cancellation_comment", "pending_change")
# Where each form shows an error the API names by `param` (its first step):
# the input of that name in the form, else its first input.
FORMS = {
    "change": {"offer_id": "offer_id", "options": "options", "effective": "effective",
               "price_overrides": "offer_id"},
    "cancel": {"at_period_end": "cancel_when", "reason": "cancel_comment"},
    "free": {"options": "free_option", "price_overrides": "free_option", "offer_id": "free_option",
             "effective": "free_effective", "reason": "free_reason"},
    "credit": {"amount": "credit_amount", "memo": "credit_reason", "invoice_id": "credit_amount"},
    "link": {},
}


@page(blueprint, "/console/subscriptions/{subscription_id}")
def subscription_page(visit: Visit, subscription_id: str):
    done = visit.query("done")
    return _page(visit, subscription_id, notice=done if done in NOTICES else None)


def _page(visit: Visit, subscription_id: str, *, form: str | None = None, errors: dict | None = None,
          problem: str | None = None, values: dict | None = None, notice: str | None = None, status: int = 200):
    from chalicelib.services import customers, invoices, subscriptions
    from chalicelib.web.console_customer_page import actor_label

    merchant_id = visit.merchant_id
    subscription = subscriptions.get_subscription(merchant_id, subscription_id)
    customer = customers.customer_details(merchant_id, subscription["customer_id"])
    offer = _offer(merchant_id, subscription["offer_id"])
    pending = subscription["pending_change"]
    pending_offer = offer if not pending or pending["offer_id"] == subscription["offer_id"] else _offer(
        merchant_id, pending["offer_id"])
    history, history_next = subscriptions.subscription_history(
        merchant_id, subscription_id, limit=HISTORY_SHOWN, cursor=visit.query("history_cursor") or None,
        newest_first=True)
    try:
        upcoming, upcoming_problem = subscriptions.upcoming_invoice(merchant_id, subscription_id), None
    except Conflict as refused:
        upcoming, upcoming_problem = None, refusal(visit, refused)
    may_serve = visit.session.may("serve")
    live = subscription["status"] != "canceled"
    paid, _ = invoices.list_invoices(merchant_id, customer_id=customer["id"], subscription_id=None, status="paid",
                                     limit=1, cursor=None)
    credit_invoice = paid[0] if paid else None
    here = f"/console/subscriptions/{subscription_id}"
    change_offers = _change_offers(merchant_id, subscription, offer) if may_serve and live else []
    # The history names offers by their names where the page knows them.
    known = [o for o in (offer, pending_offer, *change_offers) if o]
    offer_names = {o["id"]: o["name"] for o in known}
    # Options by their names too; an option code the subscription's own
    # offer has is named as that offer names it.
    offer_names.update({("option", option["code"]): option.get("name") or option["code"]
                        for o in reversed(known) for option in o.get("options", [])})
    return render(
        visit, "subscription.html", status=status, subscription=subscription, customer=customer, offer=offer,
        tz=subscription["timezone"] or "UTC", notice=notice, problem=problem, form=form, errors=errors or {},
        values=values or {}, options=_options(subscription["options"], subscription["price_overrides"], offer),
        overrides=_overrides(subscription["price_overrides"], offer),
        pending=pending and {**pending, "offer_name": (pending_offer or {}).get("name") or pending["offer_id"],
                             "options_shown": _options(pending["options"], pending["price_overrides"], pending_offer)},
        cancel_reason=cancel_comment_parts(subscription["cancellation_comment"]),
        history=[_entry(visit, entry, actor_label, subscription["timezone"] or "UTC", offer_names) for entry in history],
        history_next=f"{here}?{urlencode({'history_cursor': history_next})}#h-history" if history_next else None,
        upcoming=upcoming, upcoming_problem=upcoming_problem, may_serve=may_serve and live,
        change_offers=change_offers,
        free_choices=_free_choices(subscription, offer), credit_invoice=credit_invoice,
        credit_left=left_to_credit(credit_invoice) if credit_invoice else None,
        cancel_reasons=CANCEL_REASONS, new_token=new_form_token,
    )


# ---------------------------------------------------------------------------
# Actions


@page(blueprint, "/console/subscriptions/{subscription_id}/change", methods=("POST",), action="serve")
def change_subscription_terms(visit: Visit, subscription_id: str):
    from chalicelib.api.subscriptions import SubscriptionChange
    from chalicelib.services import subscriptions

    def run():
        current = subscriptions.get_subscription(visit.merchant_id, subscription_id)
        offer_id = visit.form("offer_id") or current["offer_id"]
        chosen = [v.partition(":")[2] for v in visit.form_list("options") if v.partition(":")[0] == offer_id]
        body = {"options": chosen, "effective": visit.form("effective")}
        if offer_id != current["offer_id"]:
            body["offer_id"] = offer_id
        model = valid(SubscriptionChange, body)
        changed = subscriptions.change_subscription(visit.merchant_id, subscription_id, model.changes(),
                                                    visit.session.actor)
        if model.effective == "immediately":
            return "billing_done_changed"
        # Scheduling the current terms removes the change scheduled.
        return "billing_done_change_scheduled" if changed["pending_change"] else "billing_done_change_unscheduled"

    return _act(visit, subscription_id, "change", run)


@page(blueprint, "/console/subscriptions/{subscription_id}/pause", methods=("POST",), action="serve")
def pause_subscription_now(visit: Visit, subscription_id: str):
    return _state_action(visit, subscription_id, "pause_subscription", "billing_done_paused")


@page(blueprint, "/console/subscriptions/{subscription_id}/resume", methods=("POST",), action="serve")
def resume_subscription_now(visit: Visit, subscription_id: str):
    return _state_action(visit, subscription_id, "resume_subscription", "billing_done_resumed")


@page(blueprint, "/console/subscriptions/{subscription_id}/reactivate", methods=("POST",), action="serve")
def undo_scheduled_cancellation(visit: Visit, subscription_id: str):
    return _state_action(visit, subscription_id, "reactivate_subscription", "billing_done_reactivated")


def _state_action(visit: Visit, subscription_id: str, use_case: str, done: str):
    """Pause, resume, reactivate: the service's use case of that name, no fields."""
    from chalicelib.services import subscriptions

    def run():
        getattr(subscriptions, use_case)(visit.merchant_id, subscription_id, visit.session.actor)
        return done

    return _act(visit, subscription_id, None, run)


@page(blueprint, "/console/subscriptions/{subscription_id}/cancel", methods=("POST",), action="serve")
def cancel_with_reason(visit: Visit, subscription_id: str):
    from chalicelib.api.subscriptions import Cancellation
    from chalicelib.services import subscriptions

    def run():
        when, reason, comment = visit.form("cancel_when"), visit.form("cancel_reason"), visit.form("cancel_comment")
        if when not in ("period_end", "now"):
            raise InvalidRequest("at_period_end: choose when the cancellation takes effect", param="at_period_end")
        if reason not in CANCEL_REASONS:
            raise FieldProblem("cancel_reason", text(visit.lang, "billing_choose_reason"))
        # The API's free-text reason (the subscription's cancellation_comment):
        # the reason's code first, so that it reads the same in any language.
        model = valid(Cancellation, {"at_period_end": when == "period_end",
                                     "reason": f"{reason}: {comment}" if comment else reason})
        subscriptions.cancel_subscription(visit.merchant_id, subscription_id, at_period_end=model.at_period_end,
                                          reason=model.reason, actor=visit.session.actor)
        return "billing_done_cancel_scheduled" if model.at_period_end else "billing_done_canceled"

    return _act(visit, subscription_id, "cancel", run)


@page(blueprint, "/console/subscriptions/{subscription_id}/free-option", methods=("POST",), action="serve")
def grant_free_option(visit: Visit, subscription_id: str):
    """An option granted free: chosen, with its price overridden to zero
    (`price_overrides` by option code), the reason on the history entry."""
    from chalicelib.api.subscriptions import SubscriptionChange
    from chalicelib.domain.money import ZERO, format_amount
    from chalicelib.services import subscriptions

    def run():
        current = subscriptions.get_subscription(visit.merchant_id, subscription_id)
        code, effective, reason = visit.form("free_option"), visit.form("free_effective"), visit.form("free_reason")
        if not code:
            raise FieldProblem("free_option", text(visit.lang, "billing_choose_option"))
        if not reason:
            raise FieldProblem("free_reason", text(visit.lang, "billing_reason_required"))
        # At the period end, on top of the change already scheduled for then (if any).
        base = current["pending_change"] if effective == "period_end" and current["pending_change"] else current
        options = list(base["options"] or [])
        overrides = dict(base["price_overrides"] or {})
        own = (overrides.get(code) or {}).get("amount")
        if code in options and own is not None and not Decimal(own):
            raise FieldProblem("free_option", text(visit.lang, "billing_option_already_free"))
        overrides[code] = {"amount": format_amount(ZERO, current["currency"])}
        body = {"options": options if code in options else [*options, code], "price_overrides": overrides,
                "effective": effective, "reason": reason}
        if base["offer_id"] != current["offer_id"]:
            body["offer_id"] = base["offer_id"]
        model = valid(SubscriptionChange, body)
        subscriptions.change_subscription(visit.merchant_id, subscription_id, model.changes(), visit.session.actor,
                                          reason=model.reason)
        return "billing_done_option_free_scheduled" if effective == "period_end" else "billing_done_option_free"

    return _act(visit, subscription_id, "free", run)


@page(blueprint, "/console/subscriptions/{subscription_id}/credit", methods=("POST",), action="serve")
def grant_credit(visit: Visit, subscription_id: str):
    """A credit as a compensation: a `goodwill` credit note on the
    customer's latest paid invoice, to its credit balance (the next
    invoices use it first), the reason as its memo."""
    from chalicelib.api.credit_notes import NewCreditNote
    from chalicelib.services import credit_notes, invoices, subscriptions

    def run():
        current = subscriptions.get_subscription(visit.merchant_id, subscription_id)
        reason = visit.form("credit_reason")
        try:
            invoice = invoices.get_invoice(visit.merchant_id, visit.form("credit_invoice_id"))
        except NotFound:
            invoice = None
        if invoice is None or invoice["customer_id"] != current["customer_id"] or invoice["status"] != "paid":
            raise FieldProblem("credit_amount", text(visit.lang, "billing_credit_no_paid_invoice"))
        if not reason:
            raise FieldProblem("credit_reason", text(visit.lang, "billing_reason_required"))
        model = valid(NewCreditNote, {"amount": decimal_input(visit.form("credit_amount")), "reason": "goodwill",
                                      "refund": "credit_balance", "memo": reason})
        credit_notes.create_credit_note(visit.merchant_id, invoice["id"], reason="goodwill", refund="credit_balance",
                                        memo=model.memo, lines=None, amount=model.amount,
                                        request_key=form_token(visit))
        return "billing_done_credit"

    return _act(visit, subscription_id, "credit", run)


@page(blueprint, "/console/subscriptions/{subscription_id}/payment-link", methods=("POST",), action="serve")
def e_mail_subscription_payment_link(visit: Visit, subscription_id: str):
    """E-mail the customer a payment link: about the subscription's oldest
    open invoice when it has one, else to save a card."""
    from chalicelib.services import invoices, payment_link_mail, subscriptions

    def run():
        current = subscriptions.get_subscription(visit.merchant_id, subscription_id)
        unpaid = invoices.open_invoices_of_subscription(visit.merchant_id, current["customer_id"], subscription_id)
        sent = payment_link_mail.send_payment_link(visit.merchant_id, current["customer_id"],
                                                   request_key=form_token(visit), invoice=unpaid[0] if unpaid else None)
        return "billing_done_link_sent" if sent["status"] == "sent" else "billing_done_link_queued"

    return _act(visit, subscription_id, "link", run)


def _act(visit: Visit, subscription_id: str, form: str | None, run):
    """Run an action once per form token; its confirmation, or the page
    again with what was wrong."""
    here = f"/console/subscriptions/{subscription_id}"

    def again(**problems):
        return _page(visit, subscription_id, form=form, values=dict(visit.form_pairs()), **problems)

    return run_form(visit, form, FORMS.get(form, {}), run, done_at=here, again=again)


def cancel_comment_parts(comment: str | None) -> tuple[str | None, str | None]:
    """A cancellation comment made here (`moved_away: parti à Lyon`) as
    (reason code, the rest); another one (from the API) is all comment."""
    if not comment:
        return None, None
    code, _, rest = comment.partition(":")
    if code in CANCEL_REASONS:
        return code, rest.strip() or None
    return None, comment


# ---------------------------------------------------------------------------
# What the page shows


def _offer(merchant_id: str, offer_id: str) -> dict | None:
    from chalicelib.services import offers

    try:
        return offers.get_offer(merchant_id, offer_id)
    except NotFound:
        return None


def _options(codes, overrides, offer: dict | None) -> list[dict]:
    """The chosen options with their names and, when overridden, their own price."""
    known = {o["code"]: o for o in (offer or {}).get("options", [])}
    shown = []
    for code in codes or []:
        option = known.get(code, {})
        own = ((overrides or {}).get(code) or {}).get("amount") if code not in _component_codes(offer) else None
        amount = own if own is not None else option.get("amount")
        shown.append({"code": code, "name": option.get("name") or code, "amount": amount,
                      "overridden": own is not None, "free": own is not None and not Decimal(own)})
    return shown


def _component_codes(offer: dict | None) -> set[str]:
    return {c["code"] for c in (offer or {}).get("components", [])}


def _overrides(overrides: dict | None, offer: dict | None) -> list[dict]:
    """Each overridden price: what it is about, the field, the value."""
    components = _component_codes(offer)
    names = {o["code"]: o.get("name") or o["code"] for o in (offer or {}).get("options", [])}
    rows = []
    for code, fields in sorted((overrides or {}).items()):
        for field, value in sorted(fields.items()):
            rows.append({"code": code, "name": code if code in components else names.get(code, code),
                         "option": code not in components, "field": field,
                         "money": isinstance(value, str) and field in MONEY_FIELDS, "value": value,
                         "shown": value if isinstance(value, str) else _compact(value)})
    return rows


MONEY_FIELDS = ("amount", "unit_amount", "hourly_rate", "minimum_amount")


def _free_choices(subscription: dict, offer: dict | None) -> list[tuple[str, str]]:
    """The offer's options a member may grant free: those not free already
    (and none whose code is also a component's: an override names the component)."""
    free = {o["code"] for o in _options(subscription["options"], subscription["price_overrides"], offer) if o["free"]}
    free |= _component_codes(offer)
    return [(o["code"], o.get("name") or o["code"]) for o in (offer or {}).get("options", []) if o["code"] not in free]


def _change_offers(merchant_id: str, subscription: dict, current: dict | None) -> list[dict]:
    """The subscription's offer (its options may change, archived or not)
    and the live offers it may move to: same currency and interval (one Query)."""
    from chalicelib.services import offers

    listed, _ = offers.list_offers(merchant_id, limit=OFFERS_LISTED)
    others = [o for o in listed if o["status"] == "active" and o["id"] != subscription["offer_id"]
              and o["currency"] == subscription["currency"]
              and o["billing_interval"] == subscription["billing_interval"]
              and int(o["interval_count"]) == int(subscription["interval_count"])]
    return ([current] if current else []) + others


def _entry(visit: Visit, entry: dict, actor_label, tz: str, offer_names: dict) -> dict:
    """A history entry as a person reads it: who, what, why, which fields from what to what."""
    before, after = entry.get("before") or {}, entry.get("after") or {}
    changed = [name for name in HISTORY_FIELDS if name in after or name in before] if entry["before"] is not None else []
    kind = text(visit.lang, f"billing_change_{entry['type']}")
    reason = entry.get("reason")
    if entry["type"] in ("cancellation_scheduled", "canceled"):
        reason = _cancel_comment_text(visit, reason)
    return {**entry, "who": actor_label(visit.lang, entry["actor"]), "reason": reason,
            "what": kind if kind != f"billing_change_{entry['type']}" else entry["type"],
            "changes": [(text(visit.lang, f"billing_field_{name}"), _shown(visit, name, before.get(name), tz, offer_names),
                         _shown(visit, name, after.get(name), tz, offer_names)) for name in changed]}


def _cancel_comment_text(visit: Visit, comment: str | None) -> str | None:
    code, rest = cancel_comment_parts(comment)
    if code is None:
        return rest
    label = text(visit.lang, f"billing_cancel_reason_{code}")
    return f"{label} ({rest})" if rest else label


def _shown(visit: Visit, name: str, value, tz: str, offer_names: dict) -> str:
    from chalicelib.web.render import day

    if value is None:
        return "–"
    if isinstance(value, bool):
        return text(visit.lang, "billing_yes" if value else "billing_no")
    if name == "status":
        return text(visit.lang, f"billing_status_{value}")
    if name == "cancel_at":
        return day(value, visit.lang, tz)
    if name == "cancellation_comment":
        return _compact(_cancel_comment_text(visit, value))
    if name == "offer_id":
        return _compact(offer_names.get(value, value))
    if name == "options" and isinstance(value, list):
        return _compact(_option_names(value, offer_names) or "–")
    if name == "pending_change" and isinstance(value, dict):
        offer_shown = offer_names.get(value.get("offer_id"), value.get("offer_id") or "")
        return _compact(" · ".join([offer_shown, _option_names(value.get("options") or [], offer_names)]).strip(" ·"))
    return _compact(value)


def _option_names(codes: list, names: dict) -> str:
    return ", ".join(names.get(("option", code), str(code)) for code in codes)


def _compact(value) -> str:
    if value is None:
        return "–"
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return shown if len(shown) <= 80 else shown[:77] + "…"
