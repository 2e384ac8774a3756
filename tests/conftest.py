"""Settings every test shares: fake AWS credentials (nothing reaches AWS),
one region, the test stage, a known operator key."""
import os

os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="eu-west-1",
    AWS_REGION="eu-west-1",
    STAGE="test",
    ADMIN_API_KEY="test-admin-key",
    TOKEN_SIGNING_KEY="test-token-signing-key",
    STRIPE_SECRET_KEY="sk_test_local",
    STRIPE_WEBHOOK_SECRET="whsec_test_local",
    STRIPE_PUBLISHABLE_KEY="pk_test_local",
    POWERTOOLS_SERVICE_NAME="billing",
    POWERTOOLS_METRICS_NAMESPACE="Billing",
    POWERTOOLS_LOG_LEVEL="WARNING",
)
