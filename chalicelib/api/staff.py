"""/merchant/users: the merchant's console staff (API.md, "Back office")."""
from __future__ import annotations

from typing import Literal

from chalice import Blueprint
from pydantic import BaseModel

from chalicelib.api.fields import STRICT, Email, Password
from chalicelib.api.http import Call, endpoint
from chalicelib.api.subscriptions import merchant_actor
from chalicelib.services import staff

blueprint = Blueprint(__name__)


class NewStaffUser(BaseModel):
    model_config = STRICT

    email: Email
    role: Literal["owner", "staff", "viewer"]
    # Only on the local stage; in AWS Cognito e-mails an invitation.
    password: Password | None = None


@endpoint(blueprint, "/merchant/users", methods=("POST",), status=201, response="StaffUser")
def add_user(call: Call):
    body = call.body(NewStaffUser)
    return staff.add_member(call.merchant_id, body.email, body.role, body.password, actor=merchant_actor(call))


@endpoint(blueprint, "/merchant/users", response="StaffUserList")
def list_users(call: Call):
    return {"data": staff.list_members(call.merchant_id), "has_more": False, "next_cursor": None}


@endpoint(blueprint, "/merchant/users/{email}", methods=("DELETE",), response="RemovedStaffUser")
def remove_user(call: Call, email: str):
    staff.remove_member(call.merchant_id, email)
    return {"email": staff.normalized_email(email), "deleted": True}
