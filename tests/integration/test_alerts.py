"""Alerts on moto and localstripe: the daily expiring-card scan (one digest to
operations and one e-mail with a fresh payment link to the customer, and
nothing on a second run or for a card the card updater renewed), the
cancellation and failed-payment alerts with their reasons, a refused send
recorded and retried, the open alerts of the customer page.

E-mails are read from what moto's SES accepted (as GET /_local/outbox does);
the notifications queue is drained through its consumer, as Lambda would."""
from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import jobs, notify, payments
from chalicelib.api.local import _mail, _sent_messages
from chalicelib.services import cards, payment_links
from chalicelib.store import customers as customer_store
from infra.local.lambda_events import LocalContext, sqs_event
from tests.integration.test_billing import CARD_DECLINED_ON_CHARGE, iso, simple_offer, subscribe

UTC = timezone.utc
# Monday 23 November 2026, 06:00 UTC: December 2026 is "next month".
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
OPS = "ops@optique-durand.fr"


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return NOW


def add_card(api, customer_id: str, *, exp_month: int, exp_year: int, number: str = "4242424242424242") -> str:
    """The payment page's server path with a card of the given expiry;
    returns the PaymentMethod id."""
    merchant_id = api.merchant["id"]
    stripe_customer_id = cards.stripe_customer_for(customer_store.get_customer(merchant_id, customer_id))
    intent = payments.create_setup_intent(stripe_customer_id, merchant_id=merchant_id, customer_id=customer_id)
    method = payments._client().v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": exp_month, "exp_year": exp_year,
                                         "cvc": "123"}})
    payments._client().v1.setup_intents.confirm(intent.id, params={"payment_method": method["id"]})
    cards.complete_card_setup(merchant_id, customer_id, payments.retrieve_setup_intent(intent.id),
                              completed_by="page")
    return method["id"]


def customer(api, name: str, email: str, *, card: tuple[int, int] | None = (12, 2026), subscribed: bool = True,
             locale: str | None = None, offer_id: str | None = None, **subscription) -> str:
    body = {"name": name, "email": email, "country": "FR"}
    if locale:
        body["locale"] = locale
    response = api.post("/customers", body)
    assert response.status == 201, response
    customer_id = response.json["id"]
    if card:
        add_card(api, customer_id, exp_month=card[0], exp_year=card[1])
    if subscribed:
        subscribe(api, customer_id, offer_id or simple_offer(api, code=f"o-{customer_id[-6:]}"),
                  **{"start_at": iso(NOW), **subscription})
    return customer_id


def drain() -> list[dict]:
    """Hand every message of the notifications queue to its consumer until
    the queue is empty; returns the batch results."""
    from app import send_notifications

    return drain_queue("NotificationsQueue", send_notifications)


def drain_queue(queue: str, consumer) -> list[dict]:
    """Hand the queue's messages to its consumer, as Lambda would, until it
    is empty or a batch reports a failure (whose messages are made visible
    again at once, as after the visibility timeout); returns each batch's
    result."""
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    results = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not messages:
            return results
        result = consumer(sqs_event(messages, url), LocalContext())
        results.append(result)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            else:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
        if failed:
            return results


@contextlib.contextmanager
def ses_hooks(*hooks):
    """Handlers on the SES client's events, for the block only (the client
    outlives a test)."""
    events = notify._ses().meta.events
    for event, handler in hooks:
        events.register(event, handler)
    try:
        yield
    finally:
        for event, handler in hooks:
            events.unregister(event, handler)


def mails() -> list[dict]:
    return [_mail(m) for m in _sent_messages()]


def mails_to(address: str) -> list[dict]:
    return [m for m in mails() if address in m["to"]]


def alerts_of(api, customer_id: str) -> list[dict]:
    response = api.get(f"/customers/{customer_id}")
    assert response.status == 200, response
    return response.json["open_alerts"]


# ---------------------------------------------------------------------------
# Expiring cards


