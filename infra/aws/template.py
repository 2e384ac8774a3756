"""What `chalice package` cannot say about each function, added to the template.

Chalice generates one `AWS::Serverless::Function` per handler of app.py and
`--merge-template infra/aws/resources.yaml` merges the tables, queues, rules
and alarms beside them. What depends on which handlers exist cannot live in
a static merge template (a handler that does not exist yet would leave a
resource without a type), so it is derived here from what chalice generated,
for every function alike; a new handler needs nothing in this file:

- its name (`<stack>-<function>`), its log group (kept `LogRetentionDays`)
  and the right to write there;
- for an SQS event source: the template's queue it names (chalice only knows
  a queue's name; CloudFormation names queues itself), partial batch failures
  (`ReportBatchItemFailures`: chalice never sets it, and without it Lambda
  retries a whole batch for one bad message), the right to poll that queue,
  and, for the billing worker, the concurrency cap;
- for a DynamoDB stream event source (`@app.on_dynamodb_record(stream_arn=
  "arn:aws:dynamodb:::table/<Table>/stream/packaged")`, `<Table>` a logical
  id of the template whose table has a `StreamSpecification`): the table's
  stream, partial batch failures, a bounded number of retries after which
  the failing record's place in the stream goes to a failure queue of its
  own (so one bad record never holds its shard back until the stream drops
  it, after 24 h, and operations can read it again from there), the rights
  to read that stream and send to that queue, and an alarm on the age of
  the oldest record left unread;
- an alarm on its errors; and an alarm on the depth of every dead-letter queue.

And for the API: every path also has API Gateway's ANY method, to the same
function, so that a method the path does not serve (PUT, DELETE, OPTIONS...)
reaches the app, which answers `405 method_not_allowed` with `Allow`, instead
of API Gateway's `403 Missing Authentication Token`; and a path no route
serves is answered `404 not_found` in the API's error shape (a gateway
response), not with that 403 either.

What a function may do beyond that is written in its own policy file,
`.chalice/policies/<function>.json`, named by `iam_policy_file` in
.chalice/config.json.

Then infra/aws/hardening.py: the API's stage throttling and access logs,
the operator routes on an API of their own that takes AWS signatures only,
and every function deployed through its alias `live` by CodeDeploy, rolled
back by its alarms.
"""
from __future__ import annotations

import copy
import re

from infra.aws import operations
# FUNCTION, TemplateError, functions and getatt_target are imported from here by the rest.
from infra.aws.cfn import (ALARM_TOPIC, DEFAULT_FUNCTION_TIMEOUT, DEFAULT_VISIBILITY_TIMEOUT, FUNCTION, QUEUE,
                           Function, TemplateError, functions, getatt_target)
from infra.aws.hardening import HardeningError, harden

LOG_RETENTION = "LogRetentionDays"

# SQS consumers whose concurrency is capped by a parameter of resources.yaml.
# The billing worker charges cards: Stripe's write rate limit, not Lambda's
# scaling, must bound a billing run. The cap is on the event source
# (`MaximumConcurrency`), not reserved concurrency: a function throttled by
# reserved concurrency sends messages back to the queue, towards its
# dead-letter queue, while a capped event source just reads more slowly.
MAX_CONCURRENCY = {"billing_worker": "BillingWorkerConcurrency"}

POLL_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
# What Lambda's event source needs of a DynamoDB stream (as SAM's
# DynamoDBStreamReadPolicy): ListStreams names no stream, only the table's.
STREAM_ACTIONS = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
LIST_STREAMS_ACTIONS = ["dynamodb:ListStreams"]
TABLE = "AWS::DynamoDB::Table"
# Oldest unread stream record, in ms, that raises the alarm: an hour late,
# with 23 left before the stream drops it.
STREAM_AGE_THRESHOLD_MS = 3_600_000
# Tries of a failing stream record before it is set aside (with partial
# batch failures, each try starts at that record): a passing DynamoDB or
# code error clears well before; a record that fails this often will not.
STREAM_RETRY_ATTEMPTS = 20
LOG_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]



