"""The stage hardened for production (infra/aws/hardening.py, the WAF of
infra/aws/resources.yaml, infra/aws/deploy.py): each property on the packaged
template and on the template as CloudFormation runs it (after the SAM
transform), and the deploy's refusals against a stand-in CloudFormation.

The packaging runs once for this module (test_infra.py's fixtures).
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters

from chalicelib.api.http import route_table
from chalicelib.config import settings
from infra.aws import deploy
from infra.aws.hardening import ACCESS_LOGS, THROTTLING, is_operator_path
from infra.aws.functions import app_functions
from tests.integration.test_infra import alias_of, lambda_function, of_type, the_app

MANAGED_GROUPS = {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                  "AWSManagedRulesAmazonIpReputationList"}
WEBHOOK = ("POST", "/webhooks/stripe")


def template_of(packaged) -> dict:
    return packaged[0]


def bodies(deployed) -> dict[str, dict]:
    return {api_id: deployed[api_id]["Properties"]["Body"] for api_id in ("RestAPI", "OperatorAPI")}


def integrations(body: dict):
    for path, methods in body["paths"].items():
        for name, method in methods.items():
            if isinstance(method, dict) and "x-amazon-apigateway-integration" in method:
                yield path, name, method


# -- WAF -------------------------------------------------------------------------


def matches(statement: dict, method: str, path: str) -> bool:
    """Whether a WAF statement of the kinds the web ACL uses matches a request."""
    if "NotStatement" in statement:
        return not matches(statement["NotStatement"]["Statement"], method, path)
    if "AndStatement" in statement:
        return all(matches(s, method, path) for s in statement["AndStatement"]["Statements"])
    if "OrStatement" in statement:
        return any(matches(s, method, path) for s in statement["OrStatement"]["Statements"])
    byte = statement["ByteMatchStatement"]
    value = {"Method": method, "UriPath": path}[next(iter(byte["FieldToMatch"]))]
    search = byte["SearchString"]
    return {"EXACTLY": value == search, "ENDS_WITH": value.endswith(search), "STARTS_WITH": value.startswith(search),
            "CONTAINS": search in value}[byte["PositionalConstraint"]]


def in_scope(rule: dict, method: str, path: str) -> bool:
    statement = rule["Statement"]
    inner = statement.get("ManagedRuleGroupStatement") or statement.get("RateBasedStatement")
    scope = inner.get("ScopeDownStatement")
    return scope is None or matches(scope, method, path)


def test_the_public_api_is_behind_the_waf(packaged, deployed):
    template = template_of(packaged)
    acl = template["Resources"]["ApiWebAcl"]
    assert acl["Type"] == "AWS::WAFv2::WebACL"
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL" and properties["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in properties["Rules"]}
    assert len({rule["Priority"] for rule in rules.values()}) == len(rules)
    groups = {rule["Statement"]["ManagedRuleGroupStatement"]["Name"]: rule for rule in rules.values()
              if "ManagedRuleGroupStatement" in rule["Statement"]}
    assert set(groups) >= MANAGED_GROUPS
    for rule in groups.values():
        assert rule["OverrideAction"] == {"None": {}}, rule["Name"]
        assert rule["Statement"]["ManagedRuleGroupStatement"]["VendorName"] == "AWS"

    [rate] = [rule for rule in rules.values() if "RateBasedStatement" in rule["Statement"]]
    limit = rate["Statement"]["RateBasedStatement"]
    assert limit["AggregateKeyType"] == "IP" and limit["Limit"] == {"Ref": "WafRateLimitPerIp"}
    assert 100 <= template["Parameters"]["WafRateLimitPerIp"]["Default"] <= 20_000
    block = rate["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    from chalicelib.api.responses import Error

    body = json.loads(properties["CustomResponseBodies"][block["CustomResponseBodyKey"]]["Content"])
    Error.model_validate(body)  # the API's error shape
    assert body["error"]["code"] == "rate_limited"

    # The API takes JSON bodies over the Common rule set's 8 KB: that rule counts only.
    assert settings().max_body_bytes > 8 * 1024
    common = groups["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    overrides = {o["Name"]: o["ActionToUse"] for o in common["RuleActionOverrides"]}
    assert overrides["SizeRestrictions_BODY"] == {"Count": {}}

    # Stripe's webhook reaches the app (its signature guards it); everything else is inspected.
    assert WEBHOOK[1] in the_app().routes and WEBHOOK[0] in the_app().routes[WEBHOOK[1]].keys()
    for stage_path in (f"/api{WEBHOOK[1]}", WEBHOOK[1]):
        for name in ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet", rate["Name"]):
            assert not in_scope(rules[name], WEBHOOK[0], stage_path), (name, stage_path)
    for method, path in (("POST", "/api/customers"), ("GET", "/api/webhooks/stripe"), ("POST", "/api/usage")):
        assert all(in_scope(rule, method, path) for rule in rules.values()), (method, path)

    # After the transform: the association names the API's one stage.
    [stage_id] = [k for k, v in of_type(deployed, "AWS::ApiGateway::Stage").items()
                  if v["Properties"]["RestApiId"] == {"Ref": "RestAPI"}]
    association = deployed["ApiWebAclAssociation"]
    assert association["Type"] == "AWS::WAFv2::WebACLAssociation"
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    assert association["Properties"]["ResourceArn"] == {"Fn::Sub": (
        "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/${RestAPI}/stages/${%s}" % stage_id)}


# -- stages ----------------------------------------------------------------------


def test_each_api_has_one_stage_throttled_with_access_logs(packaged, deployed):
    template = template_of(packaged)
    stages = of_type(deployed, "AWS::ApiGateway::Stage")
    assert {v["Properties"]["RestApiId"]["Ref"] for v in stages.values()} == {"RestAPI", "OperatorAPI"}
    assert len(stages) == 2
    # SAM's extra stage named `Stage` (a Deployment's StageName) would skip the WAF, throttling and logs.
    for deployment_id, deployment_ in of_type(deployed, "AWS::ApiGateway::Deployment").items():
        assert "StageName" not in deployment_["Properties"], deployment_id
    for stage in stages.values():
        properties = stage["Properties"]
        api_id = properties["RestApiId"]["Ref"]
        assert properties["StageName"] == "api"
        rate, burst = THROTTLING[api_id]
        assert properties["MethodSettings"] == [{
            "HttpMethod": "*", "ResourcePath": "/*",
            "ThrottlingBurstLimit": {"Ref": burst}, "ThrottlingRateLimit": {"Ref": rate}}]
        assert template["Parameters"][rate]["Default"] <= template["Parameters"][burst]["Default"]
        logs = properties["AccessLogSetting"]
        assert logs["DestinationArn"] == {"Fn::GetAtt": [ACCESS_LOGS[api_id], "Arn"]}
        group = deployed[ACCESS_LOGS[api_id]]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        line = json.loads(logs["Format"])
        assert {key: line[key] for key in ("requestId", "ip", "method", "path", "status", "latency")} == {
            "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "method": "$context.httpMethod",
            "path": "$context.path", "status": "$context.status", "latency": "$context.responseLatency"}


# -- the operator API ------------------------------------------------------------


def test_the_operator_routes_are_on_their_own_api_that_takes_aws_signatures_only(packaged, deployed):
    routes = [route for route in route_table(the_app()) if not route.path.startswith("/_local")]
    operator_paths = {route.path for route in routes if route.auth == "operator"}
    assert operator_paths and operator_paths == {route.path for route in routes if is_operator_path(route.path)}
    public, operator = bodies(deployed).values()
    assert not [path for path in public["paths"] if is_operator_path(path) or path.startswith("/_local")]
    assert set(operator["paths"]) == operator_paths
    scheme = operator["securityDefinitions"]["sigv4"]
    assert scheme == {"type": "apiKey", "name": "Authorization", "in": "header",
                      "x-amazon-apigateway-authtype": "awsSigv4"}  # AWS_IAM
    methods = list(integrations(operator))
    assert {name for _, name, _ in methods} >= {"post", "x-amazon-apigateway-any-method"}
    for path, name, method in methods:
        assert method["security"] == [{"sigv4": []}], (path, name)
    assert not [m for _, _, m in integrations(public) if "security" in m]
    # Its own permission to invoke the API function (its alias), from this API only.
    api_function = alias_of(deployed, lambda_function(deployed, "api_handler")[0])
    sources = {json.dumps(p["Properties"]["SourceArn"]) for p in of_type(deployed, "AWS::Lambda::Permission").values()
               if p["Properties"]["FunctionName"] == {"Ref": api_function}}
    assert any('"Ref": "RestAPI"' in s for s in sources) and any("${OperatorAPI}/*" in s for s in sources)
    assert deployed["OperatorAPI"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-operator"}
    outputs = template_of(packaged)["Outputs"]
    assert outputs["OperatorEndpointURL"]["Value"] == {
        "Fn::Sub": "https://${OperatorAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/"}


# -- what holds data -------------------------------------------------------------


def test_tables_and_the_user_pool_cannot_be_deleted_by_accident(deployed):
    tables = of_type(deployed, "AWS::DynamoDB::Table")
    assert {"BillingTable", "IdempotencyTable"} <= set(tables)
    for name, table in tables.items():
        assert table["Properties"]["DeletionProtectionEnabled"] is True, name
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain", name
    for name, pool in of_type(deployed, "AWS::Cognito::UserPool").items():
        assert pool["Properties"]["DeletionProtection"] == "ACTIVE", name
        assert pool["DeletionPolicy"] == pool["UpdateReplacePolicy"] == "Retain", name


# -- aliases and canaries ----------------------------------------------------------


def test_every_function_deploys_through_its_alias_watched_by_its_alarms(packaged, deployed):
    resources = template_of(packaged)["Resources"]
    kinds = app_functions(the_app())
    assert len(of_type(resources, "AWS::Serverless::Function")) == len(kinds)
    for name, kind in kinds.items():
        logical_id, _ = lambda_function(deployed, name)
        properties = resources[logical_id]["Properties"]
        assert properties["AutoPublishAlias"] == "live" and properties["AutoPublishAliasAllProperties"] is True
        expected = {"api": "Canary10Percent5Minutes", "sqs": "Linear10PercentEvery1Minute",
                    "dynamodb": "Linear10PercentEvery1Minute", "schedule": "AllAtOnce"}[kind]
        alarms = [f"{logical_id}ErrorsAlarm"] + (["ApiServerErrorsAlarm"] if kind == "api" else [])
        assert properties["DeploymentPreference"] == {"Type": expected, "Alarms": [{"Ref": a} for a in alarms]}, name
        # As CloudFormation runs it: a version, the alias on it, moved by CodeDeploy.
        alias_id = alias_of(deployed, logical_id)
        alias = deployed[alias_id]
        version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        assert deployed[version]["Type"] == "AWS::Lambda::Version"
        group_id = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
        group = deployed[group_id]["Properties"]
        assert group["AlarmConfiguration"] == {"Enabled": True, "Alarms": [{"Name": {"Ref": a}} for a in alarms]}
        assert expected in json.dumps(group["DeploymentConfigName"]), name
        assert group["ServiceRoleArn"] == {"Fn::GetAtt": ["CodeDeployServiceRole", "Arn"]}
        assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
        for alarm in alarms:
            assert deployed[alarm]["Type"] == "AWS::CloudWatch::Alarm"
    role = deployed["CodeDeployServiceRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": ["codedeploy.amazonaws.com"]}
    assert deployed["ServerlessDeploymentApplication"]["Type"] == "AWS::CodeDeploy::Application"


def test_the_api_and_every_trigger_invoke_the_alias(deployed):
    api_function, _ = lambda_function(deployed, "api_handler")
    alias = {"Ref": alias_of(deployed, api_function)}
    for api_id, body in bodies(deployed).items():
        assert f"{api_function}.Arn" not in json.dumps(body), api_id
        for path, name, method in integrations(body):
            uri = method["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            assert uri[0].endswith("/functions/${FunctionAlias}/invocations") and uri[1] == {"FunctionAlias": alias}
    for name, permission in of_type(deployed, "AWS::Lambda::Permission").items():
        target = permission["Properties"]["FunctionName"]["Ref"]
        assert deployed[target]["Type"] == "AWS::Lambda::Alias", name
    for name, mapping in of_type(deployed, "AWS::Lambda::EventSourceMapping").items():
        assert deployed[mapping["Properties"]["FunctionName"]["Ref"]]["Type"] == "AWS::Lambda::Alias", name
    for name, rule in of_type(deployed, "AWS::Events::Rule").items():
        for target in rule["Properties"].get("Targets", []):
            if "Ref" in target["Arn"]:
                assert deployed[target["Arn"]["Ref"]]["Type"] == "AWS::Lambda::Alias", name


def test_a_new_parameter_value_publishes_new_versions(packaged):
    """CloudFormation resolves parameters after SAM chose the versions: the
    deploy's digest of their values makes a changed one a new version."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    declared = template_of(packaged)["Parameters"]
    before = deploy.revision("k.zip", {"PublicBaseUrl": "https://placeholder.invalid"}, declared, {})
    after = deploy.revision("k.zip", {"PublicBaseUrl": "https://billing.example.com"}, declared,
                            {"PublicBaseUrl": "https://placeholder.invalid"})
    kept = deploy.revision("k.zip", {}, declared, {"PublicBaseUrl": "https://placeholder.invalid"})
    assert before != after and before == kept
    parameters = {"PublicBaseUrl": "https://billing.example.com", "AlertSender": "billing@example.com",
                  "SesIdentity": "example.com", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
                  "AWS::Partition": "aws", "AWS::StackName": "billing-dev"}

    def versions(revision: str) -> set[str]:
        template = deploy.with_code_at(template_of(packaged), "artifacts", "k.zip", revision)
        return set(of_type(transform(template, parameters, NoManagedPolicies())["Resources"], "AWS::Lambda::Version"))

    first, second = versions(before), versions(after)
    assert len(first) == len(app_functions(the_app())) and not first & second


