"""/devices: attach a machine to a subscription, read its last readings."""
from __future__ import annotations

from typing import Annotated

from chalice import Blueprint
from pydantic import BaseModel, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint, json_response
from chalicelib.services import devices

blueprint = Blueprint(__name__)

# A device id is a level of its MQTT topic (billing/{merchant}/{device}/counters):
# no '/', '+' or '#'.
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class AttachDevice(BaseModel):
    model_config = STRICT

    device_id: DeviceId
    subscription_id: ObjectId


@endpoint(blueprint, "/devices", methods=("POST",), status=201, response="Device")
def attach_device(call: Call):
    body = call.body(AttachDevice)
    device, created = devices.attach_device(call.merchant_id, body.device_id, body.subscription_id)
    return device if created else json_response(200, device)


@endpoint(blueprint, "/devices/{device_id}", response="Device")
def get_device(call: Call, device_id: str):
    return devices.get_device(call.merchant_id, device_id)
