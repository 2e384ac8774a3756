"""The Lambda functions of the chalice app, by chalice's names, and the
policy file each one has in .chalice/config.json."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHALICE_DIR = ROOT / ".chalice"

# Chalice's event source classes -> the trigger's kind.
_KINDS = {
    "SQSEventConfig": "sqs",
    "ScheduledEventConfig": "schedule",
    "CloudWatchEventConfig": "eventbridge",
    "SNSEventConfig": "sns",
    "S3EventConfig": "s3",
    "KinesisEventConfig": "kinesis",
    "DynamoDBEventConfig": "dynamodb",
}


def app_functions(app) -> dict[str, str]:
    """Every function `chalice package` makes of `app`: name -> trigger kind
    (`api` for the one function behind all routes, `lambda` for
    `@app.lambda_function`)."""
    found: dict[str, str] = {}
    if app.routes:
        found["api_handler"] = "api"
    for source in app.event_sources:
        found[source.name] = _KINDS[type(source).__name__]
    for function in app.pure_lambda_functions:
        found[function.name] = "lambda"
    return found


def event_source(app, name: str):
    """The chalice event source config of function `name`, or None."""
    return next((source for source in app.event_sources if source.name == name), None)


def chalice_config() -> dict:
    return json.loads((CHALICE_DIR / "config.json").read_text())


def policy_file(name: str, stage: str, config: dict | None = None) -> Path | None:
    """The policy file chalice gives function `name` on `stage` (its own
    `iam_policy_file`, looked up as chalice does), or None."""
    from chalice.config import Config

    chalice = Config(chalice_stage=stage, function_name=name, config_from_disk=config or chalice_config())
    return CHALICE_DIR / chalice.iam_policy_file if chalice.iam_policy_file else None


def missing_policies(app, stage: str) -> list[str]:
    """What to fix so that every function has a policy file of its own."""
    config = chalice_config()
    problems = []
    if config.get("autogen_policy", True) is not False:
        problems.append('.chalice/config.json must say "autogen_policy": false (chalice\'s policy misses DynamoDB)')
    for name in app_functions(app):
        path = policy_file(name, stage, config)
        if path is None:
            problems.append(
                f'{name} has no policy: add "{name}": {{"iam_policy_file": "policies/{name}.json"}} to '
                f'"lambda_functions" in .chalice/config.json and write .chalice/policies/{name}.json'
            )
        elif not path.exists():
            problems.append(f"{name}'s policy {path.relative_to(ROOT)} does not exist")
    return problems