# -- the deploy, against a stand-in CloudFormation ---------------------------------


class FakeClient:
    """A boto3 client that checks each call's parameters against the service's
    model, records it and answers from `answers` (a value or a callable)."""

    def __init__(self, service: str, answers: dict):
        self._model = botocore.session.get_session().get_service_model(service)
        self._names = {botocore.xform_name(name): name for name in self._model.operation_names}
        self.answers, self.calls = answers, []

    def __getattr__(self, method: str):
        if method not in self._names:
            raise AttributeError(method)

        def call(**kwargs):
            validate_parameters(kwargs, self._model.operation_model(self._names[method]).input_shape)
            self.calls.append((method, kwargs))
            answer = self.answers.get(method, {})
            return answer(**kwargs) if callable(answer) else answer
        return call

    def called(self, method: str) -> list[dict]:
        return [kwargs for name, kwargs in self.calls if name == method]


def not_found(**kwargs):
    raise ClientError({"Error": {"Code": "ValidationError", "Message": "Stack with id x does not exist"}},
                      "DescribeStacks")


class FakeCloudFormation(FakeClient):
    def __init__(self, status: str | None, changes: list[dict]):
        self.status = status
        super().__init__("cloudformation", {
            "describe_stacks": self._describe,
            "describe_change_set": {"Status": "CREATE_COMPLETE", "Changes": changes},
            "describe_stack_events": {"StackEvents": [{
                "StackId": "s", "EventId": "e", "StackName": "s", "LogicalResourceId": "ApiWebAcl",
                "Timestamp": "2025-01-01T00:00:00Z", "ResourceStatus": "CREATE_FAILED",
                "ResourceStatusReason": "WAF quota reached"}]},
            "execute_change_set": lambda **kw: self._set("UPDATE_COMPLETE" if self.status else "CREATE_COMPLETE"),
            "delete_stack": lambda **kw: self._set(None),
        })

    def _set(self, status):
        self.status = status
        return {}

    def _describe(self, **kwargs):
        if self.status is None:
            not_found()
        return {"Stacks": [{"StackName": kwargs["StackName"], "StackStatus": self.status,
                            "CreationTime": "2025-01-01T00:00:00Z",
                            "Parameters": [{"ParameterKey": "AlertSender", "ParameterValue": "billing@example.com"}],
                            "Outputs": [{"OutputKey": "EndpointURL", "OutputValue": "https://x/api/"}]}]}

    def get_waiter(self, name: str):
        fake = self

        class Waiter:
            def wait(self, **kwargs):
                fake.calls.append((f"wait:{name}", kwargs))
        return Waiter()


