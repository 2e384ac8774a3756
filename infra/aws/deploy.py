"""Deploy a packaged stage with boto3 (what `aws cloudformation package` and
`deploy` do, without installing the AWS CLI, whose pins of botocore would
fight ours): `make deploy STAGE=prod DEPLOY_BUCKET=... DEPLOY_ARGS='...'`.

1. `build/<stage>/deployment.zip` goes to the artifact bucket under its
   SHA-256: an unchanged package is neither uploaded nor deployed again;
2. every function's `CodeUri` points at it; the template goes to the bucket
   too (the API's OpenAPI body soon outgrows an inline template's 51 KB);
3. a change set (the SAM transform needs CAPABILITY_AUTO_EXPAND, the
   functions' roles CAPABILITY_IAM) is created and printed, then executed
   unless `--no-execute`, and the stack's outputs are printed.

Parameters are given as `--parameter Name=value`; on an update, a parameter
not given keeps its previous value. docs/deploy.md is the whole procedure.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import yaml

from infra.aws.template import FUNCTION, functions

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
MAX_FUNCTION_NAME = 64


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


def with_code_at(template: dict, bucket: str, key: str) -> dict:
    """A copy of `template` whose functions run the code at s3://bucket/key."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == FUNCTION:
            resource["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
    return template


def check_names(template: dict, stack_name: str) -> None:
    """Functions are named `<stack>-<function>`; Lambda allows 64 characters."""
    too_long = [f.name for f in functions(template) if len(stack_name) + 1 + len(f.name) > MAX_FUNCTION_NAME]
    if too_long:
        raise SystemExit(f"stack name {stack_name!r} too long for the functions {too_long} (64 characters)")


def parameter_list(given: dict[str, str], declared: dict, previous: set[str]) -> list[dict]:
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


def deploy(stage: str, bucket: str, stack_name: str, given: dict[str, str], *, prefix: str = "billing",
           execute: bool = True, session=None) -> None:
    import boto3
    from botocore.exceptions import ClientError, WaiterError

    session = session or boto3.session.Session()
    out = ROOT / "build" / stage
    template_path, zip_path = out / "template.yaml", out / "deployment.zip"
    if not template_path.exists() or not zip_path.exists():
        raise SystemExit(f"nothing packaged in {out}: run `make package STAGE={stage}` first")
    template = yaml.safe_load(template_path.read_text())
    check_names(template, stack_name)
    s3, cfn = session.client("s3"), session.client("cloudformation")

    code_key = f"{prefix}/{stage}/{sha256(zip_path)}.zip"
    upload(s3, bucket, code_key, zip_path)
    body = yaml.safe_dump(with_code_at(template, bucket, code_key), sort_keys=False).encode()
    template_key = f"{prefix}/{stage}/{hashlib.sha256(body).hexdigest()}.template.yaml"
    s3.put_object(Bucket=bucket, Key=template_key, Body=body)
    template_url = f"https://{bucket}.s3.{session.region_name}.amazonaws.com/{template_key}"

    try:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        exists = stack["StackStatus"] != "REVIEW_IN_PROGRESS"
        previous = {p["ParameterKey"] for p in stack.get("Parameters", [])}
    except ClientError:
        exists, previous = False, set()
    change_set = f"{stack_name}-{template_key.rsplit('/', 1)[1][:12]}"
    cfn.create_change_set(
        StackName=stack_name, ChangeSetName=change_set, TemplateURL=template_url,
        ChangeSetType="UPDATE" if exists else "CREATE", Capabilities=CAPABILITIES,
        Parameters=parameter_list(given, template.get("Parameters", {}), previous),
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
    described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
    for change in described["Changes"]:
        item = change["ResourceChange"]
        print(f"{item['Action']:8} {item['LogicalResourceId']:45} {item['ResourceType']}"
              f"{'  (replacement)' if item.get('Replacement') == 'True' else ''}")
    if not execute:
        print(f"change set {change_set} created, not executed")
        return
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
    cfn.get_waiter("stack_update_complete" if exists else "stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 10, "MaxAttempts": 360}
    )
    for output in cfn.describe_stacks(StackName=stack_name)["Stacks"][0].get("Outputs", []):
        print(f"{output['OutputKey']}: {output['OutputValue']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy build/<stage> with CloudFormation.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--bucket", required=True, help="S3 bucket for the package and template, in the region")
    parser.add_argument("--stack-name", help="default: billing-<stage>")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--no-execute", action="store_true", help="create and show the change set only")
    args = parser.parse_args(argv)
    given = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item!r}: expected NAME=VALUE")
        given[name] = value
    deploy(args.stage, args.bucket, args.stack_name or f"billing-{args.stage}", given, execute=not args.no_execute)
    return 0


if __name__ == "__main__":
    sys.exit(main())
