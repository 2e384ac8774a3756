"""A browser's side of the console for integration tests: form posts,
cookies kept between requests, redirects seen (not followed); the shop's
owner, the console tests' time, a member signed in with a role, the error
shown beside a field."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from html import unescape
from http.cookies import SimpleCookie
from urllib.parse import urlencode

OWNER = ("owner@optique-durand.fr", "Owner-pass-2026")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


class Browser:
    def __init__(self, client):
        self.client = client
        self.cookies: dict[str, str] = {}

    def _headers(self, extra: dict | None = None) -> dict:
        headers = {"Accept-Language": "fr", **(extra or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _keep(self, response):
        header = response.headers.get("Set-Cookie") or response.headers.get("set-cookie")
        if header:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(self, path: str, headers: dict | None = None):
        return self._keep(self.client.http.get(path, headers=self._headers(headers)))

    def post(self, path: str, fields: dict | list):
        body = urlencode(fields, doseq=True)
        return self._keep(self.client.http.post(
            path, headers=self._headers({"Content-Type": "application/x-www-form-urlencoded"}), body=body))

    @staticmethod
    def text(response) -> str:
        return response.body.decode() if isinstance(response.body, bytes) else response.body

    def hidden(self, response, name: str) -> str:
        match = re.search(rf'name="{name}" value="([^"]*)"', self.text(response))
        assert match, f"no hidden {name} in the page"
        return match.group(1)

    def sign_in(self, email: str, password: str):
        page = self.get("/console/login")
        return self.post("/console/login", {"email": email, "password": password,
                                            "login_token": self.hidden(page, "login_token"), "next": "/console"})

    def csrf(self) -> str:
        return self.hidden(self.get("/console"), "csrf_token")


def member(client, shop, role: str) -> Browser:
    email = f"{role}@optique-durand.fr"
    assert shop.post("/merchant/users", {"email": email, "role": role, "password": "Member-pass-2026"}).status == 201
    browser = Browser(client)
    assert browser.sign_in(email, "Member-pass-2026").status_code == 303
    return browser


def error_beside(browser, page, name: str) -> str | None:
    """The message shown beside the input `name` (the span its aria-describedby names)."""
    match = re.search(rf'<span class="field-error" id="e-{re.escape(name)}" role="alert">([^<]*)</span>',
                      browser.text(page))
    return unescape(match.group(1)) if match else None
