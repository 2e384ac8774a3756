"""Alerts: e-mails to a merchant's operations (`alert_emails`) and, for an
expiring card, to the customer, each sent once per fact.

How a fact becomes an e-mail, so that a failed send is retried, never blocks
billing, and is never lost silently:
1. Where the fact is written (a subscription canceled, a charge failed, a
   counter reset, a card found expiring) its alert is recorded after the
   write: one item whose key is derived from the fact, put only if absent
   (store/alerts.py). A fact seen twice is one alert. Recording never raises
   into the caller: billing goes on whatever happens to the e-mail.
2. The alert's id goes to the notifications queue. Its consumer
   (`deliver`) renders each pending e-mail, sends it through
   chalicelib.notify (the only code that talks to SES), and writes the
   outcome on the alert: `sent`, or `failed` with SES's reason, and then the
   message fails alone (partial batch failure) and SQS delivers it again;
   after eight tries it waits in the dead-letter queue (alarmed).
3. An alert not yet sent stays in the `due` index; the daily job queues
   again every alert whose e-mail is overdue (a queue that was unreachable
   when it was recorded, a message parked in the dead-letter queue).
4. What SES reports after accepting an e-mail (bounces, complaints,
   rejections, through the configuration set's SNS topic and the mail
   feedback queue) is written on its delivery by `mail_feedback`: a bounced
   e-mail is due again a day later, until it is undeliverable.

A worker claims an e-mail before sending it (`sending`, for `SEND_LEASE`),
so two workers holding the same alert send it once. An e-mail may, rarely,
go out twice (SES accepted it and the worker died before writing so); an
alert is never silently dropped.

Expiring cards (`scan_expiring_cards`, daily): customers whose default card's
last valid month is this month or the next, found through the card_expiry
index, with a live subscription. Each card is read again from Stripe first:
the card updater may already have given it a new expiry, which is then
recorded and nothing is sent. Each card left is one `card_expiring` alert
(`card_expiring#{payment_method}#{YYYY-MM}`: once per card and expiry) that
e-mails the customer a fresh payment link, and goes in its merchant's digest
of the day (one e-mail to operations per merchant and day).
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from chalicelib.clock import clock, isoformat
from chalicelib.observability import logger, metrics
from chalicelib.store import alerts as store

OPERATIONS = "operations"
CUSTOMER = "customer"
PAYEE = "payee"
# An e-mail not sent by then is queued again by the daily job.
RESEND_AFTER = timedelta(minutes=30)
# How long a worker sending an e-mail holds it: longer than the
# notifications function may run (60 s), shorter than the queue's
# visibility timeout (120 s), so a message back from a dead worker sends.
SEND_LEASE = timedelta(seconds=90)
# Operations' news that stays open on the customer page this long.
OPEN_FOR = timedelta(days=30)
LIVE_STATUSES = ("incomplete", "trialing", "active", "past_due")
CANCEL_REASONS = ("customer", "payment_failed", "commitment_end", "operator")
# E-mails to a customer that are not news for operations (a payment link
# sent from the console): delivered and listed like alerts, never open ones.
CUSTOMER_NOTICES = ("payment_link", "portal_link", "price_change_notice")
# The link a customer notice carries, made fresh when it is sent: kind -> "module:function"
# taking (merchant_id, customer_id) and returning {"url", "expires_at"}.
CUSTOMER_LINKS = {
    "payment_link": "chalicelib.services.payment_links:create_payment_link",
    "portal_link": "chalicelib.services.portal:link_for_mail",
    # A price change's notice (services/price_changes.py) carries no link.
    "price_change_notice": None,
}
# An e-mail that bounced is sent again this much later (the address may be
# corrected meanwhile), until it bounced this many times.
BOUNCE_RETRY_AFTER = timedelta(days=1)
MAX_BOUNCES = 3


class AlertNotDelivered(Exception):
    """An e-mail of the alert was not sent this time (recorded on it): the
    queue message fails and comes back."""


# ---------------------------------------------------------------------------
# Recording facts (called after the fact's own write; never raises)


def record(merchant_id: str, fact: str, kind: str, *, customer_id: str | None, details: dict,
           audiences: tuple[str, ...] = (OPERATIONS,), queue: bool = True) -> store.AlertRecord | None:
    """Record the alert of a fact once and queue its e-mails. Returns the
    alert if this call recorded it, None if it already was (or could not be:
    logged and counted as `AlertNotRecorded`, alarmed)."""
    now = clock().now()
    try:
        alert = store.new_alert(merchant_id, fact, kind, customer_id=customer_id, details=details,
                                audiences=audiences, created_at=isoformat(now), retry_at=now + RESEND_AFTER)
        if not store.record_alert(alert):
            return None
    except Exception:  # the fact is written; its e-mail must not undo or block it
        logger.exception("alert not recorded", extra={"merchant_id": merchant_id, "fact": fact})
        metrics.add_metric(name="AlertNotRecorded", unit="Count", value=1)
        return None
    if queue:
        enqueue([alert_message(alert)])
    return alert


def subscription_changed(subscription, change_type: str) -> None:
    """A saved subscription change (services/subscriptions.report_change):
    `cancellation_scheduled` and `canceled` are alerts."""
    if change_type not in ("cancellation_scheduled", "canceled"):
        return
    details = {
        "subscription_id": subscription.subscription_id,
        "offer_id": subscription.offer_id,
        "reason": cancel_reason(subscription),
        "comment": subscription.cancellation_comment,
    }
    if change_type == "cancellation_scheduled":
        # Scheduled, reactivated, scheduled again: each scheduling is a fact.
        fact = f"cancellation_scheduled#{subscription.subscription_id}#{int(subscription.version)}"
        details["cancel_at"] = subscription.cancel_at
        kind = "cancellation_scheduled"
    else:
        fact = f"subscription_canceled#{subscription.subscription_id}"
        details["canceled_at"] = subscription.canceled_at
        kind = "subscription_canceled"
    record(subscription.merchant_id, fact, kind, customer_id=subscription.customer_id, details=details)


def cancel_reason(subscription) -> str:
    """API.md's reasons: customer, payment_failed, end of commitment
    (`commitment_end`: the customer's cancellation took effect when the
    commitment ended), operator."""
    reason = subscription.cancellation_reason or "customer"
    ends = subscription.cancel_at or subscription.canceled_at
    if reason == "customer" and subscription.commitment_ends_at and ends == subscription.commitment_ends_at:
        return "commitment_end"
    return reason if reason in CANCEL_REASONS else "customer"


def payment_failed(invoice: dict, merchant_id: str) -> None:
    """A failed charge of `invoice` (the API's invoice object, as written):
    one alert per invoice and attempt, with the next retry (or none)."""
    attempts = invoice.get("payment_attempts") or []
    last = attempts[-1] if attempts else {}
    number = len(attempts)
    record(merchant_id, f"payment_failed#{invoice['id']}#{number}", "payment_failed",
           customer_id=invoice.get("customer_id"),
           details={"invoice_id": invoice["id"], "invoice_number": invoice.get("number") or invoice["id"],
                    "subscription_id": invoice.get("subscription_id"), "amount": invoice["amount_due"],
                    "currency": invoice["currency"], "attempt": number,
                    "failure_code": last.get("failure_code") or "card_declined",
                    "next_payment_attempt": invoice.get("next_payment_attempt"),
                    "payment_link": (invoice.get("payment_link") or {}).get("url")})


def counter_reset(merchant_id: str, device_id: str, subscription_id: str, customer_id: str | None, reset) -> None:
    """A device counter went backwards (services/ingest.py, after the write)."""
    ts = reset.ts if isinstance(reset.ts, str) else isoformat(reset.ts)
    record(merchant_id, f"counter_reset#{device_id}#{reset.meter}#{reset.seq}", "counter_reset",
           customer_id=customer_id,
           details={"device_id": device_id, "meter": reset.meter, "seq": int(reset.seq), "ts": ts,
                    "previous": _plain(reset.previous), "value": _plain(reset.value),
                    "subscription_id": subscription_id})


# ---------------------------------------------------------------------------
# The daily job: expiring cards, and what is overdue


def scan_expiring_cards(now: datetime, inline: bool = False) -> dict:
    """Find the cards expiring this month or next, record their alerts and
    the merchants' digests of the day, and queue their e-mails (or, `inline`,
    send them now: the local clock). Then queue again every e-mail overdue."""
    from chalicelib.store import customers as customer_store

    months = _months(now)
    today = now.astimezone(timezone.utc).date()
    found: dict[str, list[str]] = defaultdict(list)
    checked = updated = 0
    messages: list[dict] = []
    for month in months:
        for customer in customer_store.customers_with_card_expiring(month):
            checked += 1
            outcome = _check_card(customer, months, today.isoformat(), now)
            if outcome == "updated":
                updated += 1
            elif outcome is not None:
                found[customer.merchant_id].append(outcome)
    digests = 0
    for merchant_id, alert_ids in found.items():
        day = _digest_day(merchant_id, alert_ids, today, now)
        if day is None:
            continue
        store.mark_digested(merchant_id, alert_ids, day)
        digests += 1
        messages.append({"type": "digest", "merchant_id": merchant_id, "kind": "card_expiring", "day": day})
        messages += [{"type": "alert", "merchant_id": merchant_id, "alert_id": a} for a in alert_ids]
    overdue = [m for m in store.overdue(now) if m not in messages]
    messages += overdue
    if inline:
        results = [_deliver_quietly(m) for m in messages]
        sent = sum(r.get("sent", 0) for r in results)
        return {"months": months, "checked": checked, "card_updated": updated,
                "alerts": sum(len(a) for a in found.values()), "digests": digests, "overdue": len(overdue),
                "emails_sent": sent}
    queued = enqueue(messages)
    return {"months": months, "checked": checked, "card_updated": updated,
            "alerts": sum(len(a) for a in found.values()), "digests": digests, "overdue": len(overdue),
            "queued": queued}


def _check_card(customer, months: list[str], today: str, now: datetime) -> str | None:
    """One customer found by the index: "updated" when Stripe has a newer
    expiry, the alert id when the card is (still) to be alerted and not yet
    in a digest, None otherwise."""
    from chalicelib import payments
    from chalicelib.services import subscriptions
    from chalicelib.store import customers as customer_store

    card = customer.card()
    if not card or not card.get("payment_method_id"):
        return None
    merchant_id, customer_id = customer.merchant_id, customer.customer_id
    if not any(s["status"] in LIVE_STATUSES for s in subscriptions.customer_subscriptions(merchant_id, customer_id)):
        return None
    try:
        fresh = payments.retrieve_card(card["payment_method_id"])
    except payments.NoSuchObject:
        logger.warning("default card gone from Stripe", extra={"customer_id": customer_id})
        return None
    except payments.PaymentError:
        # Stripe unreachable or throttling: the card is still in the index
        # tomorrow (its month is this one or the next).
        logger.warning("card not checked with Stripe", extra={"customer_id": customer_id}, exc_info=True)
        return None
    if (fresh.exp_year, fresh.exp_month, fresh.last4) != (card["exp_year"], card["exp_month"], card["last4"]):
        customer_store.set_default_card(merchant_id, customer_id,
                                        {"payment_method_id": fresh.payment_method_id, **fresh.summary()})
        logger.info("card updated by the card updater", extra={"customer_id": customer_id})
        if f"{fresh.exp_year:04d}-{fresh.exp_month:02d}" not in months:
            return "updated"
        card = {"payment_method_id": fresh.payment_method_id, **fresh.summary()}
    expiry = f"{int(card['exp_year']):04d}-{int(card['exp_month']):02d}"
    details = {"customer_name": customer.name, "customer_email": customer.email,
               "card": {k: card[k] for k in ("brand", "last4", "exp_month", "exp_year")}}
    fact = f"card_expiring#{card['payment_method_id']}#{expiry}"
    alert = record(merchant_id, fact, "card_expiring", customer_id=customer_id, details=details,
                   audiences=(CUSTOMER,), queue=False)
    if alert is not None:
        return alert.alert_id
    # Recorded before: in a digest already, unless a run died between the two.
    existing = store.get_alert(merchant_id, store.alert_id_of(f"{merchant_id}#{fact}"))
    if existing is not None and existing.digest_day is None:
        return existing.alert_id
    return None


def _digest_day(merchant_id: str, alert_ids: list[str], today, now: datetime) -> str | None:
    """The digest the new alerts go in: today's, or, if today's was already
    sent (a second run the same day), the next day's."""
    for day in (today, today + timedelta(days=1)):
        if store.add_to_digest(merchant_id, "card_expiring", day.isoformat(), alert_ids,
                               created_at=isoformat(now), retry_at=now + RESEND_AFTER):
            return day.isoformat()
    logger.warning("expiring cards not put in a digest", extra={"merchant_id": merchant_id})
    return None


