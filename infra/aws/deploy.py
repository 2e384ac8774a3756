"""Deploy a packaged stage with boto3 (what `aws cloudformation package` and
`deploy` do, without installing the AWS CLI, whose pins of botocore would
fight ours), with the checks a stage holding customers' data needs:
`make deploy STAGE=prod DEPLOY_BUCKET=... DEPLOY_ARGS='...'`.

1. API Gateway writes the stages' access logs with the region's
   account-level CloudWatch role: without one, the stack's creation would
   fail on the stage. It is checked first; `--set-up-api-gateway-logging`
   creates it (once per account and region, for every API of the region);
2. a stack left `ROLLBACK_COMPLETE` by a failed first creation cannot be
   updated: the deploy stops and says so, or deletes it first when given
   `--delete-failed-stack`;
3. `build/<stage>/deployment.zip` goes to the artifact bucket under its
   SHA-256: an unchanged package is neither uploaded nor deployed again;
   every function's `CodeUri` points at it, and its `AutoPublishCodeSha256`
   is a digest of the code and of the stack parameters' values, so that a
   parameter's new value (resolved by CloudFormation, after SAM has chosen
   the versions) publishes new versions behind the aliases too; the template
   goes to the bucket (the API's OpenAPI body outgrows an inline template's
   51 KB);
4. a change set (the SAM transform needs CAPABILITY_AUTO_EXPAND, the
   functions' roles CAPABILITY_IAM) is created and printed. It is refused,
   nothing executed, when it would replace or remove a resource that holds
   data (`STATEFUL_TYPES`) that `--allow-replacement <LogicalId>` does not
   name;
5. it is executed unless `--no-execute`, under the stack policy: no update
   may replace or delete those resources (the ones allowed excepted, for
   this update only); termination protection is turned on for `prod`; the
   stack's outputs are printed.

Parameters are given as `--parameter Name=value`; on an update, a parameter
not given keeps its previous value. docs/deploy.md is the whole procedure.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

from infra.aws.template import FUNCTION, functions

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
MAX_FUNCTION_NAME = 64
# Stages whose stack cannot be deleted until its termination protection is
# turned off by hand.
PROTECTED_STAGES = {"prod"}

# What a resource of these types holds that CloudFormation cannot put back:
# replacing one makes a new, empty one (the data stays behind, retained or
# deleted with the old one), removing one drops it. The stack policy refuses
# both, and so does the deploy before executing a change set.
STATEFUL_TYPES = {
    "AWS::DynamoDB::Table": "its items",
    "AWS::DynamoDB::GlobalTable": "its items",
    "AWS::Cognito::UserPool": "the staff accounts and their passwords",
    "AWS::SQS::Queue": "the messages waiting in it",
    "AWS::Logs::LogGroup": "its logs",
    "AWS::KMS::Key": "the key to what it encrypted",
    "AWS::SecretsManager::Secret": "its secret value",
    "AWS::S3::Bucket": "its objects",
    "AWS::Kinesis::Stream": "its records",
}

# The role API Gateway writes CloudWatch logs with, one per account and region.
LOGGING_ROLE = "apigateway-cloudwatch-logs"
PUSH_TO_LOGS = "arn:{partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload(s3, bucket: str, key: str, path: Path) -> None:
    """Upload unless an object with that content-derived key is there."""
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(path), bucket, key)


def with_code_at(template: dict, bucket: str, key: str, revision: str | None = None) -> dict:
    """A copy of `template` whose functions run the code at s3://bucket/key;
    `revision` (a digest of the code and the parameters) makes their next
    versions."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == FUNCTION:
            resource["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
            if revision:
                resource["Properties"]["AutoPublishCodeSha256"] = revision
    return template


def check_names(template: dict, stack_name: str) -> None:
    """Functions are named `<stack>-<function>`; Lambda allows 64 characters."""
    too_long = [f.name for f in functions(template) if len(stack_name) + 1 + len(f.name) > MAX_FUNCTION_NAME]
    if too_long:
        raise SystemExit(f"stack name {stack_name!r} too long for the functions {too_long} (64 characters)")


def parameter_list(given: dict[str, str], declared: dict, previous) -> list[dict]:
    """CloudFormation's parameters: the given ones, else the stack's previous
    value (an update), else the template's default."""
    unknown = set(given) - set(declared)
    if unknown:
        raise SystemExit(f"the template has no parameters {sorted(unknown)}")
    answer = []
    for name in declared:
        if name in given:
            answer.append({"ParameterKey": name, "ParameterValue": given[name]})
        elif name in previous:
            answer.append({"ParameterKey": name, "UsePreviousValue": True})
    return answer


def revision(code_key: str, given: dict[str, str], declared: dict, previous: dict[str, str]) -> str:
    """A digest of the code and of every parameter's value as the stack will
    have it (a NoEcho parameter's previous value is masked, so a change of
    it alone is not seen: this template has none)."""
    values = {name: given.get(name, previous.get(name, str(spec.get("Default", ""))))
              for name, spec in sorted(declared.items())}
    return hashlib.sha256(json.dumps([code_key, values], sort_keys=True).encode()).hexdigest()


# -- what holds data ---------------------------------------------------------------


def stateful_resources(template: dict) -> dict[str, str]:
    """Logical id -> type of every resource of the template that holds data."""
    return {logical_id: resource["Type"] for logical_id, resource in sorted(template["Resources"].items())
            if resource["Type"] in STATEFUL_TYPES}


def stack_policy(protected) -> dict:
    """Every update allowed, except replacing or deleting `protected`."""
    statements = [{"Effect": "Allow", "Principal": "*", "Action": "Update:*", "Resource": "*"}]
    if protected:
        statements.append({"Effect": "Deny", "Principal": "*", "Action": ["Update:Replace", "Update:Delete"],
                           "Resource": [f"LogicalResourceId/{logical_id}" for logical_id in sorted(protected)]})
    return {"Statement": statements}


def data_losses(changes: list[dict], allowed) -> list[str]:
    """What the change set would replace or remove of the resources that hold
    data and `allowed` does not name, one line each."""
    found = []
    for change in changes:
        item = change.get("ResourceChange", {})
        kind, logical_id = item.get("ResourceType"), item.get("LogicalResourceId")
        if kind not in STATEFUL_TYPES or logical_id in allowed:
            continue
        if item.get("Action") == "Remove":
            what = "removed"
        elif item.get("Action") == "Modify" and item.get("Replacement") == "True":
            what = "replaced by a new, empty one"
        elif item.get("Action") == "Modify" and item.get("Replacement") == "Conditional":
            what = "maybe replaced by a new, empty one (CloudFormation cannot tell before running it)"
        else:
            continue
        found.append(f"  {logical_id} ({kind}) would be {what}: {STATEFUL_TYPES[kind]} would not follow")
    return found


# -- AWS -------------------------------------------------------------------------


def ensure_api_gateway_logging(session, set_up: bool, wait_seconds: float = 5) -> None:
    """API Gateway's account-level CloudWatch role in the session's region:
    there, or created and set when `set_up`, else the deploy stops."""
    from botocore.exceptions import ClientError

    apigateway = session.client("apigateway")
    try:
        if apigateway.get_account().get("cloudwatchRoleArn"):
            return
    except ClientError as error:
        print(f"warning: API Gateway's account settings cannot be read ({error.response['Error']['Code']}): "
              "the stages' access logs need its CloudWatch role (docs/deploy.md)", file=sys.stderr)
        return
    if not set_up:
        raise SystemExit(
            f"API Gateway has no CloudWatch role in {session.region_name}, and the stages' access logs need one "
            "(creating the stack would fail on them). Run the deploy again with --set-up-api-gateway-logging "
            f"(it creates the IAM role {LOGGING_ROLE} and sets it, once for every API of the account in this "
            "region; docs/deploy.md)")
    iam = session.client("iam")
    try:
        role = iam.get_role(RoleName=LOGGING_ROLE)["Role"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchEntity":
            raise
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        role = iam.create_role(RoleName=LOGGING_ROLE, AssumeRolePolicyDocument=json.dumps(trust),
                               Description="API Gateway writes the APIs' logs to CloudWatch Logs")["Role"]
    iam.attach_role_policy(RoleName=LOGGING_ROLE, PolicyArn=PUSH_TO_LOGS.format(partition=role["Arn"].split(":")[1]))
    for attempt in range(12):
        try:
            apigateway.update_account(patchOperations=[
                {"op": "replace", "path": "/cloudwatchRoleArn", "value": role["Arn"]}])
            break
        except ClientError as error:
            # A new role takes a few seconds to be usable by API Gateway.
            if error.response["Error"]["Code"] != "BadRequestException" or attempt == 11:
                raise
            time.sleep(wait_seconds)
    print(f"API Gateway logs to CloudWatch with {role['Arn']}")


def _failure_reasons(cfn, stack_name: str, limit: int = 5) -> list[str]:
    from botocore.exceptions import ClientError

    try:
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    except ClientError:
        return []
    return [f"  {e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}" for e in events
            if e.get("ResourceStatus", "").endswith("_FAILED")][:limit]


def existing_stack(cfn, stack_name: str, delete_failed: bool) -> tuple[bool, dict[str, str]]:
    """(whether the stack exists to be updated, its parameters' values)."""
    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in error.response["Error"].get("Message", ""):
            return False, {}
        raise
    status = stack["StackStatus"]
    if status == "ROLLBACK_COMPLETE":
        reasons = "\n".join(_failure_reasons(cfn, stack_name))
        if not delete_failed:
            raise SystemExit(
                f"stack {stack_name} is ROLLBACK_COMPLETE: its creation failed and CloudFormation cannot update "
                f"it, only delete it.\n{reasons}\nFix the cause, then run the deploy again with "
                "--delete-failed-stack (it deletes the failed stack first; docs/deploy.md, "
                "\"A failed first deploy\")")
        print(f"deleting {stack_name} (ROLLBACK_COMPLETE)\n{reasons}")
        cfn.delete_stack(StackName=stack_name)
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack_name, WaiterConfig={"Delay": 10,
                                                                                        "MaxAttempts": 180})
        return False, {}
    if status == "REVIEW_IN_PROGRESS":  # a change set never executed: still to create
        return False, {}
    return True, {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def change_set_changes(cfn, stack_name: str, change_set: str) -> list[dict]:
    changes, token = [], None
    while True:
        page = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set,
                                       **({"NextToken": token} if token else {}))
        changes += page.get("Changes", [])
        token = page.get("NextToken")
        if not token:
            return changes


def deploy(stage: str, bucket: str, stack_name: str, given: dict[str, str], *, prefix: str = "billing",
           execute: bool = True, session=None, allow_replacement=(), delete_failed_stack: bool = False,
           set_up_api_gateway_logging: bool = False, out: Path | None = None) -> None:
    import boto3
    from botocore.exceptions import WaiterError

    session = session or boto3.session.Session()
    out = out or ROOT / "build" / stage
    template_path, zip_path = out / "template.yaml", out / "deployment.zip"
    if not template_path.exists() or not zip_path.exists():
        raise SystemExit(f"nothing packaged in {out}: run `make package STAGE={stage}` first")
    template = yaml.safe_load(template_path.read_text())
    check_names(template, stack_name)
    declared = template.get("Parameters", {})
    allowed = set(allow_replacement)
    unknown = allowed - set(stateful_resources(template))
    if unknown:
        print(f"note: --allow-replacement {sorted(unknown)}: not resources of the template that hold data "
              "(a resource the update removes is named by its logical id in the stack)")
    ensure_api_gateway_logging(session, set_up_api_gateway_logging)
    s3, cfn = session.client("s3"), session.client("cloudformation")
    exists, previous = existing_stack(cfn, stack_name, delete_failed_stack)

    code_key = f"{prefix}/{stage}/{sha256(zip_path)}.zip"
    upload(s3, bucket, code_key, zip_path)
    completed = with_code_at(template, bucket, code_key, revision(code_key, given, declared, previous))
    body = yaml.safe_dump(completed, sort_keys=False).encode()
    template_key = f"{prefix}/{stage}/{hashlib.sha256(body).hexdigest()}.template.yaml"
    s3.put_object(Bucket=bucket, Key=template_key, Body=body)
    template_url = f"https://{bucket}.s3.{session.region_name}.amazonaws.com/{template_key}"

    # Named by the template and the time: a change set left unexecuted (refused,
    # or --no-execute) never stands in the way of the next one.
    change_set = f"{stack_name}-{template_key.rsplit('/', 1)[1][:12]}-{int(time.time())}"
    cfn.create_change_set(
        StackName=stack_name, ChangeSetName=change_set, TemplateURL=template_url,
        ChangeSetType="UPDATE" if exists else "CREATE", Capabilities=CAPABILITIES,
        Parameters=parameter_list(given, declared, previous),
        Tags=[{"Key": "stage", "Value": stage}],
    )
    try:
        cfn.get_waiter("change_set_create_complete").wait(StackName=stack_name, ChangeSetName=change_set)
    except WaiterError:
        described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
        reason = described.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            print("no changes to deploy")
            cfn.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
            return
        raise SystemExit(f"change set failed: {reason}")
    changes = change_set_changes(cfn, stack_name, change_set)
    for change in changes:
        item = change["ResourceChange"]
        print(f"{item['Action']:8} {item['LogicalResourceId']:45} {item['ResourceType']}"
              f"{'  (replacement)' if item.get('Replacement') == 'True' else ''}")
    losses = data_losses(changes, allowed)
    if losses:
        names = " ".join(f"--allow-replacement {line.split()[0]}" for line in losses)
        raise SystemExit(
            "refused: this change set would lose data:\n" + "\n".join(losses) +
            f"\nNothing was executed (change set {change_set} is left to read). If that is what you mean, "
            f"move the data first, then deploy again with {names}")
    if not execute:
        print(f"change set {change_set} created, not executed")
        return

    protected = set(stateful_resources(template))
    if exists:
        # A stack policy is the stack's own; only an update can be refused.
        cfn.set_stack_policy(StackName=stack_name, StackPolicyBody=json.dumps(stack_policy(protected - allowed)))
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
    try:
        cfn.get_waiter("stack_update_complete" if exists else "stack_create_complete").wait(
            StackName=stack_name, WaiterConfig={"Delay": 10, "MaxAttempts": 360})
    except WaiterError:
        reasons = "\n".join(_failure_reasons(cfn, stack_name))
        after = ("it is ROLLBACK_COMPLETE: fix the cause, then deploy again with --delete-failed-stack"
                 if not exists else "it rolled back to its previous state")
        raise SystemExit(f"the stack's {'update' if exists else 'creation'} failed; {after}\n{reasons}") from None
    finally:
        if exists:
            cfn.set_stack_policy(StackName=stack_name, StackPolicyBody=json.dumps(stack_policy(protected)))
    if not exists:
        cfn.set_stack_policy(StackName=stack_name, StackPolicyBody=json.dumps(stack_policy(protected)))
    if stage in PROTECTED_STAGES:
        cfn.update_termination_protection(StackName=stack_name, EnableTerminationProtection=True)
    for output in cfn.describe_stacks(StackName=stack_name)["Stacks"][0].get("Outputs", []):
        print(f"{output['OutputKey']}: {output['OutputValue']}")


def main(argv: list[str] | None = None, session=None) -> int:
    parser = argparse.ArgumentParser(description="Deploy build/<stage> with CloudFormation.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--bucket", required=True, help="S3 bucket for the package and template, in the region")
    parser.add_argument("--stack-name", help="default: billing-<stage>")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--no-execute", action="store_true", help="create and show the change set only")
    parser.add_argument("--allow-replacement", action="append", default=[], metavar="LOGICAL_ID",
                        help="let this update replace or remove this resource that holds data (repeatable)")
    parser.add_argument("--delete-failed-stack", action="store_true",
                        help="delete the stack first if a failed creation left it ROLLBACK_COMPLETE")
    parser.add_argument("--set-up-api-gateway-logging", action="store_true",
                        help="create and set API Gateway's CloudWatch role of the region if it has none")
    parser.add_argument("--out", type=Path, help="the packaged stage, default build/<stage>")
    args = parser.parse_args(argv)
    given = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item!r}: expected NAME=VALUE")
        given[name] = value
    deploy(args.stage, args.bucket, args.stack_name or f"billing-{args.stage}", given, execute=not args.no_execute,
           session=session, allow_replacement=args.allow_replacement, delete_failed_stack=args.delete_failed_stack,
           set_up_api_gateway_logging=args.set_up_api_gateway_logging, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
