"""What the packaged template adds around the API and the functions for
production, derived from what `chalice package` generated (called by
`template.complete()`, after every function is wired):

- the public API (`RestAPI`): one stage only (`OpenApiVersion` set: without
  it SAM also deploys a stage named `Stage`, which neither the WAF, the
  throttling nor the access logs would cover), stage throttling
  (`ApiThrottlingRateLimit`, `ApiThrottlingBurstLimit`) and JSON access logs
  in `ApiAccessLogGroup`. The WAF web ACL and its association with the stage
  are static, in resources.yaml (`ApiWebAcl`);
- the operator routes (`/admin/...`) off the public API: their paths move to
  a second API, `OperatorAPI`, whose every method needs an AWS signature
  (`AWS_IAM`: the caller's IAM identity must be allowed `execute-api:Invoke`
  on it), integrated with the same function, with its own Lambda permission,
  throttling, access logs (`OperatorApiAccessLogGroup`, with the signer's
  ARN) and the `OperatorEndpointURL` output. The app's operator key check
  stays behind it;
- every function deployed through its alias `live` (`AutoPublishAlias`):
  each change publishes a version and CodeDeploy moves the alias to it by
  the function's `DeploymentPreference`, rolled back when one of its alarms
  goes off (its `<Function>ErrorsAlarm`; for the API function also
  `ApiServerErrorsAlarm`, the API's 5xx):
  - the API function: `Canary10Percent5Minutes` (a tenth of the requests
    for five minutes, then all);
  - SQS and stream consumers: `Linear10PercentEvery1Minute`: they see
    traffic all the time, so a bad version meets real messages within the
    first minute, on a tenth of them; a message it fails goes back to its
    queue (partial batch failures) and is retried, by either version;
  - scheduled functions (every 15 minutes to once a day) and anything else:
    `AllAtOnce`: a shifting window would end before the next run, so it
    would prove nothing and only delay the deploy. The deployment ends at
    once, so nothing rolls it back; their errors alarm still reports the
    next runs.
  The API integrations (chalice writes `${APIHandler.Arn}` in the OpenAPI
  body) and API Gateway's Lambda permissions name the alias, as SAM does for
  the event sources and schedules it generates; SAM adds the CodeDeploy
  application and its service role (`CodeDeployServiceRole`).
  `AutoPublishAliasAllProperties` publishes a version for any change of the
  function, not only of its code; a change of a stack parameter (resolved
  by CloudFormation after the transform) is made a new version by
  infra/aws/deploy.py (`AutoPublishCodeSha256`).
"""
from __future__ import annotations

import copy
import json
import re

FUNCTION = "AWS::Serverless::Function"
PUBLIC_API = "RestAPI"
OPERATOR_API = "OperatorAPI"
OPERATOR_PREFIX = "/admin"
STAGE_NAME = "api"
ALIAS = "live"
API_ERRORS_ALARM = "ApiServerErrorsAlarm"
# Chalice's body is Swagger 2.0; naming its version only keeps SAM from
# deploying the extra stage `Stage` (SAM leaves a Swagger body as it is).
OPENAPI_VERSION = "2.0"

THROTTLING = {
    PUBLIC_API: ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit"),
    OPERATOR_API: ("OperatorApiThrottlingRateLimit", "OperatorApiThrottlingBurstLimit"),
}
ACCESS_LOGS = {PUBLIC_API: "ApiAccessLogGroup", OPERATOR_API: "OperatorApiAccessLogGroup"}

# One JSON object a request ($context variables of API Gateway's access
# logs; "-" when a value does not apply). Nothing a client writes freely
# (user agent, headers) goes in: a quote there would break the JSON. `user`
# is the IAM identity that signed an operator request.
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "time": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "user": "$context.identity.userArn",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "resource": "$context.resourcePath",
    "status": "$context.status",
    "latency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "responseLength": "$context.responseLength",
    "errorType": "$context.error.responseType",
    "waf": "$context.wafResponseCode",
}, separators=(",", ":"))

