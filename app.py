"""The billing backend's Lambda functions: wiring only, one line each."""
from chalice import Chalice

from chalicelib.api import health, merchants, middleware, offers
from chalicelib.config import settings

app = Chalice(app_name="billing")
middleware.register(app)

app.register_blueprint(health.blueprint)
app.register_blueprint(merchants.blueprint)
app.register_blueprint(offers.blueprint)

if settings().is_local:
    # The local stage's clock and outbox: never registered on a deployed stage.
    from chalicelib.api import local

    app.register_blueprint(local.blueprint)
