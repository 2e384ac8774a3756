"""What a function's IAM policy allows, checked against the AWS calls its code
really makes under moto.

`record_aws_calls()` notes every botocore call (PynamoDB, Powertools and our
own clients alike) as the IAM requests it makes: an action and the resource
ARN it acts on (a DynamoDB transaction is one request per item, a batch send
is `sqs:SendMessage`). `FunctionPolicy` is a function's policy file with its
CloudFormation references resolved to the resources moto was provisioned
with, and says whether it allows a request, conditions included (the
`StringEquals` keys a request carries, e.g. the sender of an e-mail as
`ses:FromAddress`; a condition on a key the request does not carry does not
match, as in IAM).
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
from dataclasses import dataclass

from infra.aws.functions import policy_file
from infra.local.provision import QUEUE_SETTINGS, TABLE_SETTINGS, load_template, resources_of_type

ACCOUNT = "123456789012"  # moto's
PARTITION = "aws"

_TRANSACT_WRITE = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                   "ConditionCheck": "ConditionCheckItem"}
_SQS_BATCH = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
              "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}


@dataclass(frozen=True)
class IamRequest:
    action: str
    resources: tuple[str, ...]  # any one of them allowed is enough (an SES sender's address or domain)
    call: str
    context: tuple[tuple[str, str], ...] = ()  # the condition keys the request carries

    def __str__(self):
        keys = "".join(f", {key}={value}" for key, value in self.context)
        return f"{self.action} on {' or '.join(self.resources)} ({self.call}{keys})"


def _region() -> str:
    return os.environ.get("AWS_REGION", "eu-west-1")


def arn(service: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{_region()}:{ACCOUNT}:{resource}"


def iam_requests(service: str, operation: str, params: dict) -> list[IamRequest]:
    """The IAM requests one API call makes."""
    call = f"{service}.{operation}"

    def one(action: str, *resources: str, context: tuple[tuple[str, str], ...] = ()) -> IamRequest:
        return IamRequest(action, resources, call, context)

    if service == "dynamodb":
        def table(name: str) -> str:
            return arn("dynamodb", f"table/{name}")

        if operation == "TransactWriteItems":
            return [one(f"dynamodb:{_TRANSACT_WRITE[kind]}", table(body["TableName"]))
                    for item in params["TransactItems"] for kind, body in item.items()]
        if operation == "TransactGetItems":
            return [one("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in params["TransactItems"]]
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [one(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
        resource = table(params["TableName"])
        if params.get("IndexName"):
            resource += f"/index/{params['IndexName']}"
        return [one(f"dynamodb:{operation}", resource)]
    if service == "sqs":
        name = params["QueueUrl"].rsplit("/", 1)[1] if "QueueUrl" in params else params.get("QueueName", "*")
        return [one(f"sqs:{_SQS_BATCH.get(operation, operation)}", arn("sqs", name))]
    if service == "events" and operation == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in params["Entries"]}
        return [one("events:PutEvents", bus if bus.startswith("arn:") else arn("events", f"event-bus/{bus}"))
                for bus in sorted(buses)]
    if service == "ses" and operation in ("SendEmail", "SendRawEmail"):
        sender = params.get("FromEmailAddress") or params.get("Source") or ""
        address = re.sub(r".*<(.+)>.*", r"\1", sender)
        sent_from = (("ses:FromAddress", address),)
        requests = [one(f"ses:{operation}", arn("ses", f"identity/{address}"),
                        arn("ses", f"identity/{address.rpartition('@')[2]}"), context=sent_from)]
        if params.get("ConfigurationSetName"):  # IAM checks the right to use it too
            requests.append(one(f"ses:{operation}", arn("ses", f"configuration-set/{params['ConfigurationSetName']}"),
                                context=sent_from))
        return requests
    if service == "s3" and operation == "PutObject":  # S3's ARNs name no region nor account
        return [one("s3:PutObject", f"arn:{PARTITION}:s3:::{params['Bucket']}/{params['Key']}")]
    if service == "ssm" and operation in ("GetParameter", "GetParameters"):
        names = [params["Name"]] if "Name" in params else params["Names"]
        return [one(f"ssm:{operation}", arn("ssm", "parameter" + (n if n.startswith("/") else "/" + n)))
                for n in names]
    return [one(f"{service}:{operation}", "*")]


@contextlib.contextmanager
def record_aws_calls():
    """Every AWS call made inside, as IAM requests (a list filled as they happen)."""
    from botocore.client import BaseClient

    requests: list[IamRequest] = []
    original = BaseClient._make_api_call

    def recording(client, operation, params):
        service = client.meta.service_model.signing_name
        requests.extend(iam_requests(service, operation, params))
        return original(client, operation, params)

    BaseClient._make_api_call = recording
    try:
        yield requests
    finally:
        BaseClient._make_api_call = original


class FunctionPolicy:
    """A function's policy file, resolved against the provisioned moto.

    `environment` is what `provision()` returned (table names, queue URLs,
    the bus, the SES sender); the stage is the tests' (`STAGE`)."""

    def __init__(self, function: str, environment: dict[str, str]):
        self.function = function
        path = policy_file(function, os.environ.get("STAGE", "test"))
        if path is None or not path.exists():
            raise AssertionError(f"{function} has no policy file")
        self.document = json.loads(path.read_text())
        self._refs, self._attributes = _moto_resources(environment)
        statements = self.document["Statement"]
        self.statements = [self._resolve(s) for s in (statements if isinstance(statements, list) else [statements])]

    def allows(self, request: IamRequest) -> bool:
        for statement in self.statements:
            if statement["Effect"] != "Allow":
                continue
            actions = _as_list(statement["Action"])
            if not any(fnmatch.fnmatch(request.action.lower(), a.lower()) for a in actions):
                continue
            if any(fnmatch.fnmatchcase(r, pattern) for r in request.resources
                   for pattern in _as_list(statement["Resource"])) and _conditions_hold(statement, request):
                return True
        return False

    def _resolve(self, value):
        if isinstance(value, list):
            return [item for item in (self._resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self._refs[value["Ref"]]
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            logical_id, attribute = target.split(".", 1) if isinstance(target, str) else target
            return self._attributes[(logical_id, attribute)]
        if set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub(m.group(1)), value["Fn::Sub"])
        if set(value) == {"Fn::If"}:
            condition, then, otherwise = value["Fn::If"]
            return self._resolve(then if self._refs[f"Condition:{condition}"] else otherwise)
        return {key: self._resolve(item) for key, item in value.items()}

    def _sub(self, name: str) -> str:
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self._attributes[(logical_id, attribute)]
        return self._refs[name]


_NO_VALUE = object()


def _conditions_hold(statement: dict, request: IamRequest) -> bool:
    """Whether every condition of `statement` holds for `request` (only
    `StringEquals` is written in the policy files; any other operator fails
    here, to be taught first)."""
    carried = dict(request.context)
    for operator, keys in statement.get("Condition", {}).items():
        if operator != "StringEquals":
            raise AssertionError(f"{statement.get('Sid')}: teach aws_permissions.py the condition {operator}")
        for key, expected in keys.items():
            if key not in carried or carried[key] not in _as_list(expected):
                return False
    return True


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _moto_resources(environment: dict[str, str]) -> tuple[dict, dict]:
    """`Ref` and `Fn::GetAtt` of the template's resources as moto has them."""
    template = load_template()
    refs = {"AWS::Region": _region(), "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
            "AWS::StackName": "billing-test", "AWS::NoValue": _NO_VALUE, "Stage": os.environ.get("STAGE", "test"),
            "SesIdentity": environment["ALERT_SENDER"], "AlertSender": environment["ALERT_SENDER"],
            "MailConfigurationSet": environment.get("SES_CONFIGURATION_SET", "billing-alerts")}
    attributes = {}
    for logical_id in resources_of_type(template, "AWS::DynamoDB::Table"):
        name = environment[TABLE_SETTINGS[logical_id]]
        refs[logical_id] = name
        attributes[(logical_id, "Arn")] = arn("dynamodb", f"table/{name}")
    for logical_id in resources_of_type(template, "AWS::SQS::Queue"):
        refs[logical_id] = environment.get(QUEUE_SETTINGS.get(logical_id, ""), logical_id)
        attributes[(logical_id, "Arn")] = arn("sqs", logical_id)
        attributes[(logical_id, "QueueName")] = logical_id
    for logical_id in resources_of_type(template, "AWS::Events::EventBus"):
        refs[logical_id] = environment["EVENT_BUS_NAME"]
        attributes[(logical_id, "Arn")] = arn("events", f"event-bus/{environment['EVENT_BUS_NAME']}")
    for logical_id in resources_of_type(template, "AWS::Cognito::UserPool"):
        refs[logical_id] = environment["STAFF_USER_POOL_ID"]
        attributes[(logical_id, "Arn")] = arn("cognito-idp", f"userpool/{environment['STAFF_USER_POOL_ID']}")
    for logical_id in resources_of_type(template, "AWS::Cognito::UserPoolClient"):
        refs[logical_id] = environment["STAFF_USER_POOL_CLIENT_ID"]
    for logical_id in resources_of_type(template, "AWS::S3::Bucket"):
        refs[logical_id] = environment.get("EINVOICE_BUCKET", logical_id)
        attributes[(logical_id, "Arn")] = f"arn:{PARTITION}:s3:::{refs[logical_id]}"
    # moto decrypts SSM parameters itself: no KMS request is ever recorded,
    # the key only has to resolve.
    for logical_id in resources_of_type(template, "AWS::KMS::Key"):
        refs[logical_id] = logical_id
        attributes[(logical_id, "Arn")] = arn("kms", f"key/{logical_id}")
    return refs, attributes
