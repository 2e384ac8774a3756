"""GET /health: public, for load balancers and the local stage's start-up wait."""
from chalice import Blueprint

from chalicelib.api.http import Call, endpoint
from chalicelib.config import settings

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/health", auth="public", response="Health")
def health(call: Call):
    return {"status": "ok", "stage": settings().stage, "version": settings().version}
