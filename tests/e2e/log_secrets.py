"""What must never reach a log line: card numbers, merchants' API keys and
webhook signing secrets, and
the stage's own secrets (Stripe's secret key and webhook secret, the
operator key, the token signing key). The e2e session scans every log its
local stage wrote (tests/e2e/conftest.py) once its tests are done."""
from __future__ import annotations

import re
from pathlib import Path

from infra.local.stage import ADMIN_API_KEY, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, TOKEN_SIGNING_KEY

# A merchant's API key: "sk_" and 43 URL-safe characters (services/merchants.py).
MERCHANT_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
# A webhook endpoint's signing secret: "whsec_" and 43 URL-safe characters (services/webhooks.py).
WEBHOOK_SECRET = re.compile(r"(?<![A-Za-z0-9_-])whsec_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
# A card number: 15 or 16 digits, alone or grouped by spaces or dashes. Only
# the cards anyone can type on a local stage are looked for: Stripe's test
# cards (localstripe takes no other). A wider net, any Luhn-valid number,
# catches the fuzzer's random path parameters in logged request lines.
CARD = re.compile(r"(?<![\d.])(?:\d[ -]?){14,15}\d(?![\d.])")
TEST_CARDS = frozenset((
    "4242424242424242", "4000056655665556", "5555555555554444", "2223003122003222", "5200828282828210",
    "378282246310005", "371449635398431", "6011111111111117", "4000000000000002", "4000000000009995",
    "4000000000000341", "4000002760003184", "4000002500003155", "4000000000003220",
))
STAGE_SECRETS = (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, ADMIN_API_KEY, TOKEN_SIGNING_KEY)


def luhn(digits: str) -> bool:
    total = 0
    for i, digit in enumerate(reversed(digits)):
        n = int(digit)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def secrets_in(text: str) -> list[str]:
    """Each secret found in `text`, as `what: the start of it` (never the whole)."""
    found = [f"{name}: {match.group()[:6]}…" for name, pattern in (("merchant API key", MERCHANT_KEY),
                                                                        ("webhook secret", WEBHOOK_SECRET))
             for match in pattern.finditer(text)]
    for match in CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if digits in TEST_CARDS:
            found.append(f"card number: {digits[:4]}…")
    found += [f"stage secret: {secret[:4]}…" for secret in STAGE_SECRETS if secret in text]
    return found


def scan(directory: Path) -> dict[str, list[str]]:
    """log file name -> the secrets in it, for every `*.log` under `directory`."""
    leaks = {}
    for log in sorted(directory.glob("*.log")):
        found = secrets_in(log.read_text(errors="replace"))
        if found:
            leaks[log.name] = sorted(set(found))
    return leaks