def _months(now: datetime) -> list[str]:
    current = now.astimezone(timezone.utc)
    following = (current.replace(day=1) + timedelta(days=32)).replace(day=1)
    return [f"{current.year:04d}-{current.month:02d}", f"{following.year:04d}-{following.month:02d}"]


# ---------------------------------------------------------------------------
# The queue


def alert_message(alert: store.AlertRecord) -> dict:
    return {"type": "alert", "merchant_id": alert.merchant_id, "alert_id": alert.alert_id}


def enqueue(messages: list[dict]) -> int:
    """Send `messages` to the notifications queue (ten a request); never
    raises: what is not queued is still due, and the daily job queues it."""
    from chalicelib import queues
    from chalicelib.config import settings

    bodies = [json.dumps(m, sort_keys=True, separators=(",", ":")) for m in messages]
    unsent = queues.send(settings().notifications_queue_url, bodies)
    if unsent:
        logger.warning("alert e-mails not queued; the daily job queues them again", extra={"count": len(unsent)})
    return len(bodies) - len(unsent)


# ---------------------------------------------------------------------------
# Delivery (the notifications queue's consumer)


def deliver(message: dict) -> dict:
    """Send every e-mail of the message's alert or digest not sent yet.
    Raises `AlertNotDelivered` when one was not (recorded on the record)."""
    from chalicelib.store import merchants as merchant_store

    merchant_id = message["merchant_id"]
    if message.get("type") == "digest":
        record_ = store.get_digest(merchant_id, message["kind"], message["day"])
    elif message.get("type") == "alert":
        record_ = store.get_alert(merchant_id, message["alert_id"])
    else:
        raise ValueError(f"unknown notification {message.get('type')!r}")
    if record_ is None:
        logger.warning("notification of a record that does not exist", extra={"notification": message})
        return {"sent": 0, "missing": True}
    merchant = merchant_store.get_merchant(merchant_id)
    sent = 0
    failures = []
    for audience, delivery in sorted(record_.deliveries().items()):
        if delivery["status"] in store.FINAL:
            continue
        now = clock().now()
        if delivery["status"] == "sending" and _instant(delivery["lease_until"]) > now:
            failures.append(audience)  # another worker is sending it: this message comes back later
            continue
        mail, to = _compose(record_, audience, merchant)
        if to and not _claim(record_, audience, delivery, now):
            failures.append(audience)  # written meanwhile: read again when the message comes back
            break
        version = int(record_.version)
        delivery.pop("lease_until", None)
        delivery["attempts"] = int(delivery.get("attempts") or 0) + 1
        if not to:
            delivery.update(status="no_recipient", last_error=f"no {audience} address")
        else:
            from chalicelib import notify

            try:
                message_id = notify.send_email(to, mail.subject, mail.text, mail.html, sent_at=now,
                                               tags=mail_tags(record_, audience))
                delivery.update(status="sent", message_id=message_id, sent_at=isoformat(now), last_error=None,
                                message_ids=[*(delivery.get("message_ids") or []), message_id])
                delivery.pop("bounced_recipients", None)  # of an earlier send
                sent += 1
            except notify.MailNotSent as error:
                delivery.update(status="failed", last_error=f"{error.code}: {str(error)[:300]}")
                failures.append(audience)
        deliveries = record_.deliveries()
        deliveries[audience] = delivery
        record_.set_deliveries(deliveries, now + RESEND_AFTER)
        if not store.save_deliveries(record_, version):
            # Rewritten meanwhile (a digest that grew while it was sent): read
            # again; the message comes back and sends what is still pending.
            failures.append(audience)
            break
    if failures:
        raise AlertNotDelivered(f"{message}: {failures} not sent")
    return {"sent": sent}


