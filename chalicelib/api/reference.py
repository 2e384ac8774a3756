"""`GET /openapi.json` and `GET /docs`: the API's OpenAPI document and a
browsable reference page, both public and built from the same route table.

The page is rendered here from the document, with no script and nothing
loaded from elsewhere (no CDN): it works offline, behind a strict CSP, and
says exactly what the document says."""
from __future__ import annotations

import functools
import json
import secrets

from chalice import Blueprint, Response

from chalicelib.api.http import Call, endpoint, to_json

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/openapi.json", auth="public", response="OpenApiDocument")
def openapi_document(call: Call):
    """The OpenAPI 3.1 document of this API"""
    return Response(body=_document_text(), status_code=200,
                    headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=300"})


@endpoint(blueprint, "/docs", auth="public", response="text/html")
def reference_page(call: Call):
    """The API reference as a web page"""
    nonce = secrets.token_urlsafe(16)
    body = _page(json.loads(_document_text()), nonce)
    return Response(
        body=body,
        status_code=200,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; "
                                       "form-action 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@functools.lru_cache(maxsize=1)
def _document_text() -> str:
    from chalicelib.api.openapi import document

    return to_json(document(blueprint.current_app))


METHOD_ORDER = {"get": 0, "post": 1, "patch": 2, "put": 3, "delete": 4}


def _page(document: dict, nonce: str) -> str:
    schemas = document["components"]["schemas"]
    shared = document["components"].get("responses", {})
    tags: dict[str, list[dict]] = {}
    for path, methods in document["paths"].items():
        for method, operation in sorted(methods.items(), key=lambda item: METHOD_ORDER.get(item[0], 9)):
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            tags.setdefault(operation["tags"][0], []).append({
                "id": operation["operationId"],
                "method": method.upper(),
                "path": path,
                "summary": operation["summary"],
                "auth": _auth(operation["security"]),
                "parameters": operation.get("parameters", []),
                "body": _type(body) if body else None,
                "responses": [(status, answer["description"], _answer_type(answer))
                              for status, answer in _resolved(operation["responses"], shared)],
            })
    models = {name: _fields(schema) for name, schema in schemas.items()}
    template = _environment().from_string(PAGE)
    return template.render(info=document["info"], tags=tags, models=models, nonce=nonce)


def _resolved(responses: dict, shared: dict):
    for status, answer in responses.items():
        yield status, shared[answer["$ref"].rsplit("/", 1)[1]] if "$ref" in answer else answer


def _auth(security: list) -> str:
    if not security:
        return "public"
    return "operator key" if "operatorKey" in security[0] else "merchant key"


def _answer_type(answer: dict) -> str:
    content = answer.get("content", {})
    if "application/json" in content:
        return _type(content["application/json"]["schema"])
    return ", ".join(content) or ""


def _type(schema: dict) -> str:
    """A schema in one line: `Customer`, `list[Tier]`, `string (max 200)`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(option) for option in schema[key])
    kind = schema.get("type", "any")
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if kind == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map[{_type(schema['additionalProperties'])}]"
    limits = [f"{name} {schema[key]}" for key, name in (("minLength", "min"), ("maxLength", "max"),
                                                       ("minimum", "≥"), ("maximum", "≤"), ("maxItems", "max items"))
              if key in schema]
    if "pattern" in schema:
        limits.append(f"pattern {schema['pattern']}")
    return f"{kind} ({', '.join(limits)})" if limits else kind


def _fields(schema: dict) -> dict:
    required = set(schema.get("required", []))
    return {
        "description": schema.get("description", ""),
        "fields": [(name, _type(field), name in required, field.get("description", ""))
                   for name, field in schema.get("properties", {}).items()],
        "other": None if "properties" in schema else _type(schema),
    }


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ info.title }} {{ info.version }}</title>
<style nonce="{{ nonce }}">
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; display: flex; color: #1d1d1f; }
nav { width: 17rem; height: 100vh; overflow: auto; position: sticky; top: 0; padding: 1rem; background: #f5f5f7; box-sizing: border-box; }
nav a { display: block; color: inherit; text-decoration: none; font-size: 13px; padding: 1px 0; }
main { flex: 1; padding: 1rem 2rem 4rem; max-width: 60rem; }
section.op { border-top: 1px solid #ddd; padding: .5rem 0 1rem; }
.method { font: bold 12px monospace; padding: 2px 6px; border-radius: 3px; color: #fff; background: #555; }
.GET { background: #2b7a3d; } .POST { background: #1f5fa8; } .PATCH { background: #9a6700; } .DELETE { background: #b42318; }
code, .type { font-family: ui-monospace, monospace; font-size: 13px; }
table { border-collapse: collapse; margin: .3rem 0; } td, th { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
.auth { color: #666; font-size: 13px; }
</style>
</head>
<body>
<nav>
<strong>{{ info.title }}</strong> <small>{{ info.version }}</small>
<p><a href="/openapi.json">openapi.json</a></p>
{% for tag, operations in tags.items() %}
<p><strong>{{ tag }}</strong>
{% for op in operations %}<a href="#{{ op.id }}"><span class="type">{{ op.method }}</span> {{ op.path }}</a>{% endfor %}
</p>
{% endfor %}
<p><strong>schemas</strong>
{% for name in models %}<a href="#schema-{{ name }}">{{ name }}</a>{% endfor %}
</p>
</nav>
<main>
<h1>{{ info.title }}</h1>
<p>{{ info.description }}</p>
{% for tag, operations in tags.items() %}
<h2>{{ tag }}</h2>
{% for op in operations %}
<section class="op" id="{{ op.id }}">
<h3><span class="method {{ op.method }}">{{ op.method }}</span> <code>{{ op.path }}</code></h3>
<p>{{ op.summary }} <span class="auth">— {{ op.auth }}</span></p>
{% if op.parameters %}
<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code></td><td>{{ p.in }}</td><td class="type">{{ p.schema.type }}</td><td>{{ p.description or "" }}</td></tr>{% endfor %}
</table>
{% endif %}
{% if op.body %}<p>Body: <a class="type" href="#schema-{{ op.body }}">{{ op.body }}</a></p>{% endif %}
<table><tr><th>status</th><th>answer</th><th></th></tr>
{% for status, description, type in op.responses %}<tr><td>{{ status }}</td><td class="type">{{ type }}</td><td>{{ description }}</td></tr>{% endfor %}
</table>
</section>
{% endfor %}
{% endfor %}
<h2>Schemas</h2>
{% for name, model in models.items() %}
<section class="op" id="schema-{{ name }}">
<h3><code>{{ name }}</code></h3>
{% if model.description %}<p>{{ model.description }}</p>{% endif %}
{% if model.fields %}
<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>
{% for field, type, required, description in model.fields %}<tr><td><code>{{ field }}</code></td><td class="type">{{ type }}</td><td>{{ "yes" if required else "" }}</td><td>{{ description }}</td></tr>{% endfor %}
</table>
{% elif model.other %}<p class="type">{{ model.other }}</p>{% endif %}
</section>
{% endfor %}
</main>
</body>
</html>
"""
