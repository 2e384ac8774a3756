"""Where a browser meets the services: the console's sessions, forms, CSRF
and the pages it answers, errors included.

A page is registered with `page()`, the web face's `endpoint()`: the view
gets a `Visit` (the request, the staff session, the language) and returns
`render(...)` or `redirect(...)`. The domain's errors become pages a person
reads: `404` for an unknown or another merchant's object, `403` for a role
that cannot act, a sign-in page for a session that ended. A form's
`InvalidRequest` is the view's to catch: it renders the form again with
the message beside the field its `param` names.

Forms name their fields by the API's paths (`components[1].unit_amount`),
so `fields()` rebuilds the API's JSON and an error's `param` is the name of
the input it belongs to.
"""
from __future__ import annotations

import functools
import re
import secrets
import uuid
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable
from urllib.parse import parse_qsl, quote

from chalice import Blueprint, Response

from chalicelib.api.http import Route
from chalicelib.config import settings
from chalicelib.domain.errors import AuthenticationError, BillingError, Forbidden, InvalidRequest, NotFound
from chalicelib.observability import logger

FORM = "application/x-www-form-urlencoded"
SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
LANGUAGE_COOKIE = "console_lang"
LANGUAGES = ("fr", "en")
MAX_FORM_BYTES = 64 * 1024


@dataclass
class Visit:
    """One request of the console as a view sees it."""

    request: Any
    request_id: str
    lang: str
    session: Any = None  # services.staff.StaffSession once signed in
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _form: list[tuple[str, str]] | None = None

    @property
    def merchant_id(self) -> str:
        return self.session.merchant_id

    @property
    def path(self) -> str:
        return page_path(self.request)

    def cookie(self, name: str) -> str | None:
        return cookies(self.request).get(name)

    def query(self, name: str, default: str | None = None) -> str | None:
        return (self.request.query_params or {}).get(name, default)

    def form_pairs(self) -> list[tuple[str, str]]:
        if self._form is None:
            raw = self.request.raw_body or b""
            if len(raw) > MAX_FORM_BYTES:
                raise InvalidRequest("this form is too large", code="body_too_large")
            try:
                self._form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=500)
            except (UnicodeDecodeError, ValueError):
                raise InvalidRequest("this form could not be read", code="invalid_form") from None
        return self._form

    def form(self, name: str, default: str = "") -> str:
        for key, value in self.form_pairs():
            if key == name:
                return value.strip()
        return default

    def form_list(self, name: str) -> list[str]:
        return [value.strip() for key, value in self.form_pairs() if key == name and value.strip()]

    def fields(self, *, skip: tuple[str, ...] = ("csrf_token",)) -> dict:
        """The form as the API's JSON: `a[0].b=x` -> {"a": [{"b": "x"}]};
        empty inputs are left out (an optional field not given)."""
        return unflatten([(k, v.strip()) for k, v in self.form_pairs() if k not in skip and v.strip()])


_STEP = re.compile(r"\[(\d{1,3})\]|\.?([A-Za-z_][A-Za-z0-9_]*)")
MAX_ROWS = 200


def _path(name: str) -> list[str | int] | None:
    """`components[1].tiers[0].up_to` -> ["components", 1, "tiers", 0, "up_to"]."""
    path, at = [], 0
    while at < len(name):
        match = _STEP.match(name, at)
        if match is None or match.end() == at or (at == 0 and name[0] == "."):
            return None
        path.append(int(match.group(1)) if match.group(1) is not None else match.group(2))
        at = match.end()
    if not path or not isinstance(path[0], str) or any(isinstance(p, int) and p >= MAX_ROWS for p in path):
        return None
    return path


def unflatten(pairs: list[tuple[str, str]]) -> dict:
    """Inputs named by API paths as one JSON object. A name that repeats
    without an index (`options=a&options=b`) is a list; rows left empty at
    the end of a list are dropped (rows before keep their index, so an
    error's `param` still names the input it is about)."""
    root: dict = {}
    counts: dict[str, int] = {}
    for name, _ in pairs:
        counts[name] = counts.get(name, 0) + 1
    for name, value in pairs:
        path = _path(name)
        if path is None:
            continue
        node: Any = root
        for step, following in zip(path, path[1:]):
            node = _child(node, step, [] if isinstance(following, int) else {})
            if node is None:
                break
        else:
            last = path[-1]
            if isinstance(last, str) and isinstance(node, dict):
                if counts[name] > 1:
                    node.setdefault(last, [])
                    if isinstance(node[last], list):
                        node[last].append(value)
                else:
                    node[last] = value
            elif isinstance(last, int) and isinstance(node, list):
                _extend(node, last)
                node[last] = value
    return _trim(root)