def _claim(record_, audience: str, delivery: dict, now: datetime) -> bool:
    """Mark the delivery `sending` until `SEND_LEASE` from now, if nobody
    wrote the record since it was read: of two workers holding the same
    notification (an SQS duplicate, a message queued again by the daily job
    while the first still waited), one sends and the other leaves it. Past
    the lease (the sender died), the next delivery sends it."""
    claimed = {**delivery, "status": "sending", "lease_until": isoformat(now + SEND_LEASE)}
    deliveries = record_.deliveries()
    deliveries[audience] = claimed
    record_.set_deliveries(deliveries, now + RESEND_AFTER)
    return store.save_deliveries(record_, int(record_.version))


def mail_tags(record_, audience: str) -> dict[str, str]:
    """The SES message tags of one e-mail: what SES's reports about it
    (`mail_feedback`) need to find its delivery again."""
    if isinstance(record_, store.DigestRecord):
        return {"notification": "digest", "merchant": record_.merchant_id, "kind": record_.type,
                "day": record_.day, "audience": audience}
    return {"notification": "alert", "merchant": record_.merchant_id, "alert": record_.alert_id,
            "audience": audience}


def _deliver_quietly(message: dict) -> dict:
    try:
        return deliver(message)
    except AlertNotDelivered:
        return {"sent": 0, "failed": True}


