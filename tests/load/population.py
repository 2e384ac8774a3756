"""What the load and crash runs share: a client of the API that rides out a
stage process restarting, the merchants' population (customers with a card
saved through the payment page, subscriptions), and the check of what a
billing run left: one invoice per boundary, numbers without gap or repeat,
one charge at Stripe per invoice."""
from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import requests

ADMIN_KEY = "local-admin-key"
STRIPE_KEY = "sk_test_local"

OFFER = {
    "code": "clico-neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {"code": "calls", "type": "metered", "meter": "calls", "unit_amount": "0.50"},
    ],
}


class ApiError(RuntimeError):
    pass


@dataclass
class Latencies:
    """Answers of the API by kind of request: time taken and status."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float, status: int | str) -> None:
        with self.lock:
            self.seconds[kind].append(seconds)
            self.statuses[str(status)] += 1

    def figures(self) -> dict:
        every = [s for values in self.seconds.values() for s in values]
        return {
            "requests": len(every),
            "by_status": dict(sorted(self.statuses.items())),
            "p50_ms": round(1000 * percentile(every, 0.50), 1),
            "p99_ms": round(1000 * percentile(every, 0.99), 1),
            "by_kind": {kind: {"requests": len(values), "p50_ms": round(1000 * percentile(values, 0.5), 1),
                               "p99_ms": round(1000 * percentile(values, 0.99), 1)}
                        for kind, values in sorted(self.seconds.items())},
        }


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def median(values) -> float:
    return statistics.median(values) if values else 0.0


class Api:
    """The API with a key. A request that finds the API or what is behind it
    away (a refused connection, a 5xx, a 429) is sent again for up to
    `patience` seconds; a POST always carries an Idempotency-Key, so sending
    it again never does it twice."""

    def __init__(self, base: str, key: str | None, patience: float = 120, latencies: Latencies | None = None):
        self.base, self.key, self.patience, self.latencies = base, key, patience, latencies
        self.local = threading.local()
        self.retried = Counter()

    def as_key(self, key: str | None) -> "Api":
        return Api(self.base, key, self.patience, self.latencies)

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def call(self, method: str, path: str, body=None, params=None, idempotency_key: str | None = None,
             expect=(200, 201), kind: str | None = None, timeout: float = 60) -> dict:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or f"load-{time.time_ns()}-{threading.get_ident()}"
        deadline = time.monotonic() + self.patience
        while True:
            started = time.monotonic()
            try:
                answer = self.session().request(method, self.base + path, json=body, params=params,
                                                headers=headers, timeout=timeout)
                status = answer.status_code
            except requests.RequestException as error:
                answer, status = None, type(error).__name__
            if self.latencies is not None and kind:
                self.latencies.add(kind, time.monotonic() - started, status)
            if answer is not None and status in expect:
                return answer.json() if answer.content else {}
            retryable = answer is None or status >= 500 or status == 429
            if not retryable or time.monotonic() > deadline:
                text = answer.text[:500] if answer is not None else status
                raise ApiError(f"{method} {path}: {status} {text}")
            self.retried[str(status)] += 1
            time.sleep(0.5)

    def get(self, path, **kw) -> dict:
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw) -> dict:
        return self.call("POST", path, body if body is not None else {}, **kw)

    def every(self, path: str, params: dict | None = None) -> list[dict]:
        """Every item of a list, page by page."""
        items, cursor = [], None
        while True:
            page = self.get(path, params={**(params or {}), "limit": 100, **({"cursor": cursor} if cursor else {})})
            items += page["data"]
            if not page.get("has_more"):
                return items
            cursor = page["next_cursor"]


def console_sign_in(base: str, email: str, password: str) -> tuple[str, str]:
    """A console session as a browser opens one: (its cookie, its CSRF token)."""
    browser = requests.Session()
    page = browser.get(f"{base}/console/login", timeout=30)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    done = browser.post(f"{base}/console/login", data={"email": email, "password": password, "login_token": token},
                        allow_redirects=False, timeout=30)
    assert done.status_code == 303, done.text
    session = browser.cookies["console_session"]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(f"{base}/console", timeout=30).text).group(1)
    return session, csrf


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stage_now(operator: Api) -> datetime:
    return instant(operator.get("/_local/clock")["now"])


def move_clock(operator: Api, now: datetime, inline: bool = True, timeout: float = 3600) -> dict:
    body = {"now": now.isoformat().replace("+00:00", "Z"), "inline": inline}
    return operator.call("POST", "/_local/clock", body, idempotency_key=f"clock-{body['now']}-{inline}",
                         timeout=timeout)


def create_merchant(operator: Api, name: str, prefix: str) -> tuple[Api, dict]:
    merchant = operator.post("/admin/merchants", {
        "name": name, "default_currency": "EUR", "invoice_prefix": prefix, "tax_rates": {"FR": "20.0"},
        "alert_emails": ["ops@example.fr"], "timezone": "Europe/Paris", "locale": "fr",
    }, idempotency_key=f"merchant-{prefix}")
    return operator.as_key(merchant["api_key"]), merchant


def page_config(html: str) -> dict:
    marker = '<script type="application/json" id="pay-config">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start:html.index("</script>", start)])


def customer_with_card(merchant: Api, stripe_base: str, n: int) -> str:
    """A customer who saved a card on the payment page (its server side; the
    SetupIntent confirmed at localstripe as Stripe.js would)."""
    customer = merchant.post("/customers", {"name": f"Labo {n}", "email": f"labo{n}@example.fr", "country": "FR"},
                             idempotency_key=f"customer-{n}")
    link = merchant.post(f"/customers/{customer['id']}/payment-link", idempotency_key=f"link-{n}")
    token = link["url"].rsplit("/pay/", 1)[1]
    public = merchant.as_key(None)
    answer = public.session().get(f"{merchant.base}/pay/{token}", timeout=60)
    answer.raise_for_status()
    secret = page_config(answer.text)["clientSecret"]
    stripe = requests.Session()
    stripe.auth = (STRIPE_KEY, "")
    method = stripe.post(f"{stripe_base}/v1/payment_methods", timeout=30, data={
        "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12", "card[exp_year]": "2034",
        "card[cvc]": "123"}).json()
    setup_intent = secret.split("_secret_")[0]
    stripe.post(f"{stripe_base}/v1/setup_intents/{setup_intent}/confirm", timeout=30,
                data={"payment_method": method["id"]}).raise_for_status()
    public.post(f"/pay/{token}/complete", {"setup_intent": setup_intent}, idempotency_key=f"complete-{n}")
    return customer["id"]


def populate(merchant: Api, stripe_base: str, subscriptions: int, per_customer: int = 20,
             offer: dict | None = None, workers: int = 4) -> tuple[str, list[dict]]:
    """An offer, customers with a card (one for `per_customer`
    subscriptions) and `subscriptions` subscriptions, each with its first
    invoice issued and charged. Returns (offer id, subscriptions)."""
    offer_id = merchant.post("/offers", offer or OFFER, idempotency_key="offer")["id"]
    count = -(-subscriptions // per_customer)
    with ThreadPoolExecutor(workers) as pool:
        customers = list(pool.map(lambda n: customer_with_card(merchant, stripe_base, n), range(count)))
        subscribed = list(pool.map(
            lambda n: merchant.post("/subscriptions", {"customer_id": customers[n % count], "offer_id": offer_id},
                                    idempotency_key=f"subscription-{n}"),
            range(subscriptions)))
    return offer_id, subscribed


NUMBER = re.compile(r"^(?P<prefix>.*?)(?P<year>\d{4})-(?P<n>\d{6})$")


def stripe_payment_intents(stripe_base: str) -> list[dict]:
    """Every PaymentIntent localstripe holds."""
    session = requests.Session()
    session.auth = (STRIPE_KEY, "")
    intents, after = [], None
    while True:
        params = {"limit": 100, **({"starting_after": after} if after else {})}
        page = session.get(f"{stripe_base}/v1/payment_intents", params=params, timeout=60).json()
        intents += page["data"]
        if not page.get("has_more") or not page["data"]:
            return intents
        after = page["data"][-1]["id"]


def check_billing(merchant: Api, merchant_id: str, stripe_base: str, subscription_ids: list[str],
                  invoices_each: int) -> dict:
    """What the billing runs left, checked: `invoices_each` invoices for each
    subscription (one per boundary), none twice for one period, every number
    once in a gapless series per year, every invoice paid by exactly one
    succeeded PaymentIntent of its amount. Returns figures and `problems`."""
    invoices = merchant.every("/invoices")
    ours = set(subscription_ids)
    problems: list[str] = []
    by_subscription: dict[str, list[dict]] = defaultdict(list)
    for invoice in invoices:
        if invoice["subscription_id"] in ours:
            by_subscription[invoice["subscription_id"]].append(invoice)
    duplicates = 0
    for subscription_id in subscription_ids:
        mine = by_subscription.get(subscription_id, [])
        periods = Counter((i["period_start"], i.get("billing_reason")) for i in mine if i["status"] != "void")
        duplicates += sum(n - 1 for n in periods.values() if n > 1)
        if len(mine) != invoices_each:
            problems.append(f"{subscription_id}: {len(mine)} invoices, {invoices_each} expected")
    if duplicates:
        problems.append(f"{duplicates} duplicate invoices (two for one subscription and period)")

    numbers: dict[str, list[int]] = defaultdict(list)
    holders: dict[str, list[str]] = defaultdict(list)
    for invoice in invoices:
        if invoice.get("number"):
            match = NUMBER.match(invoice["number"])
            numbers[match["year"]].append(int(match["n"]))
            holders[invoice["number"]].append(
                f"{invoice['id']} ({invoice['subscription_id']}, {invoice.get('billing_reason')}, "
                f"{invoice['status']}, finalized {invoice.get('finalized_at')})")
    gaps = repeats = 0
    for year, ns in numbers.items():
        repeats += len(ns) - len(set(ns))
        gaps += len(set(range(1, max(ns) + 1)) - set(ns))
    if gaps or repeats:
        twice = {number: held for number, held in holders.items() if len(held) > 1}
        problems.append(f"invoice numbers: {gaps} missing, {repeats} repeated {twice}")

    succeeded: dict[str, list[dict]] = defaultdict(list)
    for intent in stripe_payment_intents(stripe_base):
        metadata = intent.get("metadata") or {}
        if metadata.get("merchant_id") == merchant_id and intent["status"] == "succeeded":
            succeeded[metadata.get("invoice_id")].append(intent)
    double_charges = sum(len(v) - 1 for v in succeeded.values() if len(v) > 1)
    if double_charges:
        problems.append(f"{double_charges} invoices charged more than once at Stripe")
    statuses = Counter(i["status"] for i in invoices)
    unpaid = 0
    for invoice in invoices:
        charges = succeeded.get(invoice["id"], [])
        due = _minor(invoice["total"])
        if invoice["status"] == "paid" and due > 0:
            if len(charges) != 1 or charges[0]["amount"] != due:
                problems.append(f"{invoice['id']} paid: {[c['amount'] for c in charges]} charged, {due} due")
        elif invoice["status"] != "paid":
            unpaid += 1
    if unpaid:
        problems.append(f"{unpaid} invoices not paid: {dict(statuses)}")
    return {
        "invoices": len(invoices), "by_status": dict(statuses), "duplicate_invoices": duplicates,
        "numbers": {year: len(ns) for year, ns in sorted(numbers.items())}, "number_gaps": gaps,
        "number_repeats": repeats, "succeeded_payment_intents": sum(len(v) for v in succeeded.values()),
        "double_charges": double_charges, "problems": problems,
    }


def _minor(amount: str) -> int:
    whole, _, cents = amount.partition(".")
    return int(whole) * 100 + int((cents + "00")[:2]) if not whole.startswith("-") else -_minor(amount[1:])


class OwnStage:
    """A local stage of this run's own, on free ports (beside `make run`),
    with its processes at hand (infra/local/stage.py's `Stage`): to kill,
    restart, stop and resume them."""

    def __init__(self, state_dir, keep_aws_state: bool = False):
        import shutil
        import socket

        from infra.local.stage import Stage

        def free_port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True)
        self.stage = Stage({name: free_port() for name in ("api", "moto", "stripe", "mqtt")}, state_dir,
                           keep_aws_state=keep_aws_state)
        ports = self.stage.ports
        self.api_base = f"http://127.0.0.1:{ports['api']}"
        self.stripe_base = f"http://127.0.0.1:{ports['stripe']}"
        self.aws_endpoint = f"http://127.0.0.1:{ports['moto']}"
        self.mqtt_port = ports["mqtt"]

    def __enter__(self) -> "OwnStage":
        try:
            self.stage.start()
        except BaseException:
            self.stage.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stage.stop()

    def sqs(self):
        import boto3

        return boto3.client("sqs", endpoint_url=self.aws_endpoint, region_name="eu-west-1",
                            aws_access_key_id="local", aws_secret_access_key="local")


def queue_depth(sqs, queue_name: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    attributes = attributes["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])
