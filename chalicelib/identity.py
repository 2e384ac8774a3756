"""Staff identities: the only module that talks to Amazon Cognito.

The console's staff sign in with an e-mail and a password that a Cognito
user pool holds (moto's Cognito on the local stage): this backend never
stores or compares a password. Each account carries the merchant it works
for (`custom:merchant_id`), so a sign-in finds its merchant without a
table-wide lookup; the role and the membership themselves live in the
billing table (store/staff.py), where removing a member ends their access
at once.

Cognito's errors become the domain's: a wrong password, an unknown e-mail
and a disabled account are one `AuthenticationError` (no oracle of which
e-mails have accounts); a password Cognito's policy refuses is an
`InvalidRequest` naming `password`.
"""
from __future__ import annotations

from chalicelib import aws
from chalicelib.config import settings
from chalicelib.domain.errors import AuthenticationError, Conflict, InvalidRequest

MERCHANT_ATTRIBUTE = "custom:merchant_id"
SIGN_IN_REFUSED = "the e-mail or the password is not right"


def _cognito():
    return aws.client("cognito-idp")


def _pool() -> str:
    pool = settings().staff_user_pool_id
    if not pool:
        raise RuntimeError("STAFF_USER_POOL_ID must be set for staff accounts")
    return pool


def create_account(email: str, merchant_id: str, password: str | None) -> None:
    """A staff account. With a password (the local stage and the tests) it
    is usable at once; without, Cognito e-mails an invitation with a
    temporary password."""
    cognito = _cognito()
    arguments = {
        "UserPoolId": _pool(),
        "Username": email,
        "UserAttributes": [
            {"Name": "email", "Value": email},
            {"Name": "email_verified", "Value": "true"},
            {"Name": MERCHANT_ATTRIBUTE, "Value": merchant_id},
        ],
        "DesiredDeliveryMediums": ["EMAIL"],
    }
    if password is not None:
        arguments["MessageAction"] = "SUPPRESS"
    try:
        cognito.admin_create_user(**arguments)
    except cognito.exceptions.UsernameExistsException:
        raise Conflict(f"{email} already has a staff account", code="user_exists") from None
    if password is not None:
        set_password(email, password)


def set_password(email: str, password: str) -> None:
    cognito = _cognito()
    try:
        cognito.admin_set_user_password(UserPoolId=_pool(), Username=email, Password=password, Permanent=True)
    except cognito.exceptions.InvalidPasswordException as error:
        raise InvalidRequest(_message(error, "the password does not meet the policy"), param="password") from None


def delete_account(email: str) -> None:
    cognito = _cognito()
    try:
        cognito.admin_delete_user(UserPoolId=_pool(), Username=email)
    except cognito.exceptions.UserNotFoundException:
        pass


def sign_in(email: str, password: str) -> str:
    """The merchant of the account whose password this is, or AuthenticationError."""
    cognito = _cognito()
    try:
        answer = cognito.admin_initiate_auth(
            UserPoolId=_pool(), ClientId=settings().staff_user_pool_client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH", AuthParameters={"USERNAME": email, "PASSWORD": password},
        )
    except (cognito.exceptions.NotAuthorizedException, cognito.exceptions.UserNotFoundException,
            cognito.exceptions.PasswordResetRequiredException, cognito.exceptions.UserNotConfirmedException):
        raise AuthenticationError(SIGN_IN_REFUSED, code="sign_in_refused") from None
    if "AuthenticationResult" not in answer:
        # A challenge (a temporary password to replace): the invitation's
        # link leads to the reset page, which sets a permanent one.
        raise AuthenticationError("set a new password first: use “Forgot your password?”",
                                  code="password_change_required")
    user = cognito.admin_get_user(UserPoolId=_pool(), Username=email)
    attributes = {item["Name"]: item["Value"] for item in user.get("UserAttributes", [])}
    merchant_id = attributes.get(MERCHANT_ATTRIBUTE)
    if not merchant_id:
        raise AuthenticationError(SIGN_IN_REFUSED, code="sign_in_refused")
    return merchant_id


def start_password_reset(email: str) -> None:
    """Cognito e-mails a code to the account's address. An unknown e-mail
    is answered the same way (no oracle of which e-mails have accounts)."""
    cognito = _cognito()
    try:
        cognito.forgot_password(ClientId=settings().staff_user_pool_client_id, Username=email)
    except (cognito.exceptions.UserNotFoundException, cognito.exceptions.InvalidParameterException,
            cognito.exceptions.NotAuthorizedException):
        pass


def finish_password_reset(email: str, code: str, password: str) -> None:
    cognito = _cognito()
    try:
        cognito.confirm_forgot_password(ClientId=settings().staff_user_pool_client_id, Username=email,
                                        ConfirmationCode=code, Password=password)
    except cognito.exceptions.InvalidPasswordException as error:
        raise InvalidRequest(_message(error, "the password does not meet the policy"), param="password") from None
    except (cognito.exceptions.CodeMismatchException, cognito.exceptions.ExpiredCodeException,
            cognito.exceptions.UserNotFoundException):
        raise InvalidRequest("this code is not right or has expired; ask for a new one", param="code") from None


def _message(error: Exception, default: str) -> str:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Message") or default
