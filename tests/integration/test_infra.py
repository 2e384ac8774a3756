"""The deployable stage: every handler of app.py packaged with its trigger,
its own least-privilege policy, its logs and alarms; the template free of
cfn-lint errors and accepted by the SAM transform CloudFormation applies.

The packaging runs once for this module (`make package`'s code, into a
temporary directory; the downloaded dependencies are reused from
build/.dependencies, so only the first run ever needs PyPI).
"""
from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from infra.aws import deploy
from infra.aws.functions import app_functions, chalice_config, event_source, missing_policies, policy_file
from infra.aws.package import BOTOCORE_SERVICES, COMPILER_ONLY, UNUSED_OPTIONAL, services_named_in
from infra.aws.template import MAX_CONCURRENCY, TemplateError, complete, dead_letter_queues, table_named
from infra.local.provision import QUEUE_SETTINGS, TABLE_SETTINGS, load_template, resources_of_type

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")

# What each function may touch, reviewed: its policy file may name nothing
# else. A new function gets its row here with its policy file.
ACCESS = {
    "api_handler": {"BillingTable", "IdempotencyTable", "ses", "kms:DataKey",
                    "secret:admin-api-key", "secret:stripe-key/api_handler", "secret:stripe-publishable-key",
                    "secret:stripe-webhook-secret", "secret:token-signing-key", "NotificationsQueue",
                    "StaffUserPool"},
    "ingest_usage": {"BillingTable", "UsageDeadLetterQueue", "NotificationsQueue"},
    "billing_scheduler": {"BillingTable/index/due", "BillingQueue"},
    "dunning_scheduler": {"BillingTable/index/due", "BillingQueue"},
    "billing_worker": {"BillingTable", "kms:DataKey", "secret:stripe-key/billing_worker",
                       "secret:token-signing-key", "NotificationsQueue"},
    "card_expiry_scan": {"BillingTable", "NotificationsQueue", "kms:DataKey", "secret:stripe-key/card_expiry_scan"},
    "send_notifications": {"BillingTable", "ses", "kms:DataKey", "secret:token-signing-key"},
    "report_feed": {"BillingTable"},
    "change_feed": {"BillingTable", "EventBus"},
    "mail_feedback": {"BillingTable"},
    "einvoice_drop": {"BillingTable", "EInvoiceBucket/objects"},
    "commission_feed": {"BillingTable"},
    "webhook_dispatch": {"BillingTable"},
    "webhook_scheduler": {"BillingTable/index/due", "WebhookQueue"},
}
# The actions a policy may grant, by kind of resource: item-level data access
# only (no Scan, no table or queue administration).
ACTIONS = {
    "table": {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
              "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem",
              "dynamodb:BatchWriteItem"},
    "index": {"dynamodb:Query"},
    "queue": {"sqs:SendMessage"},
    "bus": {"events:PutEvents"},
    "secret": {"ssm:GetParameter"},
    "kms": {"kms:Decrypt"},
    "ses": {"ses:SendEmail", "ses:SendRawEmail"},
    # The e-invoice drop writes its documents; never reads, lists or deletes.
    "objects": {"s3:PutObject"},
    # The console's staff accounts: made, removed, signed in; never listed.
    "user_pool": {"cognito-idp:AdminCreateUser", "cognito-idp:AdminDeleteUser", "cognito-idp:AdminGetUser",
                  "cognito-idp:AdminInitiateAuth", "cognito-idp:AdminSetUserPassword"},
}


def the_app():
    from app import app

    return app


