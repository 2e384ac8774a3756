"""The console as staff use it, in Debian's Chromium driven by Playwright:
sign in through the form, go through pages, keep screenshots of what a
person saw (test-artifacts/console-*.png), in French or English."""
from __future__ import annotations

from tests.e2e.conftest import ARTIFACTS

TABLET = {"width": 820, "height": 1180}


class Staff:
    """One member of staff's browser tab on the local stage."""

    def __init__(self, chromium, base_url: str, *, lang: str = "fr", viewport: dict | None = None):
        self.base = base_url
        self.context = chromium.new_context(viewport=viewport or TABLET, locale=lang,
                                            extra_http_headers={"Accept-Language": lang})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def close(self) -> None:
        self.context.close()

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, email: str, password: str) -> None:
        self.goto("/console/login")
        self.page.fill('input[name="email"]', email)
        self.page.fill('input[name="password"]', password)
        with self.page.expect_navigation():
            self.page.locator('form[action="/console/login"] button[type="submit"]').click()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)

    @property
    def path(self) -> str:
        return self.page.url[len(self.base):]