def test_a_card_expiring_next_month_sends_one_digest_and_one_customer_mail_then_nothing(merchant, clock):
    offer_id = simple_offer(merchant)
    martin = customer(merchant, "Labo Martin", "compta@labo-martin.fr", offer_id=offer_id)
    customer(merchant, "Vision Plus", "admin@visionplus.fr", card=(12, 2030), offer_id=offer_id)
    customer(merchant, "Sans Abonnement", "x@sans.fr", subscribed=False)
    customer(merchant, "Optic Ouest", "o@ouest.fr", card=(11, 2026), locale="en", offer_id=offer_id)

    result = jobs.card_expiry_scan(clock.now())
    assert result["months"] == ["2026-11", "2026-12"] and result["alerts"] == 2 and result["digests"] == 1
    drain()

    [digest] = mails_to(OPS)
    assert digest["subject"] == "Cartes qui expirent : 2 clients de Optique Durand (23/11/2026)"
    assert "Labo Martin" in digest["text"] and "Optic Ouest" in digest["text"]
    assert "Visa •••• 4242, valable jusqu'à fin 12/2026" in digest["text"]
    assert "Vision Plus" not in digest["text"] and "Sans Abonnement" not in digest["text"]
    [to_martin] = mails_to("compta@labo-martin.fr")
    assert to_martin["subject"] == ("Votre carte Visa •••• 4242 expire après 12/2026 : "
                                    "mettez-la à jour pour Optique Durand")
    link = next(w for w in to_martin["text"].split() if "/pay/" in w)
    assert link in to_martin["html"]
    opened = payment_links.open_link(link.rsplit("/", 1)[1])
    assert (opened.merchant_id, opened.customer_id) == (merchant.merchant["id"], martin)
    [to_ouest] = mails_to("o@ouest.fr")
    assert to_ouest["subject"].startswith("Your Visa •••• 4242 card expires after 11/2026")
    assert len(mails()) == 3
    assert not [m for m in mails() if "4242424242424242" in m["text"] + m["html"]]

    [alert] = alerts_of(merchant, martin)
    assert alert["type"] == "card_expiring"
    assert alert["details"] == {"card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}}
    assert alert["deliveries"]["customer"]["status"] == "sent"

    # The same day again, and the next days: nothing new.
    for later in (clock.now() + timedelta(hours=1), clock.now() + timedelta(days=1), clock.now() + timedelta(days=2)):
        clock.set(later)
        again = jobs.card_expiry_scan(clock.now())
        assert again["alerts"] == 0 and again["digests"] == 0
        drain()
    assert len(mails()) == 3


def test_a_card_renewed_by_the_card_updater_sends_nothing(merchant, clock):
    offer_id = simple_offer(merchant)
    # Renewed at Stripe, and the webhook not (yet) here: the scan reads Stripe first.
    quiet = customer(merchant, "Labo Martin", "compta@labo-martin.fr", offer_id=offer_id)
    method = customer_store.get_customer(merchant.merchant["id"], quiet).card()["payment_method_id"]
    payments._client().v1.payment_methods.update(method, params={"card": {"exp_month": 12, "exp_year": 2029}})
    # Renewed and announced by Stripe's payment_method.automatically_updated.
    announced = customer(merchant, "Vision Plus", "admin@visionplus.fr", offer_id=offer_id)
    record = customer_store.get_customer(merchant.merchant["id"], announced)
    updated = payments._client().v1.payment_methods.update(
        record.card()["payment_method_id"], params={"card": {"exp_month": 3, "exp_year": 2030}})
    cards.payment_method_updated({**updated.to_dict(), "customer": record.stripe_customer_id})

    result = jobs.card_expiry_scan(clock.now())
    drain()
    assert result["alerts"] == 0 and result["card_updated"] == 1
    assert mails() == []
    shown = merchant.get(f"/customers/{quiet}").json
    assert shown["default_payment_method"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2029}
    assert shown["open_alerts"] == []


def test_a_refused_send_is_recorded_and_retried_until_sent(merchant, clock):
    martin = customer(merchant, "Labo Martin", "compta@labo-martin.fr")
    ses = boto3.client("ses", region_name="eu-west-1")
    sender = ses.list_identities()["Identities"][0]
    ses.delete_identity(Identity=sender)  # SES now refuses the sender

    jobs.card_expiry_scan(clock.now())
    [result] = drain()
    assert len(result["batchItemFailures"]) == 2  # the digest and the customer's e-mail come back
    assert mails() == []
    [alert] = alerts_of(merchant, martin)
    delivery = alert["deliveries"]["customer"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert delivery["last_error"].startswith("MessageRejected")

    ses.verify_email_identity(EmailAddress=sender)
    # Lost from the queue meanwhile (e.g. parked in its dead-letter queue):
    # the daily job finds the overdue e-mails and queues them again.
    sqs = boto3.client("sqs", region_name="eu-west-1")
    sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName="NotificationsQueue")["QueueUrl"])
    clock.set(clock.now() + timedelta(hours=1))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 2
    drain()
    assert len(mails_to(OPS)) == 1 and len(mails_to("compta@labo-martin.fr")) == 1
    [alert] = alerts_of(merchant, martin)
    assert alert["deliveries"]["customer"]["status"] == "sent" and alert["deliveries"]["customer"]["attempts"] == 2
    clock.set(clock.now() + timedelta(days=1))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 0