def statements(document: dict) -> list[dict]:
    found = document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def grants(statement: dict, stage: str) -> list[tuple[str, str]]:
    """(kind, token) of each resource a statement names; fails on anything
    that is not a resource of the template or the stage's own secret."""
    template = load_template()["Resources"]
    config_env = chalice_config()["stages"][stage]["environment_variables"]
    functions_env = [f.get("environment_variables", {})
                     for f in chalice_config()["stages"][stage].get("lambda_functions", {}).values()]
    secrets = {value.removeprefix(f"/billing/{stage}/") for env in [config_env, *functions_env]
               for key, value in env.items() if key.endswith("_PARAMETER")}
    found = []
    if statement["Resource"] == "*" and set(as_list(statement["Action"])) == XRAY_ACTIONS:
        return found  # traces name no resource (infra/aws/operations.py); not a resource the function touches
    for resource in as_list(statement["Resource"]):
        text = json.dumps(resource)
        assert resource != "*" and '"*"' not in text, f"{statement.get('Sid')}: no resource wildcard"
        if "Fn::If" in resource:
            condition, then, otherwise = resource["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, text
            resource = then
        if "Fn::GetAtt" in resource:
            logical_id, attribute = resource["Fn::GetAtt"]
            assert attribute == "Arn" and logical_id in template, text
            kind = {"AWS::DynamoDB::Table": "table", "AWS::SQS::Queue": "queue", "AWS::KMS::Key": "kms",
                    "AWS::Events::EventBus": "bus", "AWS::Cognito::UserPool": "user_pool"}[template[logical_id]["Type"]]
            if kind == "kms":  # the stack's key, to read SSM parameters only
                assert statement["Condition"] == {"StringEquals": {
                    "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}}}, text
                logical_id = f"kms:{logical_id}"
            found.append((kind, logical_id))
            continue
        sub = resource["Fn::Sub"]
        if match := re.fullmatch(r"\$\{(\w+)\.Arn\}/\*", sub):
            bucket = match.group(1)
            assert template[bucket]["Type"] == "AWS::S3::Bucket", text
            found.append(("objects", f"{bucket}/objects"))
        elif match := re.fullmatch(r"\$\{(\w+)\.Arn\}/index/(\*|\w+)", sub):
            table, index = match.groups()
            assert template[table]["Type"] == "AWS::DynamoDB::Table", text
            found.append(("index", table if index == "*" else f"{table}/index/{index}"))
        elif match := re.fullmatch(
                r"arn:\$\{AWS::Partition\}:ssm:\$\{AWS::Region\}:\$\{AWS::AccountId\}:parameter/billing/\$\{Stage\}/([\w/-]+)",
                sub):
            assert match.group(1) in secrets, f"{match.group(1)} is not a secret of .chalice/config.json"
            found.append(("secret", f"secret:{match.group(1)}"))
        elif re.fullmatch(r"arn:\$\{AWS::Partition\}:kms:\$\{AWS::Region\}:\$\{AWS::AccountId\}:key/\*", sub):
            condition = statement["Condition"]
            assert condition["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}
            assert condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"] == "alias/aws/ssm"
            found.append(("kms", "kms:aws/ssm"))
        elif re.fullmatch(r"arn:\$\{AWS::Partition\}:ses:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
                          r"(identity/\$\{SesIdentity\}|configuration-set/\$\{MailConfigurationSet\})", sub):
            found.append(("ses", "ses"))
        else:
            raise AssertionError(f"{statement.get('Sid')}: {text} is none of the template's resources")
    return found


XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


# -- the policies, as written ------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_has_its_own_policy(stage):
    assert missing_policies(the_app(), stage) == []
    files = [policy_file(name, stage) for name in app_functions(the_app())]
    assert len(set(files)) == len(files), "two functions share a policy file"


def test_no_policy_file_is_left_without_its_function():
    used = {policy_file(name, stage) for name in app_functions(the_app()) for stage in STAGES}
    assert set((ROOT / ".chalice" / "policies").glob("*.json")) - used == set()


@pytest.mark.parametrize("name", sorted(app_functions(the_app())))
def test_a_policy_grants_only_what_its_function_needs(name):
    assert name in ACCESS, f"{name}: add its row to ACCESS (what it may touch) with its policy file"
    for stage in STAGES:
        document = json.loads(policy_file(name, stage).read_text())
        tokens = set()
        for statement in statements(document):
            assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
            actions = set(as_list(statement["Action"]))
            for kind, token in grants(statement, stage):
                extra = actions - ACTIONS[kind]
                assert not extra, f"{name}: {sorted(extra)} on {token}"
                tokens.add(token)
        assert tokens == ACCESS[name], f"{name} on {stage}"


# -- the template completed for each function (no packaging needed) --------------


def chalice_like(function: str, events: dict, *, timeout: int = 60, role: str | None = None) -> dict:
    """A template as chalice generates it (one function), merged with resources.yaml."""
    template = load_template()
    logical_id = "".join(p.title() for p in function.split("_"))
    role = role or f"{logical_id}Role"
    template["Resources"][role] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {}, "Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": []}}]}}
    template["Resources"][logical_id] = {"Type": "AWS::Serverless::Function", "Properties": {
        "Handler": f"app.{function}", "Runtime": "python3.11", "Timeout": timeout,
        "Role": {"Fn::GetAtt": [role, "Arn"]}, "Events": events}}
    return template


