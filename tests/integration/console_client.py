"""A browser's side of the console for integration tests: form posts,
cookies kept between requests, redirects seen (not followed)."""
from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode


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