class FakeSession:
    region_name = "eu-west-1"

    def __init__(self, cfn: FakeCloudFormation, logging_role: str | None = "arn:aws:iam::1:role/logs"):
        def head_object(**kwargs):
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")

        self.clients = {
            "cloudformation": cfn,
            "s3": FakeClient("s3", {"head_object": head_object}),
            "apigateway": FakeClient("apigateway", {"get_account": {"cloudwatchRoleArn": logging_role} if logging_role
                                                    else {}}),
            "iam": FakeClient("iam", {"get_role": self._no_role, "create_role": {"Role": {
                "Path": "/", "RoleName": deploy.LOGGING_ROLE, "RoleId": "AROAEXAMPLE", "CreateDate": "2025-01-01",
                "Arn": f"arn:aws:iam::123456789012:role/{deploy.LOGGING_ROLE}"}}}),
        }
        self.clients["s3"].upload_file = lambda *args: self.clients["s3"].calls.append(("upload_file", args))

    @staticmethod
    def _no_role(**kwargs):
        raise ClientError({"Error": {"Code": "NoSuchEntity", "Message": "no role"}}, "GetRole")

    def client(self, service: str):
        return self.clients[service]


TABLE_REPLACED = {"Type": "Resource", "ResourceChange": {
    "Action": "Modify", "LogicalResourceId": "BillingTable", "ResourceType": "AWS::DynamoDB::Table",
    "Replacement": "True"}}