def sqs_event(queue: str) -> dict:
    return {"Type": "SQS", "Properties": {
        "Queue": {"Fn::Sub": f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{queue}"},
        "BatchSize": 1, "MaximumBatchingWindowInSeconds": 0}}


def test_a_new_queue_consumer_is_wired_without_touching_the_infra():
    completed = complete(chalice_like("send_notifications", {"E": sqs_event("NotificationsQueue")}), "dev")
    resources = completed["Resources"]
    event = resources["SendNotifications"]["Properties"]["Events"]["E"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["NotificationsQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "ScalingConfig" not in event
    policy = resources["SendNotificationsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert {"Sid": "PollNotificationsQueue", "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": {"Fn::GetAtt": ["NotificationsQueue", "Arn"]}} in policy
    assert resources["SendNotificationsErrorsAlarm"]["Properties"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "SendNotifications"}}]
    assert resources["SendNotifications"]["Properties"]["FunctionName"] == {
        "Fn::Sub": "${AWS::StackName}-send_notifications"}


def stream_event(table: str) -> dict:
    return {"Type": "DynamoDB", "Properties": {
        "Stream": f"arn:aws:dynamodb:::table/{table}/stream/packaged", "BatchSize": 100, "StartingPosition": "LATEST"}}


def test_a_new_stream_consumer_is_wired_to_its_table_stream():
    template = chalice_like("count_things", {"E": stream_event("BillingTable")})
    template["Resources"]["BillingTable"]["Properties"]["StreamSpecification"] = {"StreamViewType": "NEW_IMAGE"}
    resources = complete(template, "dev")["Resources"]
    event = resources["CountThings"]["Properties"]["Events"]["E"]["Properties"]
    assert event["Stream"] == {"Fn::GetAtt": ["BillingTable", "StreamArn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    policy = resources["CountThingsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert {"Sid": "ReadBillingTableStream", "Effect": "Allow",
            "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
            "Resource": {"Fn::GetAtt": ["BillingTable", "StreamArn"]}} in policy
    age = resources["CountThingsEAgeAlarm"]["Properties"]
    assert (age["MetricName"], age["Dimensions"]) == ("IteratorAge", [{"Name": "FunctionName",
                                                                       "Value": {"Ref": "CountThings"}}])
    # A record that keeps failing is set aside, where operations see it.
    assert event["MaximumRetryAttempts"] > 0
    failures = event["DestinationConfig"]["OnFailure"]
    assert failures == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["CountThingsEFailures", "Arn"]}}
    assert resources["CountThingsEFailures"]["Type"] == "AWS::SQS::Queue"
    assert {"Sid": "SendCountThingsEFailures", "Effect": "Allow", "Action": ["sqs:SendMessage"],
            "Resource": {"Fn::GetAtt": ["CountThingsEFailures", "Arn"]}} in policy
    assert "CountThingsEFailuresDepthAlarm" in resources


def test_the_billing_worker_is_capped_by_its_parameter():
    completed = complete(chalice_like("billing_worker", {"E": sqs_event("BillingQueue")}), "prod")
    event = completed["Resources"]["BillingWorker"]["Properties"]["Events"]["E"]["Properties"]
    assert event["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "BillingWorkerConcurrency"}}
    assert completed["Parameters"]["Stage"]["AllowedValues"] == ["prod"]
    assert set(MAX_CONCURRENCY.values()) <= set(completed["Parameters"])


@pytest.mark.parametrize("template, error", [
    (chalice_like("f", {"E": sqs_event("NoSuchQueue")}), "must name a queue"),
    (chalice_like("f", {"E": sqs_event("NotificationsQueue")}, timeout=900), "VisibilityTimeout"),
    (chalice_like("f", {}, role="DefaultRole"), "shares the role"),
    (chalice_like("f", {"E": stream_event("NoSuchTable")}), "StreamSpecification"),
    (chalice_like("f", {"E": stream_event("IdempotencyTable")}), "StreamSpecification"),
])
def test_what_cannot_be_wired_fails_the_packaging(template, error):
    with pytest.raises(TemplateError, match=error):
        complete(template, "dev")


def test_every_dead_letter_queue_is_one():
    resources = load_template()["Resources"]
    assert set(dead_letter_queues(resources)) == {q for q in resources_of_type(load_template(), "AWS::SQS::Queue")
                                                 if "DeadLetter" in q}


# -- the packaged stage ----------------------------------------------------------




def of_type(resources: dict, kind: str) -> dict:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def lambda_function(resources: dict, name: str) -> tuple[str, dict]:
    handler = "app.app" if name == "api_handler" else f"app.{name}"
    [found] = [(k, v["Properties"]) for k, v in of_type(resources, "AWS::Lambda::Function").items()
               if v["Properties"]["Handler"] == handler]
    return found


def alias_of(resources: dict, logical_id: str) -> str:
    """The logical id of the function's alias `live` (what its triggers invoke)."""
    [alias] = [k for k, v in of_type(resources, "AWS::Lambda::Alias").items()
               if v["Properties"]["FunctionName"] == {"Ref": logical_id} and v["Properties"]["Name"] == "live"]
    return alias


def api_of(path: str) -> str:
    """The API that serves a route: the operator routes have their own."""
    return "OperatorAPI" if path.startswith("/admin/") else "RestAPI"


def test_every_handler_is_a_function_with_its_trigger(deployed):
    app = the_app()
    functions = app_functions(app)
    assert len(of_type(deployed, "AWS::Lambda::Function")) == len(functions)
    for name, kind in functions.items():
        logical_id, function = lambda_function(deployed, name)
        alias = {"Ref": alias_of(deployed, logical_id)}
        if kind == "api":
            for path, methods in app.routes.items():
                body = deployed[api_of(path)]["Properties"]["Body"]
                assert set(m.lower() for m in methods) <= set(body["paths"][path]), path
            permissions = [p["Properties"] for p in of_type(deployed, "AWS::Lambda::Permission").values()
                           if p["Properties"]["FunctionName"] == alias]
            assert {p["Principal"] for p in permissions} == {"apigateway.amazonaws.com"}
            assert len(permissions) == 2, "one for each API"
        elif kind == "sqs":
            source = event_source(app, name)
            [mapping] = [m["Properties"] for m in of_type(deployed, "AWS::Lambda::EventSourceMapping").values()
                         if m["Properties"]["FunctionName"] == alias]
            assert mapping["EventSourceArn"] == {"Fn::GetAtt": [source.queue, "Arn"]}
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert mapping["BatchSize"] == source.batch_size
            if name in MAX_CONCURRENCY:
                assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": MAX_CONCURRENCY[name]}}
        elif kind == "dynamodb":
            table = table_named(event_source(app, name).stream_arn)
            [mapping] = [m["Properties"] for m in of_type(deployed, "AWS::Lambda::EventSourceMapping").values()
                         if m["Properties"]["FunctionName"] == alias]
            assert mapping["EventSourceArn"] == {"Fn::GetAtt": [table, "StreamArn"]}
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert mapping["BatchSize"] == event_source(app, name).batch_size
        elif kind == "schedule":
            source = event_source(app, name)
            expression = getattr(source.schedule_expression, "to_string", lambda: source.schedule_expression)()
            [rule] = [r["Properties"] for r in of_type(deployed, "AWS::Events::Rule").values()
                      if any(t["Arn"] == alias for t in r["Properties"].get("Targets", []))]
            assert rule["ScheduleExpression"] == expression
            assert any(p["Properties"]["Principal"] == "events.amazonaws.com"
                       and p["Properties"]["FunctionName"] == alias
                       for p in of_type(deployed, "AWS::Lambda::Permission").values())
        else:
            raise AssertionError(f"{name}: a {kind} function; teach this test and the packager about it")


def test_every_path_hands_any_other_method_to_the_app(deployed):
    """API Gateway's ANY on every path, to the API function: a method the
    path does not serve reaches the app, which answers 405 with Allow."""
    app = the_app()
    logical_id, _ = lambda_function(deployed, "api_handler")
    alias = {"Ref": alias_of(deployed, logical_id)}
    for path in app.routes:
        body = deployed[api_of(path)]["Properties"]["Body"]
        integration = body["paths"][path]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy" and integration["uri"]["Fn::Sub"][1] == {"FunctionAlias": alias}, path


def test_a_path_no_route_serves_is_a_404_in_the_api_error_shape(deployed):
    """API Gateway answers a path no route serves itself (403 "Missing
    Authentication Token" by default, or a signature error when a Bearer
    key is sent): the gateway responses make it the API's 404."""
    from chalicelib.api.responses import Error

    body = deployed["RestAPI"]["Properties"]["Body"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    for response_type in ("MISSING_AUTHENTICATION_TOKEN", "INVALID_SIGNATURE"):
        response = responses[response_type]
        assert response["statusCode"] == 404, response_type
        assert response["responseParameters"] == {"gatewayresponse.header.Content-Type": "'application/json'"}
        rendered = json.loads(response["responseTemplates"]["application/json"].replace(
            "$context.requestId", "c0ffee00-0000-4000-8000-000000000000"))
        assert rendered["error"]["type"] == "not_found_error" and rendered["error"]["code"] == "not_found"
        assert rendered["error"]["request_id"] == "c0ffee00-0000-4000-8000-000000000000"
        Error.model_validate(rendered)  # the OpenAPI document's error object, no other field


def test_every_function_runs_as_its_own_role_with_its_policy(deployed):
    roles = set()
    for name, kind in app_functions(the_app()).items():
        logical_id, function = lambda_function(deployed, name)
        role_id = function["Role"]["Fn::GetAtt"][0]
        roles.add(role_id)
        role = deployed[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role
        [policy] = role["Policies"]
        granted = policy["PolicyDocument"]["Statement"]
        written = statements(json.loads(policy_file(name, "dev").read_text()))
        log_group = f"{logical_id}LogGroup"
        added = [{"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                  "Resource": {"Fn::GetAtt": [log_group, "Arn"]}}]
        if kind == "sqs":
            queue = event_source(the_app(), name).queue
            added.append({"Sid": f"Poll{queue}", "Effect": "Allow",
                          "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                          "Resource": {"Fn::GetAtt": [queue, "Arn"]}})
        if kind == "dynamodb":
            table = table_named(event_source(the_app(), name).stream_arn)
            [failures] = [mapping["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
                          for mapping in of_type(deployed, "AWS::Lambda::EventSourceMapping").values()
                          if mapping["Properties"]["FunctionName"] == {"Ref": alias_of(deployed, logical_id)}]
            added += [{"Sid": f"Send{failures}", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                       "Resource": {"Fn::GetAtt": [failures, "Arn"]}},
                      {"Sid": f"Read{table}Stream", "Effect": "Allow",
                       "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
                       "Resource": {"Fn::GetAtt": [table, "StreamArn"]}},
                      {"Sid": f"List{table}Streams", "Effect": "Allow", "Action": ["dynamodb:ListStreams"],
                       "Resource": {"Fn::Sub": f"${{{table}.Arn}}/stream/*"}}]
        assert granted == written + added, name
        assert deployed[log_group]["Properties"]["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{name}"}
        assert function["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}
    assert len(roles) == len(app_functions(the_app()))


def test_every_function_and_dead_letter_queue_has_its_alarm(deployed):
    alarms = of_type(deployed, "AWS::CloudWatch::Alarm")
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    watched_functions = {a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in alarms.values()
                         if a["Properties"]["Namespace"] == "AWS/Lambda"}
    assert watched_functions == {lambda_function(deployed, name)[0] for name in app_functions(the_app())}
    watched_queues = {a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms.values()
                      if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"}
    assert watched_queues == set(dead_letter_queues(deployed)) and watched_queues
    api = alarms["ApiServerErrorsAlarm"]["Properties"]
    assert deployed["RestAPI"]["Properties"]["Name"] == {"Ref": "AWS::StackName"}
    assert api["Dimensions"] == [{"Name": "ApiName", "Value": {"Ref": "AWS::StackName"}},
                                 {"Name": "Stage", "Value": "api"}]
    charges = alarms["ChargeFailuresAlarm"]["Properties"]
    rule = deployed["ChargeFailedRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["billing"], "detail-type": ["invoice.payment_failed"]}
    assert {"Name": "RuleName", "Value": rule["Name"]} in charges["Dimensions"]


def test_custom_metric_alarms_watch_metrics_the_code_emits(deployed):
    sources = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    for name, alarm in of_type(deployed, "AWS::CloudWatch::Alarm").items():
        if alarm["Properties"]["Namespace"] == "Billing":
            assert f'name="{alarm["Properties"]["MetricName"]}"' in sources, name


def test_every_function_is_pointed_at_every_table_queue_and_the_bus(deployed):
    expected = {env: {"Ref": logical_id} for logical_id, env in {**TABLE_SETTINGS, **QUEUE_SETTINGS}.items()}
    # Parameters stay references: CloudFormation resolves them after the transform.
    expected.update(EVENT_BUS_NAME={"Ref": "EventBus"}, ALERT_SENDER={"Ref": "AlertSender"},
                    PUBLIC_BASE_URL={"Ref": "PublicBaseUrl"})
    for name in app_functions(the_app()):
        variables = lambda_function(deployed, name)[1]["Environment"]["Variables"]
        assert {key: variables.get(key) for key in expected} == expected, name
        assert variables["STAGE"] == "dev"


def test_the_iot_rule_feeds_the_usage_queue(deployed):
    rule = deployed["UsageTopicRule"]["Properties"]["TopicRulePayload"]
    from chalicelib.domain.things import IOT_SQL_THING_NAME

    assert rule["Sql"] == ("SELECT seq, ts, counters, topic(2) AS merchant_id, topic(3) AS device_id "
                           f"FROM 'billing/+/+/counters' WHERE clientid() = {IOT_SQL_THING_NAME}")
    assert rule["Actions"] == [{"Sqs": {"QueueUrl": {"Ref": "UsageQueue"}, "UseBase64": False,
                                        "RoleArn": {"Fn::GetAtt": ["UsageTopicRuleRole", "Arn"]}}}]
    assert rule["ErrorAction"]["Sqs"]["QueueUrl"] == {"Ref": "UsageDeadLetterQueue"}
    [policy] = deployed["UsageTopicRuleRole"]["Properties"]["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Action": "sqs:SendMessage",
        "Resource": [{"Fn::GetAtt": ["UsageQueue", "Arn"]}, {"Fn::GetAtt": ["UsageDeadLetterQueue", "Arn"]}]}]


def test_tables_keep_their_data(deployed):
    for name, table in of_type(deployed, "AWS::DynamoDB::Table").items():
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST", name
        assert properties["SSESpecification"]["SSEEnabled"] is True, name
    billing = deployed["BillingTable"]
    assert billing["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert billing["DeletionPolicy"] == billing["UpdateReplacePolicy"] == "Retain"


def test_the_zip_is_compiled_and_slim(packaged):
    _, zip_path = packaged
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        pyc = archive.read("__pycache__/app.cpython-311.pyc")
        unpacked = sum(i.file_size for i in archive.infolist())
    assert struct.unpack("<I", pyc[4:8])[0] == 0b01, "a hash-based .pyc whose source is not checked"
    for source in [n for n in names if n.startswith("chalicelib/") and n.endswith(".py")]:
        folder, _, module = source.rpartition("/")
        assert f"{folder}/__pycache__/{module[:-3]}.cpython-311.pyc" in names, source
    assert not [n for n in names if n.startswith(("infra/", "tests/", "events/", ".chalice/"))]
    assert not [n for n in names if n.endswith(COMPILER_ONLY)]
    assert not [n for n in names if n.startswith(UNUSED_OPTIONAL)] and "fpdf/fpdf.py" in names
    services = {n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 3}
    assert services == BOTOCORE_SERVICES | services_named_in(ROOT)
    # Lambda's limits: 50 MB zipped for a direct upload, 250 MB unzipped.
    assert zip_path.stat().st_size < 50e6 and unpacked < 250e6


def test_the_deploy_uploads_each_package_once():
    template = {"Resources": {"F": {"Type": "AWS::Serverless::Function", "Properties": {
        "Handler": "app.app", "CodeUri": "./deployment.zip"}}}}
    bucket = "billing-artifacts"
    code_uri = deploy.with_code_at(template, bucket, "k.zip")["Resources"]["F"]["Properties"]["CodeUri"]
    assert code_uri == f"s3://{bucket}/k.zip"
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        path = ROOT / "events" / "api_get_health.json"
        deploy.upload(s3, bucket, "k", path)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == path.read_bytes()
        s3.put_object(Bucket=bucket, Key="k", Body=b"already there")
        deploy.upload(s3, bucket, "k", path)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"already there"
    with pytest.raises(SystemExit, match="too long"):
        deploy.check_names(template, "x" * 60)
    declared = {"Stage": {}, "AlertSender": {}, "AlarmEmail": {}}
    assert deploy.parameter_list({"AlertSender": "a@b.c"}, declared, previous={"AlarmEmail"}) == [
        {"ParameterKey": "AlertSender", "ParameterValue": "a@b.c"},
        {"ParameterKey": "AlarmEmail", "UsePreviousValue": True}]


@pytest.mark.parametrize("stage", STAGES)
def test_secrets_are_named_for_their_stage(stage):
    variables = chalice_config()["stages"][stage]["environment_variables"]
    names = {k: v for k, v in variables.items() if k.endswith("_PARAMETER")}
    assert names and all(v.startswith(f"/billing/{stage}/") for v in names.values())
    assert os.path.commonpath(list(names.values())) == f"/billing/{stage}"