def _compose(record_, audience: str, merchant):
    """(the e-mail, its recipients) of one audience of an alert or digest."""
    from chalicelib.services import alert_mail
    from chalicelib.store import customers as customer_store

    context = {"merchant_name": merchant.name}
    tz = merchant.timezone or "UTC"
    if isinstance(record_, store.DigestRecord):
        alerts = store.get_alerts(record_.merchant_id, list(dict.fromkeys(record_.alert_ids or [])))
        rows = [{"customer_id": a.customer_id, **a.details()} for a in alerts]
        mail = alert_mail.render("card_expiring_digest", merchant.locale, {**context, "day": record_.day,
                                                                             "cards": rows}, timezone=tz)
        return mail, list(merchant.alert_emails or [])
    details = record_.details()
    customer = None
    if record_.customer_id:
        try:
            customer = customer_store.get_customer(record_.merchant_id, record_.customer_id)
        except Exception:  # a customer gone: the alert still names its id
            customer = None
    context.update(details, customer_id=record_.customer_id,
                   customer_name=customer.name if customer else details.get("customer_name"))
    if record_.type in ("cancellation_scheduled", "subscription_canceled"):
        context["offer_name"] = _offer_name(record_.merchant_id, details.get("offer_id"))
    if audience == PAYEE:  # a payee's statement (services/statements.py): its address is on the alert
        return alert_mail.render(record_.type, merchant.locale, context, timezone=tz), [details["payee_email"]]
    if audience == CUSTOMER:
        import importlib

        target = CUSTOMER_LINKS.get(record_.type, CUSTOMER_LINKS["payment_link"])
        if target:  # a notice without a link (a price change) has none
            module, _, function = target.partition(":")
            link = getattr(importlib.import_module(module), function)(record_.merchant_id, record_.customer_id)
            context.update(link_url=link["url"], link_expires_at=link["expires_at"])
        locale = (customer.locale if customer else None) or merchant.locale
        return alert_mail.render(record_.type, locale, context, timezone=tz), [customer.email] if customer else []
    return alert_mail.render(record_.type, merchant.locale, context, timezone=tz), list(merchant.alert_emails or [])