FUNCTION_CHANGED = {"Type": "Resource", "ResourceChange": {
    "Action": "Modify", "LogicalResourceId": "APIHandler", "ResourceType": "AWS::Lambda::Function",
    "Replacement": "False"}}


@pytest.fixture(scope="module")
def stage_dir(packaged, tmp_path_factory) -> Path:
    """A packaged stage as `make package` leaves it (a small zip stands in for the code)."""
    out = tmp_path_factory.mktemp("stage")
    (out / "template.yaml").write_text(yaml.safe_dump(template_of(packaged), sort_keys=False))
    with zipfile.ZipFile(out / "deployment.zip", "w") as archive:
        archive.writestr("app.py", "app = None\n")
    return out


def run_deploy(stage_dir: Path, cfn: FakeCloudFormation, *args: str, stage: str = "dev", **session) -> FakeSession:
    fake = FakeSession(cfn, **session)
    deploy.main(["--stage", stage, "--bucket", "artifacts", "--out", str(stage_dir), *args], session=fake)
    return fake


def denied(policy_body: str) -> set[str]:
    policy = json.loads(policy_body)
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert sorted(deny["Action"]) == ["Update:Delete", "Update:Replace"]
    return {resource.removeprefix("LogicalResourceId/") for resource in deny["Resource"]}


