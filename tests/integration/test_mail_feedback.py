"""What SES reports after accepting an alert e-mail, on moto: a bounce is
written on the alert's delivery and the e-mail is sent again the next day,
until it is undeliverable; a partial bounce and a complaint are recorded; a
report delivered twice, late, or before its sending is recorded is handled.

Alert e-mails go through the configuration set of the settings; SES's event
destination publishes its reports on the feedback topic, which feeds the mail
feedback queue. moto's SES accepts the configuration set but publishes
nothing, so `ses_reports` publishes on that topic what SES would, built from
the request the application really sent (its tags, its recipients, the
message id SES answered), and the queue is drained through `mail_feedback`,
as Lambda would."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import boto3
import pytest

from chalicelib.services import alerts
from chalicelib.store import alerts as alert_store
from infra.local.lambda_events import LocalContext, sqs_event
from tests.integration.test_alerts import NOW, OPS, alerts_of, customer, drain, drain_queue, mails_to, ses_hooks

CUSTOMER = "compta@labo-martin.fr"


@pytest.fixture
def clock_start():
    return NOW


@pytest.fixture
def ses_sent(aws):
    """Every SendRawEmail request the application makes, with SES's answer."""
    sent: list[dict] = []

    def request(params, **_):
        sent.append({"params": dict(params), "message_id": None})

    def answer(parsed, **_):
        sent[-1].update(message_id=parsed.get("MessageId"))

    with ses_hooks(("provide-client-params.ses.SendRawEmail", request), ("after-call.ses.SendRawEmail", answer)):
        yield sent


def sent_to(ses_sent: list[dict], address: str) -> list[dict]:
    return [s for s in ses_sent if address in s["params"]["Destinations"]]


def report(sent: dict, kind: str, **details) -> dict:
    """SES's event record about one sent e-mail (as its configuration set's
    SNS destination publishes it)."""
    params = sent["params"]
    tags = {t["Name"]: [t["Value"]] for t in params.get("Tags", [])}
    tags["ses:configuration-set"] = [params["ConfigurationSetName"]]
    mail = {"timestamp": "2026-11-23T06:00:01.000Z", "source": params["Source"], "messageId": sent["message_id"],
            "destination": list(params["Destinations"]), "tags": tags}
    body = {"eventType": kind, "mail": mail}
    if kind == "Bounce":
        recipients = details.get("recipients", params["Destinations"])
        body["bounce"] = {"bounceType": details.get("bounce_type", "Permanent"), "bounceSubType": "General",
                          "bouncedRecipients": [{"emailAddress": r, "action": "failed", "status": "5.1.1",
                                                 "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
                                                for r in recipients],
                          "timestamp": "2026-11-23T06:00:03.000Z",
                          "feedbackId": details.get("feedback_id", f"0100{uuid.uuid4().hex}-000000")}
    elif kind == "Complaint":
        body["complaint"] = {"complainedRecipients": [{"emailAddress": r} for r in params["Destinations"]],
                             "complaintFeedbackType": "abuse", "timestamp": "2026-11-23T07:00:00.000Z",
                             "feedbackId": f"0100{uuid.uuid4().hex}-000000"}
    elif kind == "Reject":
        body["reject"] = {"reason": "Bad content"}
    return body


def ses_reports(*bodies: dict) -> None:
    """Publish SES's reports on the feedback topic, as SES does."""
    sns = boto3.client("sns", region_name="eu-west-1")
    [topic] = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":MailFeedbackTopic")]
    for body in bodies:
        sns.publish(TopicArn=topic, Message=json.dumps(body))


def drain_feedback() -> list[dict]:
    """Hand the mail feedback queue to its consumer, as Lambda would."""
    from app import mail_feedback

    return drain_queue("MailFeedbackQueue", mail_feedback)


def customer_delivery(merchant, customer_id: str) -> dict:
    [alert] = alerts_of(merchant, customer_id)
    return alert["deliveries"]["customer"]