# AWS_IAM in an OpenAPI body: API Gateway's SigV4 security scheme.
SIGV4 = "sigv4"
SIGV4_SCHEME = {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"}

# CodeDeploy's predefined Lambda deployment configurations, by trigger.
API_DEPLOYMENT = "Canary10Percent5Minutes"
STEADY_DEPLOYMENT = "Linear10PercentEvery1Minute"
OTHER_DEPLOYMENT = "AllAtOnce"
STEADY_EVENTS = {"SQS", "DynamoDB", "Kinesis"}

INTEGRATION = "x-amazon-apigateway-integration"
ALIAS_VARIABLE = "FunctionAlias"


class HardeningError(ValueError):
    """The template lacks what the hardening needs: the message says what."""


def harden(template: dict) -> None:
    """Apply every step of the module's docstring to `template`, in place."""
    resources = template["Resources"]
    functions = sorted(k for k, v in resources.items() if v["Type"] == FUNCTION)
    if PUBLIC_API in resources:
        _split_operator_routes(template)
        for api_id in (PUBLIC_API, OPERATOR_API):
            if api_id in resources:
                _stage_settings(resources, api_id)
                _integrations_to_aliases(resources[api_id]["Properties"]["DefinitionBody"], functions)
        _permissions_to_aliases(resources, functions)
    for logical_id in functions:
        _deploy_through_alias(resources, logical_id)


def is_operator_path(path: str) -> bool:
    return path == OPERATOR_PREFIX or path.startswith(OPERATOR_PREFIX + "/")


def _require(resources: dict, logical_id: str, kind: str) -> None:
    if resources.get(logical_id, {}).get("Type") != kind:
        raise HardeningError(f"infra/aws/resources.yaml must define the {kind} {logical_id}")


def _stage_settings(resources: dict, api_id: str) -> None:
    rate, burst = THROTTLING[api_id]
    log_group = ACCESS_LOGS[api_id]
    _require(resources, log_group, "AWS::Logs::LogGroup")
    properties = resources[api_id]["Properties"]
    properties["OpenApiVersion"] = OPENAPI_VERSION
    properties["MethodSettings"] = [{
        "ResourcePath": "/*", "HttpMethod": "*",
        "ThrottlingRateLimit": {"Ref": rate}, "ThrottlingBurstLimit": {"Ref": burst},
    }]
    properties["AccessLogSetting"] = {"DestinationArn": {"Fn::GetAtt": [log_group, "Arn"]}, "Format": ACCESS_LOG_FORMAT}


def _split_operator_routes(template: dict) -> None:
    """The /admin paths move from the public API's body to OperatorAPI's."""
    resources = template["Resources"]
    public = resources[PUBLIC_API]["Properties"]
    body = public["DefinitionBody"]
    paths = {path: body["paths"].pop(path) for path in sorted(body["paths"]) if is_operator_path(path)}
    if not paths:
        return
    for methods in paths.values():
        for method in methods.values():
            if isinstance(method, dict) and INTEGRATION in method:
                method["security"] = [{SIGV4: []}]
    # No gateway responses: on this API a request without a signature is
    # what MISSING_AUTHENTICATION_TOKEN means (API Gateway's 403).
    operator_body = {key: copy.deepcopy(value) for key, value in body.items()
                     if key not in ("paths", "x-amazon-apigateway-gateway-responses")}
    operator_body["info"] = {**operator_body.get("info", {}), "title": {"Fn::Sub": "${AWS::StackName}-operator"}}
    operator_body["securityDefinitions"] = {SIGV4: dict(SIGV4_SCHEME)}
    operator_body["paths"] = paths
    resources[OPERATOR_API] = {"Type": "AWS::Serverless::Api", "Properties": {
        "Name": {"Fn::Sub": "${AWS::StackName}-operator"},
        "StageName": public.get("StageName", STAGE_NAME),
        "EndpointConfiguration": public.get("EndpointConfiguration", "REGIONAL"),
        "DefinitionBody": operator_body,
    }}
    for permission in list(resources.values()):
        properties = permission.get("Properties", {})
        source = json.dumps(properties.get("SourceArn"))
        if (permission["Type"] == "AWS::Lambda::Permission" and properties.get("Principal") == "apigateway.amazonaws.com"
                and (json.dumps({"Ref": PUBLIC_API}) in source or "${%s}" % PUBLIC_API in source)):
            resources[f"{OPERATOR_API}InvokePermission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
                **copy.deepcopy(properties),
                "SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
                                         "${%s}/*" % OPERATOR_API},
            }}
            break
    else:
        raise HardeningError(f"no Lambda permission lets {PUBLIC_API} invoke the API function")
    stage = public.get("StageName", STAGE_NAME)
    outputs = template.setdefault("Outputs", {})
    outputs["OperatorEndpointURL"] = {
        "Description": "The operator API (/admin/...): AWS Signature Version 4, service execute-api (docs/deploy.md)",
        "Value": {"Fn::Sub": "https://${%s}.execute-api.${AWS::Region}.${AWS::URLSuffix}/%s/" % (OPERATOR_API, stage)},
    }
    outputs["OperatorAPIId"] = {"Value": {"Ref": OPERATOR_API}}