def test_the_deploy_refuses_a_change_set_that_replaces_a_table(stage_dir, capsys):
    cfn = FakeCloudFormation("UPDATE_COMPLETE", [FUNCTION_CHANGED, TABLE_REPLACED])
    with pytest.raises(SystemExit) as refused:
        run_deploy(stage_dir, cfn)
    assert refused.value.code not in (0, None)
    assert "BillingTable" in str(refused.value) and "--allow-replacement BillingTable" in str(refused.value)
    assert cfn.called("create_change_set") and not cfn.called("execute_change_set")
    assert not cfn.called("set_stack_policy")


def test_the_deploy_executes_a_replacement_it_is_allowed_under_the_stack_policy(stage_dir, packaged):
    cfn = FakeCloudFormation("UPDATE_COMPLETE", [FUNCTION_CHANGED, TABLE_REPLACED])
    run_deploy(stage_dir, cfn, "--allow-replacement", "BillingTable", "--parameter", "AlarmEmail=ops@example.com")
    names = [name for name, _ in cfn.calls]
    assert names.index("set_stack_policy") < names.index("execute_change_set") < names.index(
        "wait:stack_update_complete") < len(names) - 1 - names[::-1].index("set_stack_policy")
    during, after = [c["StackPolicyBody"] for c in cfn.called("set_stack_policy")]
    # Every resource that holds data, found by its type, is protected; the one allowed, for this update only.
    resources = template_of(packaged)["Resources"]
    holding = {k for k, v in resources.items() if v["Type"] in (
        "AWS::DynamoDB::Table", "AWS::Cognito::UserPool", "AWS::SQS::Queue", "AWS::Logs::LogGroup")}
    assert {"BillingTable", "IdempotencyTable", "StaffUserPool", "UsageQueue", "ApiAccessLogGroup"} <= holding
    assert denied(after) == set(deploy.stateful_resources(template_of(packaged))) >= holding
    assert denied(during) == denied(after) - {"BillingTable"}
    [change_set] = cfn.called("create_change_set")
    assert change_set["ChangeSetType"] == "UPDATE"
    assert {"ParameterKey": "AlarmEmail", "ParameterValue": "ops@example.com"} in change_set["Parameters"]
    assert {"ParameterKey": "AlertSender", "UsePreviousValue": True} in change_set["Parameters"]
    assert not cfn.called("update_termination_protection")  # dev