def stored_delivery(merchant, customer_id: str) -> dict:
    """The customer delivery as stored (what the API does not show)."""
    [alert] = alerts_of(merchant, customer_id)
    return alert_store.get_alert(merchant.merchant["id"], alert["id"]).deliveries()["customer"]


def expiring_card_mail_sent(merchant, clock) -> str:
    martin = customer(merchant, "Labo Martin", CUSTOMER)
    from chalicelib import jobs

    jobs.card_expiry_scan(clock.now())
    drain()
    assert len(mails_to(CUSTOMER)) == 1
    return martin


def test_alert_mail_goes_through_the_configuration_set_with_tags_naming_its_delivery(merchant, clock, ses_sent):
    martin = expiring_card_mail_sent(merchant, clock)
    [to_customer] = sent_to(ses_sent, CUSTOMER)
    [alert] = alerts_of(merchant, martin)
    assert to_customer["params"]["ConfigurationSetName"] == "billing-alerts"
    assert {t["Name"]: t["Value"] for t in to_customer["params"]["Tags"]} == {
        "notification": "alert", "merchant": merchant.merchant["id"], "alert": alert["id"], "audience": "customer"}
    [digest] = sent_to(ses_sent, OPS)
    assert {t["Name"]: t["Value"] for t in digest["params"]["Tags"]} == {
        "notification": "digest", "merchant": merchant.merchant["id"], "kind": "card_expiring",
        "day": "2026-11-23", "audience": "operations"}


def test_a_bounce_is_recorded_then_the_mail_is_sent_again_the_next_day(merchant, clock, ses_sent):
    from chalicelib import jobs

    martin = expiring_card_mail_sent(merchant, clock)
    [sent] = sent_to(ses_sent, CUSTOMER)
    ses_reports(report(sent, "Bounce"))
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []

    delivery = customer_delivery(merchant, martin)
    assert delivery["status"] == "bounced" and delivery["attempts"] == 1
    assert delivery["last_error"].startswith("bounce Permanent/General: compta@labo-martin.fr: smtp; 550")
    # Not yet: a bounced e-mail waits a day (the address may be corrected).
    clock.set(clock.now() + timedelta(hours=2))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 0
    clock.set(NOW + timedelta(days=1, minutes=1))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 1
    drain()
    assert len(mails_to(CUSTOMER)) == 2
    delivery = customer_delivery(merchant, martin)
    assert delivery["status"] == "sent" and delivery["attempts"] == 2 and delivery["last_error"] is None


def test_three_bounces_make_the_mail_undeliverable_and_it_is_no_longer_sent(merchant, clock, ses_sent):
    from chalicelib import jobs

    martin = expiring_card_mail_sent(merchant, clock)
    for day in (1, 2, 3):
        ses_reports(report(sent_to(ses_sent, CUSTOMER)[-1], "Bounce"))
        drain_feedback()
        clock.set(NOW + timedelta(days=day, minutes=1))
        jobs.card_expiry_scan(clock.now())
        drain()
    assert len(mails_to(CUSTOMER)) == 3
    delivery = customer_delivery(merchant, martin)
    assert delivery["status"] == "undeliverable" and delivery["attempts"] == 3
    assert "user unknown" in delivery["last_error"]
    clock.set(NOW + timedelta(days=5))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 0
    assert len(mails_to(CUSTOMER)) == 3


def test_a_rejection_is_a_bounce(merchant, clock, ses_sent):
    martin = expiring_card_mail_sent(merchant, clock)
    ses_reports(report(sent_to(ses_sent, CUSTOMER)[0], "Reject"))
    drain_feedback()
    delivery = customer_delivery(merchant, martin)
    assert delivery["status"] == "bounced" and delivery["last_error"] == "rejected by SES: Bad content"


