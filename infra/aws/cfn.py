"""What every step of the packager reads in a template: the types it
looks for, the defaults AWS applies, the functions chalice generated
(infra/aws/template.py completes them, infra/aws/operations.py adds their
operations; both import from here, not from each other)."""
from __future__ import annotations

from dataclasses import dataclass

FUNCTION = "AWS::Serverless::Function"
QUEUE = "AWS::SQS::Queue"
ALARM_TOPIC = "AlarmTopic"
# SQS's default when a queue does not set one.
DEFAULT_VISIBILITY_TIMEOUT = 30
# Lambda's default when a function does not set one.
DEFAULT_FUNCTION_TIMEOUT = 3


class TemplateError(ValueError):
    """The generated template cannot be completed: the message says what to change."""


@dataclass
class Function:
    logical_id: str
    name: str  # chalice's name: api_handler, or the handler's function name
    properties: dict


def function_name(properties: dict) -> str:
    """Chalice's name of a function from its handler: `app.app` is the API."""
    _, _, attribute = properties["Handler"].partition(".")
    return "api_handler" if attribute == "app" else attribute


def functions(template: dict) -> list[Function]:
    return [
        Function(logical_id, function_name(resource["Properties"]), resource["Properties"])
        for logical_id, resource in sorted(template["Resources"].items())
        if resource["Type"] == FUNCTION
    ]


def getatt_target(value) -> str | None:
    """`X` of `{"Fn::GetAtt": ["X", "Arn"]}` (or `"X.Arn"`), else None."""
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        return target.split(".")[0] if isinstance(target, str) else target[0]
    return None
