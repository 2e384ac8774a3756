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
    "WebhookQueue": "WEBHOOK_QUEUE_URL",
}
LOCAL_TABLE_NAMES = {"BillingTable": "billing", "IdempotencyTable": "billing-idempotency"}
LOCAL_CONFIGURATION_SET = "billing-alerts"


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
        _rules_to_queues(template, events, event_bus_name, arns)

    env.update(_einvoice_bucket(template, region))
    env.update(_staff_pool(template, region))

    ses = boto3.client("ses", region_name=region)
    ses.verify_email_identity(EmailAddress=alert_sender)
    env["ALERT_SENDER"] = alert_sender
    env.update(_mail_feedback(template, region, ses, arns))
    return env


def _rules_to_queues(template: dict, events, bus: str, queue_arns: dict[str, str]) -> None:
    """The bus's rules whose targets are queues of the template, as in AWS
    (EInvoiceRule -> EInvoiceQueue): moto delivers a matching event to the
    queue. Targets of other kinds (a log group) are left out."""
    for logical_id, properties in resources_of_type(template, "AWS::Events::Rule").items():
        targets = [{"Id": target["Id"], "Arn": queue_arns[_getatt(target["Arn"])]}
                   for target in properties.get("Targets", [])
                   if "Fn::GetAtt" in (target.get("Arn") or {}) and _getatt(target["Arn"]) in queue_arns]
        if not targets:
            continue
        events.put_rule(Name=logical_id, EventBusName=bus, EventPattern=json.dumps(properties["EventPattern"]),
                        State="ENABLED")
        events.put_targets(Rule=logical_id, EventBusName=bus, Targets=targets)


# The local stage's drop bucket (the template's EInvoiceBucket).
LOCAL_EINVOICE_BUCKET = "billing-einvoices"


def _einvoice_bucket(template: dict, region: str) -> dict[str, str]:
    if not resources_of_type(template, "AWS::S3::Bucket").get("EInvoiceBucket"):
        return {}
    s3 = boto3.client("s3", region_name=region)
    if LOCAL_EINVOICE_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=LOCAL_EINVOICE_BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
    return {"EINVOICE_BUCKET": LOCAL_EINVOICE_BUCKET}


def _staff_pool(template: dict, region: str) -> dict[str, str]:
    """The console's Cognito user pool and its client, as the template
    declares them (found again by name on a second run)."""
    pools = resources_of_type(template, "AWS::Cognito::UserPool")
    if not pools:
        return {}
    (pool_id, properties), = pools.items()
    client_properties = next(iter(resources_of_type(template, "AWS::Cognito::UserPoolClient").values()))
    cognito = boto3.client("cognito-idp", region_name=region)
    name = f"billing-{pool_id}"
    found = [p["Id"] for p in cognito.list_user_pools(MaxResults=60)["UserPools"] if p["Name"] == name]
    if found:
        user_pool_id = found[0]
    else:
        user_pool_id = cognito.create_user_pool(
            PoolName=name, UsernameAttributes=properties["UsernameAttributes"],
            Policies=properties["Policies"], AdminCreateUserConfig=properties["AdminCreateUserConfig"],
            Schema=properties["Schema"],
        )["UserPool"]["Id"]
    clients = cognito.list_user_pool_clients(UserPoolId=user_pool_id, MaxResults=60)["UserPoolClients"]
    if clients:
        client_id = clients[0]["ClientId"]
    else:
        client_id = cognito.create_user_pool_client(
            UserPoolId=user_pool_id, ClientName=client_properties["ClientName"],
            ExplicitAuthFlows=client_properties["ExplicitAuthFlows"], GenerateSecret=False,
        )["UserPoolClient"]["ClientId"]
    return {"STAFF_USER_POOL_ID": user_pool_id, "STAFF_USER_POOL_CLIENT_ID": client_id}


def _mail_feedback(template: dict, region: str, ses, queue_arns: dict[str, str]) -> dict[str, str]:
    """The configuration set alert e-mails go through, and what carries
    SES's reports on them to their queue: each SNS topic that an event
    destination names, subscribed by the queues the template subscribes to
    it (raw messages, as in AWS). moto's SES publishes no event of a
    configuration set, so on the local stage and in tests a report is
    published on the topic by hand, as SES would."""
    if not resources_of_type(template, "AWS::SES::ConfigurationSet"):
        return {}
    name = LOCAL_CONFIGURATION_SET
    if name not in {c["Name"] for c in ses.list_configuration_sets().get("ConfigurationSets", [])}:
        ses.create_configuration_set(ConfigurationSet={"Name": name})
    sns = boto3.client("sns", region_name=region)
    topics = {}
    for topic_id in resources_of_type(template, "AWS::SNS::Topic"):
        topics[topic_id] = sns.create_topic(Name=topic_id)["TopicArn"]  # idempotent
    for subscription in resources_of_type(template, "AWS::SNS::Subscription").values():
        if subscription.get("Protocol") != "sqs":
            continue
        topic_arn = topics[subscription["TopicArn"]["Ref"]]
        queue_arn = queue_arns[_getatt(subscription["Endpoint"])]
        existing = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        if not any(s["Endpoint"] == queue_arn for s in existing):
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True,
                          Attributes={"RawMessageDelivery": str(subscription.get("RawMessageDelivery", False)).lower()})
    return {"SES_CONFIGURATION_SET": name}


def _getatt(value) -> str:
    target = value["Fn::GetAtt"]
    return target.split(".")[0] if isinstance(target, str) else target[0]


def dead_letter_queue_url(queue_url: str, region: str = "eu-west-1") -> str:
    """The URL of the dead-letter queue behind `queue_url` (from its redrive policy)."""
    sqs = boto3.client("sqs", region_name=region)
    policy = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    arn = json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"]
    return sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