def test_two_deliveries_of_one_alert_at_once_send_one_mail(merchant, clock):
    """An SQS duplicate, or a message queued again while the first waited:
    the second worker finds the e-mail being sent and leaves it."""
    from chalicelib.services import alerts

    martin = customer(merchant, "Labo Martin", "compta@labo-martin.fr")
    jobs.card_expiry_scan(clock.now())
    [alert] = alerts_of(merchant, martin)
    message = {"type": "alert", "merchant_id": merchant.merchant["id"], "alert_id": alert["id"]}
    second: list[str] = []

    def meanwhile(params, **_):
        if "compta@labo-martin.fr" in params["Destinations"] and not second:
            try:
                second.append(str(alerts.deliver(message)))
            except alerts.AlertNotDelivered as error:
                second.append(f"not delivered: {error}")

    with ses_hooks(("provide-client-params.ses.SendRawEmail", meanwhile)):
        drain()
    assert second and second[0].startswith("not delivered")
    assert len(mails_to("compta@labo-martin.fr")) == 1
    delivery = alerts_of(merchant, martin)[0]["deliveries"]["customer"]
    assert delivery["status"] == "sent" and delivery["attempts"] == 1
    drain()  # the second worker's message, back: nothing more to send
    assert len(mails_to("compta@labo-martin.fr")) == 1


class WorkerKilled(BaseException):
    """A Lambda timeout or crash: nothing in the worker runs after it."""


def test_a_sender_that_died_holding_the_mail_is_relieved_after_its_lease(merchant, clock):
    from chalicelib.services import alerts

    martin = customer(merchant, "Labo Martin", "compta@labo-martin.fr")
    jobs.card_expiry_scan(clock.now())
    [alert] = alerts_of(merchant, martin)
    message = {"type": "alert", "merchant_id": merchant.merchant["id"], "alert_id": alert["id"]}

    def die(params, **_):
        raise WorkerKilled()

    with ses_hooks(("provide-client-params.ses.SendRawEmail", die)), pytest.raises(WorkerKilled):
        alerts.deliver(message)
    assert alerts_of(merchant, martin)[0]["deliveries"]["customer"]["status"] == "sending"
    with pytest.raises(alerts.AlertNotDelivered):  # the message back at once: the lease still holds
        alerts.deliver(message)
    assert mails_to("compta@labo-martin.fr") == []
    clock.set(clock.now() + alerts.SEND_LEASE + timedelta(seconds=1))
    assert alerts.deliver(message) == {"sent": 1}
    assert len(mails_to("compta@labo-martin.fr")) == 1
    assert alerts_of(merchant, martin)[0]["deliveries"]["customer"]["status"] == "sent"


# ---------------------------------------------------------------------------
# Cancellations and failed payments


def only_mail(subject_start: str) -> dict:
    found = [m for m in mails_to(OPS) if m["subject"].startswith(subject_start)]
    assert len(found) == 1, [m["subject"] for m in mails_to(OPS)]
    return found[0]


def test_each_cancellation_path_alerts_operations_with_its_reason(new_merchant, operator, clock):
    merchant = new_merchant(locale="en")
    offer_id = simple_offer(merchant)
    committed = simple_offer(merchant, code="committed", commitment_months=1)
    ids = {name: customer(merchant, name, f"{name.lower()}@example.fr", card=(12, 2030),
                          offer_id=committed if name == "Committed" else offer_id)
           for name in ("Scheduled", "Now", "Operator", "Committed")}
    subs = {name: merchant.get(f"/subscriptions?customer_id={cid}").json["data"][0]["id"] for name, cid in ids.items()}
    jobs.billing_scheduler(clock.now(), inline=True)
    clock.set(NOW + timedelta(days=3))

    assert merchant.post(f"/subscriptions/{subs['Scheduled']}/cancel",
                         {"at_period_end": True, "reason": "moving"}).status == 200
    assert merchant.post(f"/subscriptions/{subs['Now']}/cancel", {"at_period_end": False}).status == 200
    assert operator.post(f"/admin/merchants/{merchant.merchant['id']}/subscriptions/{subs['Operator']}/cancel",
                         {"at_period_end": False}).status == 200
    assert merchant.post(f"/subscriptions/{subs['Committed']}/cancel", {"at_period_end": True}).status == 200
    drain()

    scheduled = only_mail("Cancellation scheduled: Scheduled's")
    assert "Reason: at the customer's request (moving)" in scheduled["text"]
    assert only_mail("Subscription canceled (at the customer's request): Now")
    assert only_mail("Subscription canceled (by the platform operator): Operator")
    [open_alert] = alerts_of(merchant, ids["Scheduled"])
    assert open_alert["type"] == "cancellation_scheduled" and open_alert["details"]["reason"] == "customer"

    # The period ends: the scheduled cancellations take effect.
    period_end = merchant.get(f"/subscriptions/{subs['Scheduled']}").json["current_period_end"]
    clock.set(datetime.fromisoformat(period_end.replace("Z", "+00:00")) + timedelta(minutes=1))
    jobs.billing_scheduler(clock.now(), inline=True)
    drain()
    assert only_mail("Subscription canceled (at the customer's request): Scheduled")
    assert only_mail("Subscription canceled (end of commitment): Committed")
    assert [a["type"] for a in alerts_of(merchant, ids["Scheduled"])] == ["subscription_canceled"]
    # Nothing is sent twice.
    jobs.billing_scheduler(clock.now(), inline=True)
    drain()
    assert len(mails_to(OPS)) == 6