def _offer_name(merchant_id: str, offer_id: str | None) -> str:
    from chalicelib.services import offers

    if not offer_id:
        return "-"
    try:
        return offers.offer_summary(merchant_id, offer_id)["name"]
    except Exception:
        return offer_id


# ---------------------------------------------------------------------------
# What SES reports after accepting an e-mail (the mail feedback queue's consumer)


class FeedbackTooEarly(Exception):
    """SES reported on a message whose sending is not recorded yet (the
    sender's write is on its way): the report fails and comes back."""


def mail_feedback(report: dict) -> dict:
    """Apply one SES event (configuration set -> SNS -> the mail feedback
    queue) to the delivery it is about, found by the message's tags:

    - a bounce of every recipient, or a rejection: the delivery is
      `bounced` and is sent again a day later (an address may have been
      corrected meanwhile), at most `MAX_BOUNCES` times, after which it is
      `undeliverable` (final, counted in `AlertMailUndeliverable`, alarmed);
    - a bounce of some of the recipients only (the others got it) or a
      complaint: written on the delivery (`bounced_recipients`,
      `complaint`), which stays `sent`, and counted (`AlertMailBounced`,
      `AlertMailComplaint`).

    Each report is applied once (its feedback id is kept); a report on an
    older message than the delivery's latest is stale and ignored; a report
    on a message whose sending is not recorded yet raises `FeedbackTooEarly`.
    """
    kind = report.get("eventType") or report.get("notificationType")
    mail = report.get("mail") or {}
    tags = {name: values[0] for name, values in (mail.get("tags") or {}).items() if values}
    if kind not in ("Bounce", "Complaint", "Reject") or tags.get("notification") not in ("alert", "digest"):
        logger.info("SES report not about an alert", extra={"event_type": kind})
        return {"applied": False}
    if tags["notification"] == "alert":
        record_ = store.get_alert(tags.get("merchant", ""), tags.get("alert", ""))
    else:
        record_ = store.get_digest(tags.get("merchant", ""), tags.get("kind", ""), tags.get("day", ""))
    audience = tags.get("audience", "")
    delivery = record_.deliveries().get(audience) if record_ is not None else None
    if delivery is None:
        logger.warning("SES report about an e-mail of nothing recorded", extra={"tags": tags})
        return {"applied": False}
    message_id = mail.get("messageId")
    # Every message id sent for the delivery (a delivery sent before they
    # were all kept has its last one only).
    sent_ids = delivery.get("message_ids") or [m for m in [delivery.get("message_id")] if m]
    if message_id not in sent_ids:
        raise FeedbackTooEarly(f"{kind} of {message_id}: its sending is not recorded yet")
    if message_id != delivery.get("message_id"):
        logger.info("SES report about an earlier e-mail", extra={"tags": tags, "event_type": kind})
        return {"applied": False}
    details = report.get(kind.lower()) or {}
    feedback_id = details.get("feedbackId") or f"{kind}#{message_id}"
    if feedback_id in (delivery.get("feedback_ids") or []):
        return {"applied": False, "duplicate": True}
    delivery["feedback_ids"] = [*(delivery.get("feedback_ids") or []), feedback_id]
    now = clock().now()
    retry_at = None
    if kind == "Complaint":
        complained = [r.get("emailAddress") for r in details.get("complainedRecipients") or []]
        delivery["complaint"] = {"recipients": complained, "type": details.get("complaintFeedbackType"),
                                 "at": isoformat(now)}
        metrics.add_metric(name="AlertMailComplaint", unit="Count", value=1)
        outcome = "complaint"
    else:
        destination = {_address(a) for a in mail.get("destination") or []}
        if kind == "Bounce":
            bounced = details.get("bouncedRecipients") or []
            reason = "; ".join(f"{r.get('emailAddress')}: {r.get('diagnosticCode') or r.get('status') or '?'}"
                               for r in bounced)
            error = f"bounce {details.get('bounceType')}/{details.get('bounceSubType')}: {reason}"[:400]
            addresses = {r.get("emailAddress") for r in bounced}
        else:
            error = f"rejected by SES: {details.get('reason')}"[:400]
            addresses = destination
        outcome = _bounced(delivery, addresses, destination, error, tags)
        if outcome == "bounced":
            retry_at = now + BOUNCE_RETRY_AFTER
    version = int(record_.version)
    deliveries = record_.deliveries()
    deliveries[audience] = delivery
    record_.set_deliveries(deliveries, _earliest(record_.due_at, retry_at))
    if not store.save_deliveries(record_, version):
        raise FeedbackTooEarly(f"{kind} of {message_id}: the alert changed meanwhile")
    return {"applied": True, "outcome": outcome}