def test_a_report_delivered_twice_counts_once(merchant, clock, ses_sent):
    martin = expiring_card_mail_sent(merchant, clock)
    bounce = report(sent_to(ses_sent, CUSTOMER)[0], "Bounce")
    ses_reports(bounce, bounce)
    drain_feedback()
    assert stored_delivery(merchant, martin)["bounces"] == 1
    ses_reports(bounce)
    [result] = drain_feedback()
    assert result["batchItemFailures"] == [] and stored_delivery(merchant, martin)["bounces"] == 1


def test_a_late_report_about_an_earlier_mail_is_ignored(merchant, clock, ses_sent):
    from chalicelib import jobs

    martin = expiring_card_mail_sent(merchant, clock)
    first = sent_to(ses_sent, CUSTOMER)[0]
    ses_reports(report(first, "Bounce", bounce_type="Transient"))
    drain_feedback()
    clock.set(NOW + timedelta(days=1, minutes=1))
    jobs.card_expiry_scan(clock.now())
    drain()
    assert customer_delivery(merchant, martin)["status"] == "sent"
    # A second report about the first e-mail arrives after the second was sent.
    ses_reports(report(first, "Bounce"))
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []
    assert customer_delivery(merchant, martin)["status"] == "sent"


def test_a_report_arriving_before_its_sending_is_recorded_comes_back(merchant, clock, ses_sent):
    """SES reports within a second; the sender writes `sent` just after SES
    answered. A report handled in between fails alone and is applied when
    it comes back."""
    martin = customer(merchant, "Labo Martin", CUSTOMER)
    early: list[dict] = []

    def bounce_at_once(parsed, **_):
        sent = ses_sent[-1]
        if CUSTOMER in sent["params"]["Destinations"]:
            ses_reports(report(sent, "Bounce"))
            early.extend(drain_feedback())

    from chalicelib import jobs

    with ses_hooks(("after-call.ses.SendRawEmail", bounce_at_once)):
        jobs.card_expiry_scan(clock.now())
        drain()
    [result] = early
    assert len(result["batchItemFailures"]) == 1
    assert customer_delivery(merchant, martin)["status"] == "sent"
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []
    assert customer_delivery(merchant, martin)["status"] == "bounced"


def test_a_partial_bounce_and_a_complaint_are_recorded_and_not_resent(new_merchant, clock, ses_sent):
    from chalicelib import jobs

    merchant = new_merchant(alert_emails=[OPS, "gone@optique-durand.fr"])
    martin = customer(merchant, "Labo Martin", CUSTOMER)
    jobs.card_expiry_scan(clock.now())
    drain()
    [digest_mail] = sent_to(ses_sent, OPS)
    ses_reports(report(digest_mail, "Bounce", recipients=["gone@optique-durand.fr"]))
    ses_reports(report(sent_to(ses_sent, CUSTOMER)[0], "Complaint"))
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []

    digest = alert_store.get_digest(merchant.merchant["id"], "card_expiring", "2026-11-23")
    operations = digest.deliveries()["operations"]
    assert operations["status"] == "sent" and operations["bounced_recipients"] == ["gone@optique-durand.fr"]
    assert "gone@optique-durand.fr: smtp; 550" in operations["last_error"]
    [alert] = alerts_of(merchant, martin)
    stored = alert_store.get_alert(merchant.merchant["id"], alert["id"]).deliveries()["customer"]
    assert stored["status"] == "sent" and stored["complaint"]["recipients"] == [CUSTOMER]
    clock.set(NOW + timedelta(days=2))
    assert jobs.card_expiry_scan(clock.now())["overdue"] == 0


def test_reports_about_something_else_are_done(aws):
    ses_reports({"eventType": "Delivery", "mail": {"messageId": "x", "tags": {}}},
                {"eventType": "Bounce", "mail": {"messageId": "y", "tags": {"notification": ["alert"],
                                                                             "merchant": ["mer_x"],
                                                                             "alert": ["alr_x"],
                                                                             "audience": ["customer"]}},
                 "bounce": {"bounceType": "Permanent", "bouncedRecipients": []}})
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []


def test_the_feedback_consumer_unwraps_an_sns_envelope(merchant, clock, ses_sent):
    martin = expiring_card_mail_sent(merchant, clock)
    body = report(sent_to(ses_sent, CUSTOMER)[0], "Bounce")
    envelope = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": "arn:aws:sns:eu-west-1:1:t",
                "Message": json.dumps(body)}
    assert alerts.mail_feedback(body)["outcome"] == "bounced"
    from app import mail_feedback

    event = sqs_event([{"MessageId": "m1", "ReceiptHandle": "r", "Body": json.dumps(envelope),
                        "MD5OfBody": "", "Attributes": {}}], "https://sqs/1/MailFeedbackQueue")
    assert mail_feedback(event, LocalContext())["batchItemFailures"] == []
    assert stored_delivery(merchant, martin)["bounces"] == 1  # the same report: once


def test_a_delivery_recorded_with_its_last_message_id_only_takes_its_reports(merchant, clock, ses_sent):
    """Deliveries sent before every message id was kept name the last one."""
    martin = expiring_card_mail_sent(merchant, clock)
    [alert] = alerts_of(merchant, martin)
    record = alert_store.get_alert(merchant.merchant["id"], alert["id"])
    deliveries = record.deliveries()
    del deliveries["customer"]["message_ids"]
    version = int(record.version)
    record.set_deliveries(deliveries, None)
    assert alert_store.save_deliveries(record, version)

    ses_reports(report(sent_to(ses_sent, CUSTOMER)[0], "Bounce"))
    [result] = drain_feedback()
    assert result["batchItemFailures"] == []
    assert customer_delivery(merchant, martin)["status"] == "bounced"


def test_recipients_reported_one_by_one_bounce_the_mail_when_all_have(new_merchant, clock, ses_sent):
    from chalicelib import jobs

    merchant = new_merchant(alert_emails=[OPS, "gone@optique-durand.fr"])
    customer(merchant, "Labo Martin", CUSTOMER)
    jobs.card_expiry_scan(clock.now())
    drain()
    [digest_mail] = sent_to(ses_sent, OPS)

    def operations():
        return alert_store.get_digest(merchant.merchant["id"], "card_expiring", "2026-11-23").deliveries()["operations"]

    ses_reports(report(digest_mail, "Bounce", recipients=["gone@optique-durand.fr"]))
    drain_feedback()
    assert operations()["status"] == "sent"
    ses_reports(report(digest_mail, "Bounce", recipients=[OPS]))
    drain_feedback()
    assert operations()["status"] == "bounced" and operations()["bounces"] == 1
    assert operations()["bounced_recipients"] == sorted([OPS, "gone@optique-durand.fr"])
    ses_reports(report(digest_mail, "Bounce", recipients=[OPS]))  # another report on the same message
    drain_feedback()
    assert operations()["status"] == "bounced" and operations()["bounces"] == 1


def test_a_report_that_loses_a_race_for_the_alert_comes_back_and_counts_once(merchant, clock, ses_sent,
                                                                             monkeypatch):
    martin = expiring_card_mail_sent(merchant, clock)
    real_save = alert_store.save_deliveries
    lost = []

    def written_meanwhile(record, expected_version):
        if not lost:
            lost.append(expected_version)
            return False
        return real_save(record, expected_version)

    monkeypatch.setattr(alert_store, "save_deliveries", written_meanwhile)
    ses_reports(report(sent_to(ses_sent, CUSTOMER)[0], "Bounce"))
    [first, second] = drain_feedback() + drain_feedback()
    assert len(first["batchItemFailures"]) == 1 and second["batchItemFailures"] == []
    assert stored_delivery(merchant, martin)["bounces"] == 1
    assert customer_delivery(merchant, martin)["status"] == "bounced"