def test_a_dunning_failure_alerts_each_attempt_then_the_cancellation(new_merchant, clock):
    merchant = new_merchant(dunning_retry_days=[2])
    response = merchant.post("/customers", {"name": "Labo Martin", "email": "compta@labo-martin.fr", "country": "FR"})
    martin = response.json["id"]
    add_card(merchant, martin, exp_month=12, exp_year=2030, number=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(merchant, martin, simple_offer(merchant), start_at=iso(NOW))
    jobs.billing_scheduler(clock.now(), inline=True)
    drain()
    first = only_mail("Échec de paiement : 58,80 € pour Labo Martin (facture OD2026-000001)")
    assert "tentative 1" in first["text"] and "Prochaine tentative : 25/11/2026" in first["text"]
    assert "Motif : carte refusée" in first["text"] and "/pay/" in first["text"]
    [alert] = alerts_of(merchant, martin)
    assert alert["type"] == "payment_failed" and alert["details"]["next_payment_attempt"] == "2026-11-25T06:00:00Z"

    clock.set(NOW + timedelta(days=2, minutes=1))
    jobs.dunning_scheduler(clock.now(), inline=True)
    jobs.dunning_scheduler(clock.now(), inline=True)
    drain()
    last = [m for m in mails_to(OPS) if "tentative 2" in m["text"]]
    assert len(last) == 1 and "Plus de relance : la facture est irrécouvrable" in last[0]["text"]
    canceled = only_mail("Abonnement résilié (paiement impossible (dernière relance refusée)) : Labo Martin")
    assert sub["id"] in canceled["text"]
    assert len(mails_to(OPS)) == 3
    # Open: the cancellation, and the invoice's latest failure (it stays unpaid).
    shown = {a["type"]: a for a in alerts_of(merchant, martin)}
    assert set(shown) == {"subscription_canceled", "payment_failed"}
    assert shown["subscription_canceled"]["details"]["reason"] == "payment_failed"
    assert shown["payment_failed"]["details"]["attempt"] == 2


def test_the_notifications_sample_of_a_missing_alert_is_done(aws):
    from app import send_notifications

    body = json.dumps({"type": "alert", "merchant_id": "mer_01jdf7k3m4n5p6q7r8s9t0v1w2",
                       "alert_id": "alr_aaaaaaaaaaaaaaaaaaaaaaaaaa"})
    event = sqs_event([{"MessageId": "m1", "ReceiptHandle": "h", "Body": body}],
                      "https://sqs.eu-west-1.amazonaws.com/123456789012/NotificationsQueue")
    assert send_notifications(event, LocalContext()) == {"batchItemFailures": []}



def test_a_counter_reset_alerts_operations_once(merchant, clock, client):
    from tests.integration.test_billing import device_reading

    martin = customer(merchant, "Labo Martin", "compta@labo-martin.fr", card=(12, 2030))
    [sub] = merchant.get(f"/subscriptions?customer_id={martin}").json["data"]
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub["id"]}).status == 201
    merchant_id = merchant.merchant["id"]
    clock.set(NOW + timedelta(hours=3))
    device_reading(client, merchant_id, 1, NOW + timedelta(hours=1), montages=12345)
    device_reading(client, merchant_id, 2, NOW + timedelta(hours=2), montages=3)
    device_reading(client, merchant_id, 2, NOW + timedelta(hours=2), montages=3)  # redelivered: one fact
    drain()
    [mail] = mails_to(OPS)
    assert mail["subject"] == "Remise à zéro du compteur montages sur neksia-0042 chez Labo Martin"
    assert "est revenu de 12345 à 3 (relevé 2 du" in mail["text"]
    [alert] = alerts_of(merchant, martin)
    assert alert["type"] == "counter_reset" and alert["details"]["previous"] == "12345"
