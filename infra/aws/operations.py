"""What the packaged template adds for operating the functions and their
queues, derived from what `chalice package` generated (called by
`template.complete()`, once every function is wired), for every function
alike:

- active X-Ray tracing (`Tracing: Active`; chalice writes `PassThrough`,
  which a SAM `Globals` entry would not override): Lambda records a trace of
  every invocation (its start, initialization and run) and sends it itself.
  The functions' policy files grant `xray:PutTraceSegments` and
  `xray:PutTelemetryRecords`. The X-Ray SDK is not in the package (it does
  not fit its size budget, docs/deploy.md "Tracing"), so the AWS calls a
  function makes are not traced segment by segment;
- an alarm on its throttles (`<Function>ThrottlesAlarm`): an invocation
  Lambda refused for want of concurrency (the account's, or the
  function's);
- for a scheduled function, an alarm when it was not invoked within its
  schedule's period (`<Function>HeartbeatAlarm`: Invocations below one over
  that period; no data at all counts as a missed run). The period comes
  from the rule chalice generated, `rate(<n> <unit>)`: every scheduled job
  of app.py (chalicelib/jobs.py's `SCHEDULED_JOBS`) is watched without a
  line here;
- every SQS event source's queue must keep a message invisible for at least
  `VISIBILITY_FACTOR` times its function's timeout (Lambda's advice: room for
  the retries of a throttled batch before the message reappears);
- every queue encrypted (SSE-SQS where the template says nothing, e.g. the
  stream consumers' failure queues: `SqsManagedSseEnabled: false` fails),
  and a dead-letter queue keeping a message longer than its source queue
  does (a message's age counts from its first enqueue: a dead-letter queue
  no longer than its source would drop a message as it arrives).

A rule broken raises `TemplateError`, saying what to change.
"""
from __future__ import annotations

import re

from infra.aws.cfn import ALARM_TOPIC, DEFAULT_FUNCTION_TIMEOUT, QUEUE, Function, TemplateError, functions, getatt_target

TRACING = "Active"
VISIBILITY_FACTOR = 6
# SQS's retention when a queue does not set one (4 days).
DEFAULT_RETENTION = 345_600
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}
# CloudWatch: a period is a whole number of minutes, and one period of an
# alarm evaluated once may span 7 days at most.
MAX_ALARM_PERIOD = 604_800


def complete(template: dict) -> None:
    """Apply every step of the module's docstring to `template`, in place."""
    resources = template["Resources"]
    for function in functions(template):
        function.properties["Tracing"] = TRACING
        resources[f"{function.logical_id}ThrottlesAlarm"] = _throttles_alarm(function)
        schedules = []
        for event_id, event in sorted(function.properties.get("Events", {}).items()):
            if event["Type"] == "SQS":
                _check_visibility(function, event["Properties"], resources)
            elif event["Type"] == "Schedule":
                schedules.append(schedule_seconds(event["Properties"].get("Schedule"), function.name))
        if schedules:
            resources[f"{function.logical_id}HeartbeatAlarm"] = _heartbeat_alarm(function, max(schedules))
    for queue_id, queue in sorted(resources.items()):
        if queue["Type"] == QUEUE:
            _encrypt(queue_id, queue.setdefault("Properties", {}))
    for queue_id, queue in sorted(resources.items()):
        if queue["Type"] == QUEUE:
            _check_retention(queue_id, queue["Properties"], resources)


def schedule_seconds(expression, function_name: str) -> int:
    """The period of a `rate(...)` schedule, in seconds."""
    match = _RATE.fullmatch(expression or "")
    if match is None:
        raise TemplateError(
            f"{function_name}: its schedule {expression!r} is not a rate(...): the heartbeat alarm needs the "
            "longest time between two runs (infra/aws/operations.py)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]
    if seconds > MAX_ALARM_PERIOD:
        raise TemplateError(f"{function_name} runs every {seconds} s: a CloudWatch alarm period spans 7 days at most")
    return seconds


def _check_visibility(function: Function, event: dict, resources: dict) -> None:
    queue_id = getatt_target(event["Queue"])
    visibility = int(resources[queue_id]["Properties"].get("VisibilityTimeout", 30))
    timeout = int(function.properties.get("Timeout", DEFAULT_FUNCTION_TIMEOUT))
    if visibility < VISIBILITY_FACTOR * timeout:
        raise TemplateError(
            f"{queue_id}'s VisibilityTimeout ({visibility} s) must be at least {VISIBILITY_FACTOR} times "
            f"{function.name}'s timeout ({timeout} s): {VISIBILITY_FACTOR * timeout} s in infra/aws/resources.yaml "
            "(Lambda retries a throttled batch within it)")


def _encrypt(queue_id: str, properties: dict) -> None:
    if properties.get("SqsManagedSseEnabled") is False:
        raise TemplateError(f"{queue_id}: every queue is encrypted; remove SqsManagedSseEnabled: false")
    if "KmsMasterKeyId" not in properties:
        properties["SqsManagedSseEnabled"] = True


def _check_retention(queue_id: str, properties: dict, resources: dict) -> None:
    target = getatt_target((properties.get("RedrivePolicy") or {}).get("deadLetterTargetArn"))
    if target is None:
        return
    kept = int(properties.get("MessageRetentionPeriod", DEFAULT_RETENTION))
    kept_after = int(resources[target].get("Properties", {}).get("MessageRetentionPeriod", DEFAULT_RETENTION))
    if kept_after <= kept:
        raise TemplateError(
            f"{target} keeps a message {kept_after} s, {queue_id} {kept} s: a dead-letter queue must keep its "
            "messages longer than its source (their age counts from their first enqueue)")


def _alarm(description: str, function: Function, metric: str, comparison: str, period: int,
           missing: str) -> dict:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": "AWS/Lambda",
            "MetricName": metric,
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function.logical_id}}],
            "Statistic": "Sum",
            "Period": period,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": comparison,
            "TreatMissingData": missing,
            "AlarmActions": [{"Ref": ALARM_TOPIC}],
            "OKActions": [{"Ref": ALARM_TOPIC}],
        },
    }


def _throttles_alarm(function: Function) -> dict:
    return _alarm(
        f"{function.name} was throttled (no concurrency left, the account's or its own): its events wait "
        "or are retried; see the account's ConcurrentExecutions",
        function, "Throttles", "GreaterThanOrEqualToThreshold", 300, "notBreaching")


def _heartbeat_alarm(function: Function, period: int) -> dict:
    return _alarm(
        f"{function.name} did not run in {period // 60} minutes, its schedule's period: its EventBridge rule "
        "is disabled or gone, or Lambda cannot invoke it; read its log group",
        function, "Invocations", "LessThanThreshold", period, "breaching")