def _bounced(delivery: dict, addresses: set, destination: set, error: str, tags: dict) -> str:
    """Write a bounce of `addresses` on the delivery of a message sent to
    `destination`. SES may report the recipients of one message one by one:
    the message bounced when every recipient has (`bounced`, then
    `undeliverable` at the last of `MAX_BOUNCES`); until then it is
    `partly_bounced` and the delivery stays `sent`."""
    metrics.add_metric(name="AlertMailBounced", unit="Count", value=1)
    so_far = set(delivery.get("bounced_recipients") or []) | addresses
    delivery.update(bounced_recipients=sorted(so_far), last_error=error)
    if not so_far >= destination:
        return "partly_bounced"
    if delivery["status"] in ("bounced", "undeliverable"):
        return "bounced_already"  # this message was counted by an earlier report
    delivery["bounces"] = int(delivery.get("bounces") or 0) + 1
    if delivery["bounces"] < MAX_BOUNCES:
        delivery["status"] = "bounced"
        return "bounced"
    delivery["status"] = "undeliverable"
    metrics.add_metric(name="AlertMailUndeliverable", unit="Count", value=1)
    logger.error("alert e-mail undeliverable", extra={"tags": tags, "error": error})
    return "undeliverable"


def _address(text: str) -> str:
    from email.utils import parseaddr

    return parseaddr(text)[1] or text