def test_a_prod_stack_is_created_then_protected(stage_dir):
    cfn = FakeCloudFormation(None, [{"Type": "Resource", "ResourceChange": {
        "Action": "Add", "LogicalResourceId": "BillingTable", "ResourceType": "AWS::DynamoDB::Table"}}])
    run_deploy(stage_dir, cfn, "--parameter", "PublicBaseUrl=https://billing.example.com", stage="prod")
    names = [name for name, _ in cfn.calls]
    assert cfn.called("create_change_set")[0]["ChangeSetType"] == "CREATE"
    assert names.index("wait:stack_create_complete") < names.index("set_stack_policy") < names.index(
        "update_termination_protection")
    assert cfn.called("update_termination_protection") == [
        {"StackName": "billing-prod", "EnableTerminationProtection": True}]
    assert "BillingTable" in denied(cfn.called("set_stack_policy")[0]["StackPolicyBody"])


def test_a_stack_whose_creation_failed_is_reported_or_deleted_first(stage_dir):
    cfn = FakeCloudFormation("ROLLBACK_COMPLETE", [])
    with pytest.raises(SystemExit, match="ROLLBACK_COMPLETE(.|\n)*--delete-failed-stack") as stopped:
        run_deploy(stage_dir, cfn)
    assert "WAF quota reached" in str(stopped.value)
    assert not cfn.called("create_change_set") and not cfn.called("delete_stack")

    cfn = FakeCloudFormation("ROLLBACK_COMPLETE", [])
    run_deploy(stage_dir, cfn, "--delete-failed-stack")
    names = [name for name, _ in cfn.calls]
    assert names.index("delete_stack") < names.index("wait:stack_delete_complete") < names.index("create_change_set")
    assert cfn.called("create_change_set")[0]["ChangeSetType"] == "CREATE"


def test_the_deploy_needs_api_gateway_logging_and_can_set_it_up(stage_dir):
    cfn = FakeCloudFormation(None, [])
    with pytest.raises(SystemExit, match="--set-up-api-gateway-logging"):
        run_deploy(stage_dir, cfn, logging_role=None)
    assert not cfn.calls
    fake = run_deploy(stage_dir, FakeCloudFormation(None, []), "--set-up-api-gateway-logging", logging_role=None)
    iam, apigateway = fake.clients["iam"], fake.clients["apigateway"]
    [created] = iam.called("create_role")
    assert json.loads(created["AssumeRolePolicyDocument"])["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"}
    assert iam.called("attach_role_policy")[0]["PolicyArn"].endswith(
        ":iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")
    assert apigateway.called("update_account") == [{"patchOperations": [{
        "op": "replace", "path": "/cloudwatchRoleArn",
        "value": f"arn:aws:iam::123456789012:role/{deploy.LOGGING_ROLE}"}]}]


def test_every_function_of_the_uploaded_template_gets_the_revision(stage_dir, packaged):
    cfn = FakeCloudFormation(None, [])
    fake = run_deploy(stage_dir, cfn)
    [put] = fake.clients["s3"].called("put_object")
    uploaded = yaml.safe_load(put["Body"])
    revisions = {r["Properties"]["AutoPublishCodeSha256"] for r in uploaded["Resources"].values()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert len(revisions) == 1 and re.fullmatch(r"[0-9a-f]{64}", revisions.pop())
    assert cfn.called("create_change_set")[0]["TemplateURL"].endswith(put["Key"])