def dead_letter_queues(resources: dict) -> list[str]:
    """Queues that some queue's redrive policy names as its dead-letter
    queue, and the failure queues of stream event sources."""
    found = set()
    for resource in resources.values():
        if resource["Type"] == QUEUE:
            redrive = resource.get("Properties", {}).get("RedrivePolicy") or {}
            target = getatt_target(redrive.get("deadLetterTargetArn"))
            if target:
                found.add(target)
        # A stream event source's failure queue: in the SAM template (a
        # function's event) and once transformed (an event source mapping).
        sources = []
        if resource["Type"] == FUNCTION:
            events = resource.get("Properties", {}).get("Events", {}).values()
            sources = [event.get("Properties", {}) for event in events]
        elif resource["Type"] == "AWS::Lambda::EventSourceMapping":
            sources = [resource.get("Properties", {})]
        for source in sources:
            target = getatt_target(source.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
            if target:
                found.add(target)
    return sorted(found)


def complete(template: dict, stage: str) -> dict:
    """A copy of chalice's merged template with every function wired (see the
    module's docstring). Raises TemplateError when a function cannot be."""
    template = copy.deepcopy(template)
    resources = template["Resources"]
    if resources.get(ALARM_TOPIC, {}).get("Type") != "AWS::SNS::Topic":
        raise TemplateError(f"resources.yaml must define the SNS topic {ALARM_TOPIC} that alarms notify")
    _pin_stage(template, stage)
    _name_api(resources)
    _every_method_to_the_app(resources)
    _unknown_paths_not_found(resources)
    owners: dict[str, str] = {}
    for function in functions(template):
        role_id = _own_role(function, resources, owners)
        statements = _statements(resources[role_id])
        _name_and_logs(function, resources, statements)
        for event_id, event in sorted(function.properties.get("Events", {}).items()):
            if event["Type"] == "SQS":
                _wire_queue(function, event_id, event["Properties"], resources, statements)
            elif event["Type"] == "DynamoDB":
                _wire_stream(function, event_id, event["Properties"], resources, statements)
        resources[f"{function.logical_id}ErrorsAlarm"] = _errors_alarm(function)
    for queue_id in dead_letter_queues(resources):
        resources[f"{queue_id}DepthAlarm"] = _depth_alarm(queue_id)
    try:
        harden(template)
    except HardeningError as error:
        raise TemplateError(str(error)) from None
    operations.complete(template)  # tracing, alarms, queues
    return template


def _pin_stage(template: dict, stage: str) -> None:
    """The policies name the stage's SSM parameters through `${Stage}`: the
    template only accepts the stage it was packaged for."""
    parameter = template.get("Parameters", {}).get("Stage")
    if parameter is None:
        raise TemplateError("resources.yaml must declare the parameter Stage")
    parameter["Default"] = stage
    parameter["AllowedValues"] = [stage]
    parameter.pop("AllowedPattern", None)


def _name_api(resources: dict) -> None:
    """The API is named after the stack, and so are its metrics (`ApiName`,
    which ApiServerErrorsAlarm watches): two stages in one account never
    share them. Chalice names it after the app, in the OpenAPI title too."""
    api = resources.get("RestAPI")
    if api is not None:
        api["Properties"]["Name"] = {"Ref": "AWS::StackName"}
        api["Properties"]["DefinitionBody"].setdefault("info", {})["title"] = {"Ref": "AWS::StackName"}


ANY_METHOD = "x-amazon-apigateway-any-method"


def _every_method_to_the_app(resources: dict) -> None:
    """ANY on every path, integrated as the path's own methods are: API
    Gateway picks a path's declared method first, ANY for any other."""
    api = resources.get("RestAPI")
    if api is None:
        return
    for path, methods in api["Properties"]["DefinitionBody"]["paths"].items():
        integrations = [m["x-amazon-apigateway-integration"] for name, m in methods.items()
                        if isinstance(m, dict) and "x-amazon-apigateway-integration" in m]
        if integrations and ANY_METHOD not in methods:
            methods[ANY_METHOD] = {
                "produces": ["application/json"],
                "responses": {"405": {"description": "the path does not serve this method"}},
                "x-amazon-apigateway-integration": copy.deepcopy(integrations[0]),
            }


# API Gateway answers a path no route serves itself: 403 "Missing
# Authentication Token" (MISSING_AUTHENTICATION_TOKEN), or, when the request
# carries an Authorization header that is not an AWS signature (every
# merchant's Bearer key), a signature error (INVALID_SIGNATURE). No route of
# this API takes AWS signatures, so both mean "no such path": the API's 404
# in its error shape, as the app answers an unknown object.
UNKNOWN_PATH_RESPONSES = ("MISSING_AUTHENTICATION_TOKEN", "INVALID_SIGNATURE")
UNKNOWN_PATH_BODY = ('{"error": {"type": "not_found_error", "code": "not_found", '
                     '"message": "no route serves this path", "param": null, "request_id": "$context.requestId"}}')


def _unknown_paths_not_found(resources: dict) -> None:
    """Gateway responses in the API's definition (not resources of their
    own, which a deployment made before them would not carry)."""
    api = resources.get("RestAPI")
    if api is None:
        return
    responses = api["Properties"]["DefinitionBody"].setdefault("x-amazon-apigateway-gateway-responses", {})
    for response_type in UNKNOWN_PATH_RESPONSES:
        responses[response_type] = {
            "statusCode": 404,
            "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
            "responseTemplates": {"application/json": UNKNOWN_PATH_BODY},
        }


def _own_role(function: Function, resources: dict, owners: dict[str, str]) -> str:
    role_id = getatt_target(function.properties.get("Role"))
    if role_id is None or resources.get(role_id, {}).get("Type") != "AWS::IAM::Role":
        raise TemplateError(f"{function.name} has no role of this template")
    if role_id == "DefaultRole" or role_id in owners:
        raise TemplateError(
            f"{function.name} shares the role {role_id}: give it its own policy, "
            f'.chalice/config.json "lambda_functions": {{"{function.name}": '
            f'{{"iam_policy_file": "policies/{function.name}.json"}}}} with "autogen_policy": false'
        )
    owners[role_id] = function.name
    return role_id


def _statements(role: dict) -> list:
    document = role["Properties"]["Policies"][0]["PolicyDocument"]
    if isinstance(document.get("Statement"), dict):
        document["Statement"] = [document["Statement"]]
    return document.setdefault("Statement", [])


def _name_and_logs(function: Function, resources: dict, statements: list) -> None:
    """A known name makes the log group's name known without a reference to
    the function (the role would depend on the function that depends on it)."""
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::Logs::LogGroup" and resource["Properties"].get("LogGroupName") == {
            "Fn::Sub": "/aws/lambda/${%s}" % function.logical_id
        }:
            raise TemplateError(
                f"{logical_id}: remove log_retention_in_days from .chalice/config.json; "
                f"the packager makes every log group (parameter {LOG_RETENTION})"
            )
    function.properties["FunctionName"] = {"Fn::Sub": "${AWS::StackName}-%s" % function.name}
    log_group = f"{function.logical_id}LogGroup"
    resources[log_group] = {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            "LogGroupName": {"Fn::Sub": "/aws/lambda/${AWS::StackName}-%s" % function.name},
            "RetentionInDays": {"Ref": LOG_RETENTION},
        },
    }
    statements.append(
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": list(LOG_ACTIONS),
         "Resource": {"Fn::GetAtt": [log_group, "Arn"]}}
    )