def _earliest(due_at: str | None, retry_at: datetime | None) -> datetime | None:
    """When the record is next due: a delivery already waiting keeps its
    earlier time."""
    waiting = _instant(due_at) if due_at else None
    return min((t for t in (waiting, retry_at) if t is not None), default=None)


# ---------------------------------------------------------------------------
# The customer page


def open_alerts(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer's alerts whose fact still stands, newest first: an
    expiring card still the default with that expiry; a cancellation still
    scheduled; a failed charge whose invoice is still unpaid (its latest
    alert only); a cancellation or a counter reset of the last 30 days."""
    from chalicelib.services import subscriptions
    from chalicelib.store import customers as customer_store
    from chalicelib.store import invoices as invoice_store

    alerts = store.customer_alerts(merchant_id, customer_id)
    if not alerts:
        return []
    customer = customer_store.get_customer(merchant_id, customer_id)
    card = customer.card()
    subs = {s["id"]: s for s in subscriptions.customer_subscriptions(merchant_id, customer_id)}
    now = clock().now()
    seen_invoices: set[str] = set()
    failed = invoice_store.find_invoices(
        merchant_id, [alert.details().get("invoice_id") for alert in alerts if alert.type == "payment_failed"])
    shown = []
    for alert in alerts:
        details = alert.details()
        kind = alert.type
        if kind in CUSTOMER_NOTICES:
            continue
        if kind == "card_expiring":
            if not card or alert.fact != (f"card_expiring#{card.get('payment_method_id')}#"
                                          f"{int(card['exp_year']):04d}-{int(card['exp_month']):02d}"):
                continue
        elif kind == "cancellation_scheduled":
            sub = subs.get(details["subscription_id"])
            if not sub or sub["status"] == "canceled" or not sub["cancel_at_period_end"]:
                continue
        elif kind == "payment_failed":
            if details["invoice_id"] in seen_invoices:
                continue
            seen_invoices.add(details["invoice_id"])
            invoice = failed.get(details["invoice_id"])
            if invoice is None or invoice.status not in ("open", "uncollectible"):
                continue
        elif now - _instant(alert.created_at) > OPEN_FOR:
            continue
        shown.append(serialize(alert))
    return shown


def customer_emails(merchant_id: str, customer_id: str, *, limit: int = 20) -> list[dict]:
    """The e-mails of the customer's alerts, newest first: to the customer
    (an expiring card's payment link) and to operations about it, each with
    what its delivery records (status, when sent, attempts). One Query."""
    found = []
    for alert in store.customer_alerts(merchant_id, customer_id):
        for audience, delivery in sorted(alert.deliveries().items()):
            found.append({"alert_id": alert.alert_id, "type": alert.type, "audience": audience,
                          "status": delivery.get("status"), "sent_at": delivery.get("sent_at"),
                          "attempts": int(delivery.get("attempts") or 0), "created_at": alert.created_at})
    return found[:limit]


def recent_alerts(merchant_id: str, *, limit: int = 10, days: int = 30) -> list[dict]:
    """The merchant's alerts of the last `days` days, newest first, with
    the customer's name (the console's dashboard)."""
    since = isoformat(clock().now() - timedelta(days=days))
    return [{**serialize(alert), "customer_id": alert.customer_id,
             "customer_name": alert.details().get("customer_name")}
            for alert in store.recent_alerts(merchant_id, since, limit) if alert.type not in CUSTOMER_NOTICES]


def serialize(alert: store.AlertRecord) -> dict:
    details = {k: v for k, v in alert.details().items() if k not in ("customer_name", "customer_email")}
    return {
        "id": alert.alert_id,
        "object": "alert",
        "type": alert.type,
        "created_at": alert.created_at,
        "details": details,
        "deliveries": {
            audience: {k: d.get(k) for k in ("status", "attempts", "sent_at", "last_error")}
            for audience, d in sorted(alert.deliveries().items())
        },
    }


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _plain(value) -> str:
    from decimal import Decimal

    return format(Decimal(str(value)).normalize(), "f") if not isinstance(value, str) else value
