"""Create the AWS resources of infra/aws/resources.yaml in moto.

The template is the one home of every table's key schema and index; the local
stage (moto's server) and the tests (moto in-process) both provision from it
here, so a table can never differ between them and AWS.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "aws" / "resources.yaml"

# Which environment variable tells the application each resource's name/URL.
TABLE_SETTINGS = {"BillingTable": "TABLE_NAME", "IdempotencyTable": "IDEMPOTENCY_TABLE_NAME"}
QUEUE_SETTINGS = {
    "UsageQueue": "USAGE_QUEUE_URL",
    "UsageDeadLetterQueue": "USAGE_DEAD_LETTER_QUEUE_URL",
    "BillingQueue": "BILLING_QUEUE_URL",
    "NotificationsQueue": "NOTIFICATIONS_QUEUE_URL",
}
LOCAL_TABLE_NAMES = {"BillingTable": "billing", "IdempotencyTable": "billing-idempotency"}


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation short-form tags (!Ref, !GetAtt, !Sub ...)."""


def _intrinsic(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=_CfnLoader)


def resources_of_type(template: dict, resource_type: str) -> dict[str, dict]:
    return {
        name: resource.get("Properties", {})
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def create_table_input(properties: dict, table_name: str) -> dict:
    """CreateTable arguments from a CloudFormation table's properties."""
    args = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if properties.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    if properties.get("StreamSpecification"):
        args["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
    return args


def provision(region: str = "eu-west-1", table_names: dict[str, str] | None = None,
              alert_sender: str = "billing@example.com", event_bus_name: str = "billing") -> dict[str, str]:
    """Create every table, queue (with its redrive) and the event bus of the
    template, and verify the SES sender. Idempotent. Returns the environment
    variables that point the application at them."""
    template = load_template()
    table_names = {**LOCAL_TABLE_NAMES, **(table_names or {})}
    env: dict[str, str] = {}

    dynamodb = boto3.client("dynamodb", region_name=region)
    existing = set(dynamodb.list_tables()["TableNames"])
    for logical_id, properties in resources_of_type(template, "AWS::DynamoDB::Table").items():
        name = table_names[logical_id]
        if name not in existing:
            dynamodb.create_table(**create_table_input(properties, name))
            ttl = properties.get("TimeToLiveSpecification")
            if ttl:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        env[TABLE_SETTINGS[logical_id]] = name

    sqs = boto3.client("sqs", region_name=region)
    queues = resources_of_type(template, "AWS::SQS::Queue")
    arns: dict[str, str] = {}
    # Dead-letter queues first: the others name them in their redrive policy.
    for logical_id in sorted(queues, key=lambda q: "RedrivePolicy" in queues[q]):
        properties = queues[logical_id]
        attributes = {
            key: str(properties[key])
            for key in ("VisibilityTimeout", "MessageRetentionPeriod")
            if key in properties
        }
        redrive = properties.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
            target = target.split(".")[0] if isinstance(target, str) else target[0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        url = sqs.create_queue(QueueName=logical_id, Attributes=attributes)["QueueUrl"]
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        if logical_id in QUEUE_SETTINGS:
            env[QUEUE_SETTINGS[logical_id]] = url

    events = boto3.client("events", region_name=region)
    if resources_of_type(template, "AWS::Events::EventBus"):
        names = {bus["Name"] for bus in events.list_event_buses()["EventBuses"]}
        if event_bus_name not in names:
            events.create_event_bus(Name=event_bus_name)
        env["EVENT_BUS_NAME"] = event_bus_name

    boto3.client("ses", region_name=region).verify_email_identity(EmailAddress=alert_sender)
    env["ALERT_SENDER"] = alert_sender
    return env


def dead_letter_queue_url(queue_url: str, region: str = "eu-west-1") -> str:
    """The URL of the dead-letter queue behind `queue_url` (from its redrive policy)."""
    sqs = boto3.client("sqs", region_name=region)
    policy = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    arn = json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"]
    return sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