_ARN_IN_SUB = re.compile(r"\$\{(\w+)\.Arn\}")


def _integrations_to_aliases(body: dict, functions: list[str]) -> None:
    """`${APIHandler.Arn}` in an integration's URI becomes the ARN of its
    alias, `{"Ref": "APIHandler.Alias"}` (SAM's name for the alias `live`,
    whose Ref is its ARN), as a variable of the Sub: cfn-lint, which reads
    the template before SAM's transform, knows that Ref but not
    `${APIHandler.Alias}` in a Sub string."""
    for methods in body.get("paths", {}).values():
        for method in methods.values():
            integration = method.get(INTEGRATION) if isinstance(method, dict) else None
            uri = (integration or {}).get("uri")
            if not (isinstance(uri, dict) and isinstance(uri.get("Fn::Sub"), str)):
                continue
            targets = {m[1] for m in _ARN_IN_SUB.finditer(uri["Fn::Sub"])} & set(functions)
            if len(targets) == 1:
                target = targets.pop()
                uri["Fn::Sub"] = [uri["Fn::Sub"].replace("${%s.Arn}" % target, "${%s}" % ALIAS_VARIABLE),
                                  {ALIAS_VARIABLE: {"Ref": f"{target}.Alias"}}]


def _permissions_to_aliases(resources: dict, functions: list[str]) -> None:
    """API Gateway's permissions to invoke a function name its alias: a
    permission on the function alone does not cover a qualified ARN."""
    for resource in resources.values():
        properties = resource.get("Properties", {})
        target = properties.get("FunctionName")
        if (resource["Type"] == "AWS::Lambda::Permission" and properties.get("Principal") == "apigateway.amazonaws.com"
                and isinstance(target, dict) and target.get("Ref") in functions):
            properties["FunctionName"] = {"Ref": f"{target['Ref']}.Alias"}


def deployment_type(properties: dict) -> str:
    """The CodeDeploy configuration of a function (see the module's docstring)."""
    if properties.get("Handler", "").endswith(".app"):
        return API_DEPLOYMENT
    events = {event.get("Type") for event in properties.get("Events", {}).values()}
    return STEADY_DEPLOYMENT if events & STEADY_EVENTS else OTHER_DEPLOYMENT


def _deploy_through_alias(resources: dict, logical_id: str) -> None:
    properties = resources[logical_id]["Properties"]
    properties["AutoPublishAlias"] = ALIAS
    properties["AutoPublishAliasAllProperties"] = True
    alarms = [f"{logical_id}ErrorsAlarm"]
    kind = deployment_type(properties)
    if kind == API_DEPLOYMENT and API_ERRORS_ALARM in resources:
        alarms.append(API_ERRORS_ALARM)
    for alarm in alarms:
        _require(resources, alarm, "AWS::CloudWatch::Alarm")
    properties["DeploymentPreference"] = {"Type": kind, "Alarms": [{"Ref": alarm} for alarm in alarms]}
