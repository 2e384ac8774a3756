"""GET /audit: the audit trail of one object, or a customer's timeline."""
from chalice import Blueprint

from chalicelib.api.http import Call, endpoint, listing
from chalicelib.services import audit

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/audit", response="AuditEntryList")
def audit_trail(call: Call):
    items, next_cursor = audit.trail(
        call.merchant_id, entity_id=call.query("entity_id"), customer_id=call.query("customer_id"),
        limit=call.limit(), cursor=call.query("cursor"),
    )
    return listing(items, next_cursor)
