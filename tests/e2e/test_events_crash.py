"""Events are never lost: on a stage of the module's own, the driver (the
stand-in for every Lambda consumer, the table stream's `change_feed`
included) is killed with SIGKILL, and a customer is created over HTTP
while it is dead. The write is committed and answered, and nothing is on
the bus: the writer publishes nothing, so nothing can be lost between its
write and a publish. The driver is started again: the event arrives on the
bus and at a merchant's webhook receiver. The driver is killed and started
once more, so that it reads the stream again from its start: the event
comes again on the bus with the same `event_id` (at least once), and the
receiver, keyed on that id, still has it once."""
from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from infra.local.stage import _signal_group
from tests.load import population as pop
from tests.e2e.test_webhooks import wait_for
from tests.webhook_receiver import Receiver


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    with pop.OwnStage(tmp_path_factory.mktemp("events-crash") / "stage") as own:
        yield own


class BusWatch:
    """A rule on the stage's bus sending every `source` billing event to a
    queue of the test's own."""

    def __init__(self, own):
        import boto3

        options = dict(endpoint_url=own.aws_endpoint, region_name="eu-west-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
        self.sqs = boto3.client("sqs", **options)
        events = boto3.client("events", **options)
        self.url = self.sqs.create_queue(QueueName="watched-domain-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="watch-billing-events", EventBusName="billing",
                        EventPattern=json.dumps({"source": ["billing"]}))
        events.put_targets(Rule="watch-billing-events", EventBusName="billing", Targets=[{"Id": "q", "Arn": arn}])
        self.seen: list[dict] = []

    def of(self, detail_type: str, customer_id: str) -> list[dict]:
        while messages := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [e["detail"] for e in self.seen
                if e["detail-type"] == detail_type and e["detail"]["customer"]["id"] == customer_id]


def kill_driver(own) -> None:
    driver = own.stage.process("driver")
    _signal_group(driver, signal.SIGKILL)
    driver.wait(timeout=30)


@pytest.mark.timeout(240)
def test_an_event_written_while_its_publisher_is_dead_arrives_once_per_id(own):
    operator = pop.Api(own.api_base, "local-admin-key")
    merchant, _ = pop.create_merchant(operator, "Labo Martin", "LM")
    bus = BusWatch(own)
    with Receiver() as receiver:
        endpoint = merchant.post("/webhook-endpoints", {"url": receiver.url, "events": ["customer.created"]})
        receiver.secret = endpoint["secret"]

        kill_driver(own)
        email = f"compta-{uuid.uuid4().hex[:8]}@labo-martin.fr"
        customer = merchant.post("/customers", {"name": "Labo Martin", "email": email, "country": "FR"})
        # The write is committed and answered; nothing has published its event.
        assert merchant.get(f"/customers/{customer['id']}")["email"] == email
        time.sleep(3)
        assert bus.of("customer.created", customer["id"]) == [] and receiver.received == []

        own.stage.restart("driver")
        wait_for(lambda: receiver.received)
        [event] = receiver.received
        assert event.verified and event.event["type"] == "customer.created"
        assert event.event["data"]["customer"]["id"] == customer["id"]
        event_id = event.event["id"]
        assert event_id.startswith("evt_")
        assert [e["event_id"] for e in bus.of("customer.created", customer["id"])] == [event_id]

        # Read from the stream's start again (a restarted reader): the same
        # event with the same id, which the webhook's delivery keeps once.
        own.stage.restart("driver")
        deliveries = f"/webhook-endpoints/{endpoint['id']}/deliveries"
        wait_for(lambda: merchant.get(deliveries)["data"])
        wait_for(lambda: len(bus.of("customer.created", customer["id"])) == 2)
        assert [e["event_id"] for e in bus.of("customer.created", customer["id"])] == [event_id, event_id]
        time.sleep(3)
        assert [e.event["id"] for e in receiver.received] == [event_id]
        [delivery] = merchant.get(deliveries)["data"]
        assert delivery["status"] == "succeeded" and len(delivery["attempts"]) == 1