def queue_named(queue, resources: dict) -> str:
    """The logical id of the template's queue that chalice's event source
    names (`@app.on_sqs_message(queue="UsageQueue")`: the local stage names
    its queues after their logical ids too)."""
    text = queue.get("Fn::Sub") if isinstance(queue, dict) else None
    name = text.rsplit(":", 1)[-1] if isinstance(text, str) and text.startswith("arn:${AWS::Partition}:sqs:") else None
    if name is None or resources.get(name, {}).get("Type") != QUEUE:
        raise TemplateError(
            f"an SQS event source must name a queue of infra/aws/resources.yaml by its logical id, not {queue!r}"
        )
    return name


def _wire_queue(function: Function, event_id: str, event: dict, resources: dict, statements: list) -> None:
    queue_id = queue_named(event["Queue"], resources)
    event["Queue"] = {"Fn::GetAtt": [queue_id, "Arn"]}
    event["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
    visibility = int(resources[queue_id].get("Properties", {}).get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT))
    timeout = int(function.properties.get("Timeout", DEFAULT_FUNCTION_TIMEOUT))
    if visibility < timeout:
        # Lambda refuses the event source: a message would reappear while
        # its first reader still works on it.
        raise TemplateError(
            f"{queue_id}'s VisibilityTimeout ({visibility} s) is shorter than {function.name}'s timeout ({timeout} s)"
        )
    parameter = MAX_CONCURRENCY.get(function.name)
    if parameter:
        event["ScalingConfig"] = {"MaximumConcurrency": {"Ref": parameter}}
    statements.append(
        {"Sid": f"Poll{queue_id}", "Effect": "Allow", "Action": list(POLL_ACTIONS),
         "Resource": {"Fn::GetAtt": [queue_id, "Arn"]}}
    )


