"""The packaged stage's operations and hardening, one property a test: the
devices' IoT policy, provisioning and rules, the alarms (throttles, billing
lag, a missed scheduled run), X-Ray tracing, the queues (visibility,
retention, encryption), SES senders, the data key and each function's
Stripe key. The template is the one `make package` writes, after the SAM
transform (tests/integration/test_infra.py's fixtures, built once for this
module); the packager's refusals are checked on chalice-like templates.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from chalicelib.domain.things import IOT_SQL_THING_NAME
from infra.aws.functions import app_functions, chalice_config, event_source, policy_file
from infra.aws.operations import VISIBILITY_FACTOR, schedule_seconds
from infra.aws.template import TemplateError, complete, getatt_target
from tests.integration.test_infra import chalice_like, lambda_function, of_type, sqs_event, statements, the_app

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")
XRAY = {"Sid": "WriteTraces", "Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Resource": "*"}
# The functions that call Stripe (chalicelib/payments.py), each with its own key.
STRIPE_CALLERS = {"api_handler", "billing_worker", "card_expiry_scan"}


def rule(resources: dict, logical_id: str) -> dict:
    return resources[logical_id]["Properties"]["TopicRulePayload"]


def function_of(resources: dict, invoked) -> str:
    """The function a trigger invokes (through the alias `live`, or itself)."""
    target = invoked.get("Ref") if isinstance(invoked, dict) else None
    alias = resources.get(target, {})
    if alias.get("Type") == "AWS::Lambda::Alias":
        return alias["Properties"]["FunctionName"]["Ref"]
    return getatt_target(invoked) or target


# -- IoT: the device policy, provisioning, the rules --------------------------------


def test_a_device_connects_only_as_its_thing_and_publishes_only_its_counters(deployed):
    policy = deployed["DevicePolicy"]["Properties"]
    assert policy["PolicyName"] == {"Fn::Sub": "${AWS::StackName}-device"}
    connect, publish = policy["PolicyDocument"]["Statement"]
    assert (connect["Effect"], connect["Action"]) == ("Allow", "iot:Connect")
    assert connect["Resource"]["Fn::Sub"].endswith(":client/${!iot:Connection.Thing.ThingName}")
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    assert (publish["Effect"], publish["Action"]) == ("Allow", "iot:Publish")
    assert publish["Resource"]["Fn::Sub"].endswith(
        ":topic/billing/${!iot:Connection.Thing.Attributes[merchant_id]}/"
        "${!iot:Connection.Thing.Attributes[device_id]}/counters")
    # Nothing else: no subscribe, no other topic, no wildcard.
    assert "*" not in json.dumps(policy["PolicyDocument"])


def test_fleet_provisioning_makes_the_thing_its_certificate_and_attaches_the_device_policy(deployed):
    template = deployed["DeviceProvisioningTemplate"]["Properties"]
    assert template["Enabled"] is True
    assert template["ProvisioningRoleArn"] == {"Fn::GetAtt": ["DeviceProvisioningRole", "Arn"]}
    body = json.loads(template["TemplateBody"]["Fn::Sub"].replace("${DevicePolicy}", "the-device-policy"))
    assert set(body["Parameters"]) == {"MerchantId", "DeviceId", "ThingName", "AWS::IoT::Certificate::Id"}
    resources = body["Resources"]
    thing = resources["thing"]["Properties"]
    assert thing["ThingName"] == {"Ref": "ThingName"}
    assert thing["AttributePayload"] == {"merchant_id": {"Ref": "MerchantId"}, "device_id": {"Ref": "DeviceId"}}
    assert resources["certificate"] == {"Type": "AWS::IoT::Certificate", "Properties": {
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}}
    assert resources["policy"] == {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "the-device-policy"}}
    role = deployed["DeviceProvisioningRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "iot.amazonaws.com"} and "aws:SourceAccount" in json.dumps(trust)
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSIoTThingsRegistration"}]


def test_a_message_counts_only_from_the_thing_its_topic_names(deployed):
    accepted = rule(deployed, "UsageTopicRule")
    assert accepted["Sql"].endswith(f" FROM 'billing/+/+/counters' WHERE clientid() = {IOT_SQL_THING_NAME}")
    assert [a["Sqs"]["QueueUrl"] for a in accepted["Actions"]] == [{"Ref": "UsageQueue"}]


def test_every_other_message_goes_to_the_dead_letter_queue_with_its_reason(deployed):
    refused = rule(deployed, "UsageWrongClientRule")
    # The exact opposite of the accepting rule's condition: both are
    # Booleans of two strings (clientid() is `n/a` off MQTT), so a message
    # goes one way or the other, never nowhere.
    assert refused["Sql"].endswith(f" FROM 'billing/+/+/counters' WHERE clientid() <> {IOT_SQL_THING_NAME}")
    assert refused["AwsIotSqlVersion"] == rule(deployed, "UsageTopicRule")["AwsIotSqlVersion"]
    assert refused["RuleDisabled"] is False
    assert [a["Sqs"]["QueueUrl"] for a in refused["Actions"]] == [{"Ref": "UsageDeadLetterQueue"}]
    assert refused["ErrorAction"]["Sqs"]["QueueUrl"] == {"Ref": "UsageDeadLetterQueue"}
    selected = set(re.findall(r" AS (\w+)", refused["Sql"]))
    assert {"reason", "reason_code", "client_id", "thing_name", "payload_base64", "parked_at"} <= selected
    assert "'not_the_thing' AS reason_code" in refused["Sql"]
    # The rule's role may send there already (and nowhere else).
    [policy] = deployed["UsageTopicRuleRole"]["Properties"]["Policies"]
    assert {"Fn::GetAtt": ["UsageDeadLetterQueue", "Arn"]} in policy["PolicyDocument"]["Statement"][0]["Resource"]


def test_a_refused_message_is_never_counted_when_the_dead_letters_are_redriven():
    """What UsageWrongClientRule parks has no `original` to unwrap: the
    ingestion refuses it again, so redriving the whole dead-letter queue
    (the console's "Start DLQ redrive") cannot count an impostor's reading."""
    from chalicelib.services.ingest import PoisonMessage, parse_message

    payload = {"seq": 1, "ts": "2026-11-22T10:00:00Z", "counters": {"montages": 5},
               "merchant_id": "mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "device_id": "neksia-0042"}
    parked = {"reason_code": "not_the_thing", "reason": "published by the client x, not by the thing ...",
              "client_id": "x", "thing_name": "mer_01jdf7k3m4n5p6q7r8s9t0v1w2-0123", "client_principal": "abc",
              "source_topic": "billing/mer_01jdf7k3m4n5p6q7r8s9t0v1w2/neksia-0042/counters",
              "payload_base64": base64.b64encode(json.dumps(payload).encode()).decode(),
              "parked_at": "2026-11-22T10:00:01.000Z"}
    with pytest.raises(PoisonMessage) as refused:
        parse_message(json.dumps(parked))
    assert refused.value.code == "invalid_message"


# -- tracing -------------------------------------------------------------------------


def test_every_function_traces_actively(deployed):
    for name in app_functions(the_app()):
        _, function = lambda_function(deployed, name)
        assert function["TracingConfig"] == {"Mode": "Active"}, name


@pytest.mark.parametrize("stage", STAGES)
def test_every_policy_lets_its_function_write_its_traces(stage):
    for name in app_functions(the_app()):
        assert XRAY in statements(json.loads(policy_file(name, stage).read_text())), name


def test_the_xray_sdk_is_not_in_the_package(packaged):
    """Lambda sends the invocation traces itself; the SDK (and wrapt) would
    take the zip over its budget (docs/deploy.md, "Tracing")."""
    import zipfile

    _, zip_path = packaged
    with zipfile.ZipFile(zip_path) as archive:
        assert not [n for n in archive.namelist() if n.startswith(("aws_xray_sdk/", "wrapt/"))]


# -- alarms --------------------------------------------------------------------------


def lambda_alarms(resources: dict, metric: str) -> dict[str, dict]:
    return {a["Properties"]["Dimensions"][0]["Value"]["Ref"]: a["Properties"]
            for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
            if a["Properties"]["Namespace"] == "AWS/Lambda" and a["Properties"]["MetricName"] == metric}


def test_every_function_has_a_throttles_alarm(deployed):
    alarms = lambda_alarms(deployed, "Throttles")
    assert set(alarms) == {lambda_function(deployed, name)[0] for name in app_functions(the_app())}
    for alarm in alarms.values():
        assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
            "Sum", "GreaterThanOrEqualToThreshold", 1)
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_a_scheduled_function_that_misses_its_run_raises_an_alarm(deployed):
    app = the_app()
    scheduled = {name for name, kind in app_functions(app).items() if kind == "schedule"}
    alarms = lambda_alarms(deployed, "Invocations")
    assert set(alarms) == {lambda_function(deployed, name)[0] for name in scheduled} and scheduled
    for name in scheduled:
        source = event_source(app, name)
        expression = getattr(source.schedule_expression, "to_string", lambda: source.schedule_expression)()
        alarm = alarms[lambda_function(deployed, name)[0]]
        assert alarm["Period"] == schedule_seconds(expression, name) and alarm["EvaluationPeriods"] == 1
        assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
            "Sum", "LessThanThreshold", 1)
        assert alarm["TreatMissingData"] == "breaching", "no invocation at all is no data: a missed run"
        assert alarm["Period"] % 60 == 0 and alarm["Period"] <= 7 * 86_400, "what CloudWatch accepts"
    from chalicelib.jobs import SCHEDULED_JOBS

    assert {job.name: job.minutes * 60 for job in SCHEDULED_JOBS} == {
        name: alarms[lambda_function(deployed, name)[0]]["Period"] for name in scheduled}


def test_a_late_billing_run_raises_an_alarm(deployed):
    alarm = deployed["BillingLagAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["BillingQueue", "QueueName"]}}]
    assert alarm["Threshold"] == {"Ref": "BillingLagAlarmSeconds"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# -- queues --------------------------------------------------------------------------


def test_every_source_queue_hides_a_message_six_times_as_long_as_its_consumer_runs(deployed):
    mappings = [m["Properties"] for m in of_type(deployed, "AWS::Lambda::EventSourceMapping").values()
                if deployed[getatt_target(m["Properties"]["EventSourceArn"])]["Type"] == "AWS::SQS::Queue"]
    assert len(mappings) == sum(kind == "sqs" for kind in app_functions(the_app()).values())
    for mapping in mappings:
        queue = deployed[getatt_target(mapping["EventSourceArn"])]["Properties"]
        function = deployed[function_of(deployed, mapping["FunctionName"])]["Properties"]
        assert queue["VisibilityTimeout"] >= VISIBILITY_FACTOR * function["Timeout"], mapping["EventSourceArn"]


def test_every_dead_letter_queue_keeps_a_message_longer_than_its_source(deployed):
    sources = {k: v["Properties"] for k, v in of_type(deployed, "AWS::SQS::Queue").items()
               if "RedrivePolicy" in v["Properties"]}
    assert sources
    for queue_id, queue in sources.items():
        target = deployed[getatt_target(queue["RedrivePolicy"]["deadLetterTargetArn"])]["Properties"]
        assert target["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"], queue_id


def test_every_queue_is_encrypted(deployed):
    queues = of_type(deployed, "AWS::SQS::Queue")
    assert len(queues) >= 10
    for queue_id, queue in queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, queue_id


def test_the_packager_refuses_a_queue_that_breaks_these_rules():
    def refused(template, match):
        with pytest.raises(TemplateError, match=match):
            complete(template, "dev")

    template = chalice_like("send_notifications", {"E": sqs_event("NotificationsQueue")}, timeout=61)
    refused(template, "at least 6 times send_notifications's timeout")
    template = chalice_like("send_notifications", {"E": sqs_event("NotificationsQueue")})
    template["Resources"]["NotificationsQueue"]["Properties"]["MessageRetentionPeriod"] = 1209600
    refused(template, "NotificationsDeadLetterQueue keeps a message 1209600 s")
    template = chalice_like("send_notifications", {"E": sqs_event("NotificationsQueue")})
    template["Resources"]["UsageQueue"]["Properties"]["SqsManagedSseEnabled"] = False
    refused(template, "UsageQueue: every queue is encrypted")
    template = chalice_like("nightly", {"E": {"Type": "Schedule", "Properties": {"Schedule": "cron(0 3 * * ? *)"}}})
    refused(template, "not a rate")
    completed = complete(chalice_like("nightly", {"E": {"Type": "Schedule", "Properties": {
        "Schedule": "rate(2 hours)"}}}), "dev")
    assert completed["Resources"]["NightlyHeartbeatAlarm"]["Properties"]["Period"] == 7200
    assert completed["Resources"]["Nightly"]["Properties"]["Tracing"] == "Active"


# -- SES -----------------------------------------------------------------------------


def ses_statements(name: str, stage: str) -> list[dict]:
    document = json.loads(policy_file(name, stage).read_text())
    return [s for s in statements(document) if any(a.startswith("ses:") for a in
                                                   (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))]


@pytest.mark.parametrize("stage", STAGES)
def test_mail_goes_out_from_the_alert_sender_only(stage):
    senders = {name for name in app_functions(the_app()) if ses_statements(name, stage)}
    assert senders == {"api_handler", "send_notifications"}
    for name in senders:
        for statement in ses_statements(name, stage):
            assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "AlertSender"}}}, name


@pytest.mark.parametrize("stage", STAGES)
def test_the_mailers_may_send_only_the_raw_email_the_code_sends(stage):
    """chalicelib/notify.py sends every e-mail (alerts, payment links) with
    SES's SendRawEmail; Cognito sends the staff invitations itself."""
    sources = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    called = {"".join(part.title() for part in method.split("_"))
              for method in re.findall(r"_ses\(\)\.(\w+)\(", sources)}
    assert called == {"SendRawEmail"}
    for name in ("api_handler", "send_notifications"):
        actions = {a for s in ses_statements(name, stage)
                   for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
        assert actions == {f"ses:{action}" for action in called}, name


# -- the data key and the secrets ----------------------------------------------------------


def test_the_data_key_rotates_and_outlives_the_stack(deployed):
    key = deployed["DataKey"]
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True
    assert deployed["DataKeyAlias"]["Properties"] == {"AliasName": {"Fn::Sub": "alias/${AWS::StackName}-data"},
                                                      "TargetKeyId": {"Ref": "DataKey"}}
    dynamodb, = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Principal"] == {"AWS": "*"}]
    assert dynamodb["Condition"]["StringEquals"] == {
        "kms:CallerAccount": {"Ref": "AWS::AccountId"},
        "kms:ViaService": {"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"}}


def test_the_tables_are_encrypted_with_the_data_key(deployed):
    tables = of_type(deployed, "AWS::DynamoDB::Table")
    assert tables
    for table_id, table in tables.items():
        assert table["Properties"]["SSESpecification"] == {
            "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "DataKey"}}, table_id


@pytest.mark.parametrize("stage", STAGES)
def test_a_function_decrypts_with_the_data_key_through_ssm_only(stage):
    for name in app_functions(the_app()):
        found = statements(json.loads(policy_file(name, stage).read_text()))
        reads = any("ssm:GetParameter" in json.dumps(s["Action"]) for s in found)
        decrypts = [s for s in found if "kms:" in json.dumps(s["Action"])]
        assert decrypts == ([{"Sid": "DecryptSecrets", "Effect": "Allow", "Action": "kms:Decrypt",
                              "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]},
                              "Condition": {"StringEquals": {
                                  "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}}}}]
                            if reads else []), name


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_that_calls_stripe_reads_its_own_key(stage):
    config = chalice_config()["stages"][stage]
    assert "STRIPE_SECRET_KEY_PARAMETER" not in config["environment_variables"]
    per_function = {name: f.get("environment_variables", {}).get("STRIPE_SECRET_KEY_PARAMETER")
                    for name, f in config.get("lambda_functions", {}).items()}
    assert per_function == {name: f"/billing/{stage}/stripe-key/{name}" for name in STRIPE_CALLERS}
    for name in app_functions(the_app()):
        text = policy_file(name, stage).read_text()
        keys = set(re.findall(r"/stripe-key/(\w+)", text))
        assert keys == ({name} if name in STRIPE_CALLERS else set()), name
        assert "stripe-secret-key" not in text


def test_the_packaged_functions_name_their_own_stripe_key(deployed):
    for name in app_functions(the_app()):
        variables = lambda_function(deployed, name)[1]["Environment"]["Variables"]
        expected = f"/billing/dev/stripe-key/{name}" if name in STRIPE_CALLERS else None
        assert variables.get("STRIPE_SECRET_KEY_PARAMETER") == expected, name
        assert not {"STRIPE_SECRET_KEY", "ADMIN_API_KEY", "TOKEN_SIGNING_KEY"} & set(variables), name


def test_the_permission_check_of_the_events_tests_holds_ses_to_the_sender():
    """tests/integration/test_events.py checks every call against the policy
    files, conditions included: an e-mail from another address is refused."""
    from tests.integration.aws_permissions import FunctionPolicy, iam_requests

    environment = {"TABLE_NAME": "billing", "IDEMPOTENCY_TABLE_NAME": "billing-idempotency",
                   "EVENT_BUS_NAME": "billing", "ALERT_SENDER": "billing@example.com",
                   "STAFF_USER_POOL_ID": "eu-west-1_pool", "STAFF_USER_POOL_CLIENT_ID": "client"}
    for name in ("api_handler", "send_notifications"):
        policy = FunctionPolicy(name, environment)

        def allowed(sender: str, operation: str = "SendRawEmail") -> bool:
            requests = iam_requests("ses", operation, {"Source": sender, "ConfigurationSetName": "billing-alerts",
                                                       "RawMessage": {"Data": b""}})
            return all(policy.allows(request) for request in requests)

        assert allowed("billing@example.com"), name
        assert allowed("Billing <billing@example.com>"), name
        assert not allowed("someone-else@example.com"), name
        assert not allowed("billing@example.com", "SendEmail"), name
        # The configuration set is a resource the policy names whoever sends:
        # only the condition refuses another sender there.
        [_, through_the_set] = iam_requests("ses", "SendRawEmail", {
            "Source": "someone-else@example.com", "ConfigurationSetName": "billing-alerts"})
        assert through_the_set.resources[0].endswith(":configuration-set/billing-alerts")
        assert not policy.allows(through_the_set), name
        policy.statements = [{k: v for k, v in s.items() if k != "Condition"} for s in policy.statements]
        assert policy.allows(through_the_set), "without the condition the set would let it through"