def _child(node, step, empty):
    if isinstance(step, str) and isinstance(node, dict):
        found = node.setdefault(step, empty)
    elif isinstance(step, int) and isinstance(node, list):
        _extend(node, step)
        if node[step] is None:
            node[step] = empty
        found = node[step]
    else:
        return None
    return found if type(found) is type(empty) else None


def _extend(rows: list, index: int) -> None:
    while len(rows) <= index:
        rows.append(None)


def _trim(value):
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items()}
    if isinstance(value, list):
        rows = [_trim(v) if v is not None else {} for v in value]
        while rows and rows[-1] in ({}, []):
            rows.pop()
        return rows
    return value


def cookies(request) -> dict[str, str]:
    header = (request.headers or {}).get("cookie", "")
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def cookie_header(name: str, value: str, *, max_age: int | None = None, path: str = "/console") -> str:
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if not settings().is_local:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def language(request) -> str:
    chosen = cookies(request).get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    header = (request.headers or {}).get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return "fr"


def redirect(location: str, *, headers: dict | None = None, cookies_to_set: list[str] | None = None) -> Response:
    answer_headers = {"Location": location, "Cache-Control": "no-store", **(headers or {})}
    if cookies_to_set:
        # chalice sends one header per name; API Gateway's multiValueHeaders
        # would be needed for two cookies, so a redirect sets at most one.
        answer_headers["Set-Cookie"] = cookies_to_set[0]
    return Response(body="", status_code=303, headers=answer_headers)


def page(blueprint: Blueprint, path: str, *, methods: tuple[str, ...] = ("GET",), auth: str = "staff",
         action: str | None = None, answers: str = "text/html") -> Callable:
    """Register `view(visit, **path_params)` as a console page.

    `auth` "staff" needs a session (else the sign-in page, coming back
    here after); "public" is for the sign-in and password pages. `action`
    is what a POST needs of the role ("serve", "manage"); every POST of a
    session checks its CSRF token. `answers` is the media type of the page's
    answer when it is a download (its errors are pages all the same)."""

    def register(view: Callable) -> Callable:
        @functools.wraps(view)
        def handle(**path_params: str) -> Response:
            from chalicelib.web import render

            request = blueprint.current_request
            request_id = (request.context or {}).get("requestId") or str(uuid.uuid4())
            logger.append_keys(request_id=request_id)
            visit = Visit(request=request, request_id=request_id, lang=language(request))
            try:
                if auth == "staff":
                    from chalicelib.services import staff

                    visit.session = staff.session_for(visit.cookie(SESSION_COOKIE))
                    if visit.session is None:
                        return redirect(f"/console/login?next={quote(_here(request), safe='/')}")
                    logger.append_keys(merchant_id=visit.session.merchant_id)
                    if request.method == "POST":
                        visit.session.check_csrf(visit.form("csrf_token"))
                        if action != "read":
                            visit.session.require(action or "serve")
                    return _as(visit, lambda: view(visit, **path_params))
                return view(visit, **path_params)
            except AuthenticationError:
                return redirect("/console/login")
            except (NotFound, Forbidden, InvalidRequest) as error:
                return render.error_page(visit, error)
            except BillingError as error:
                return render.error_page(visit, error)
            except Exception:
                logger.exception("console error", extra={"path": request.path, "method": request.method})
                return render.error_page(visit, None)

        content_types = [FORM] if "POST" in methods else None
        handle.routes = {method: Route(path, method, auth if auth == "public" else "staff", 200, view,
                                       answers, tuple(content_types or ["application/json"]))
                         for method in methods}
        blueprint.route(path, methods=list(methods), content_types=content_types or ["application/json"])(handle)
        return view

    return register


def _as(visit: Visit, run: Callable[[], Response]) -> Response:
    """Run a view with the staff member as the actor of its writes."""
    try:
        from chalicelib.actor import acting_as
    except ImportError:  # pragma: no cover - the audit trail is not installed
        return run()
    with acting_as(visit.session.actor):
        return run()


def page_path(request) -> str:
    """The path the browser asked for. chalice's `request.path` is the
    route's template (`/console/customers/{customer_id}`), as API Gateway's
    resource path is: the ids are put back from the path parameters."""
    params = request.uri_params or {}
    return re.sub(r"{(\w+)}", lambda m: quote(params.get(m.group(1), ""), safe=""), request.path)


def _here(request) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in (request.query_params or {}).items())
    return page_path(request) + (f"?{query}" if query else "")


def safe_next(target: str | None) -> str:
    """Where a sign-in goes on: a console path only (no open redirect)."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return "/console"