def table_named(stream) -> str:
    """The logical id of the template's table whose stream chalice's event
    source names (`arn:aws:dynamodb:::table/<Table>/stream/...`)."""
    text = stream if isinstance(stream, str) else ""
    match = re.fullmatch(r"arn:[^:]*:dynamodb:[^:]*:[^:]*:table/(\w+)/stream/.+", text)
    return match.group(1) if match else ""


def _wire_stream(function: Function, event_id: str, event: dict, resources: dict, statements: list) -> None:
    table_id = table_named(event["Stream"])
    table = resources.get(table_id, {})
    if table.get("Type") != TABLE or not table.get("Properties", {}).get("StreamSpecification"):
        raise TemplateError(
            f"{function.name}: a DynamoDB event source must name a table of infra/aws/resources.yaml that has a "
            f"StreamSpecification, as arn:aws:dynamodb:::table/<LogicalId>/stream/packaged, not {event['Stream']!r}"
        )
    event["Stream"] = {"Fn::GetAtt": [table_id, "StreamArn"]}
    event["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
    failures = f"{function.logical_id}{event_id}Failures"
    resources[failures] = {"Type": QUEUE, "Properties": {"MessageRetentionPeriod": 1209600}}
    event["MaximumRetryAttempts"] = STREAM_RETRY_ATTEMPTS
    event["DestinationConfig"] = {"OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": [failures, "Arn"]}}}
    statements.append(
        {"Sid": f"Send{failures}", "Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": {"Fn::GetAtt": [failures, "Arn"]}}
    )
    statements.append(
        {"Sid": f"Read{table_id}Stream", "Effect": "Allow", "Action": list(STREAM_ACTIONS),
         "Resource": {"Fn::GetAtt": [table_id, "StreamArn"]}}
    )
    statements.append(
        {"Sid": f"List{table_id}Streams", "Effect": "Allow", "Action": list(LIST_STREAMS_ACTIONS),
         "Resource": {"Fn::Sub": "${%s.Arn}/stream/*" % table_id}}
    )
    resources[f"{function.logical_id}{event_id}AgeAlarm"] = _alarm(
        f"{function.name} reads {table_id}'s stream late (a record keeps failing, or it cannot keep up): "
        "read its log group; the stream keeps a record 24 h only",
        "AWS/Lambda", "IteratorAge", [{"Name": "FunctionName", "Value": {"Ref": function.logical_id}}],
        "Maximum", "GreaterThanThreshold", STREAM_AGE_THRESHOLD_MS,
    )


def _alarm(description: str, namespace: str, metric: str, dimensions: list, statistic: str, comparison: str,
           threshold: int) -> dict:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": dimensions,
            "Statistic": statistic,
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": comparison,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": ALARM_TOPIC}],
            "OKActions": [{"Ref": ALARM_TOPIC}],
        },
    }


def _errors_alarm(function: Function) -> dict:
    return _alarm(
        f"{function.name} failed (an exception or a timeout): read its log group",
        "AWS/Lambda", "Errors", [{"Name": "FunctionName", "Value": {"Ref": function.logical_id}}],
        "Sum", "GreaterThanOrEqualToThreshold", 1,
    )


def _depth_alarm(queue_id: str) -> dict:
    return _alarm(
        f"messages wait in {queue_id}: each carries its reason; fix the cause, then redrive them",
        "AWS/SQS", "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}],
        "Maximum", "GreaterThanThreshold", 0,
    )
