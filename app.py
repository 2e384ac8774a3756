"""The billing backend's Lambda functions: wiring only, one line each."""
import gc

# A cold start builds tens of thousands of long-lived objects (modules,
# classes, models): the cyclic collector would scan them again and again
# while they are made. It waits until the import is done, and then leaves
# them out of every later collection (gc.freeze at the end of this module).
gc.disable()

from chalice import Chalice

from chalicelib.api import health, merchants, middleware, offers
from chalicelib.api import payment_page, stripe_webhook
from chalicelib.api import customers, subscriptions
from chalicelib.api import devices, usage
from chalicelib.api import invoices, credit_notes
from chalicelib.api import reports
from chalicelib.api import reference
from chalicelib.api import audit
from chalicelib.api import staff
from chalicelib.api import payees
from chalicelib.api import webhook_endpoints
from chalicelib.web import console_auth, console_home
from chalicelib.web import console_customers, console_customer_page
from chalicelib.web import console_offers, console_reports, console_settings
from chalicelib.web import console_billing, console_invoices
from chalicelib.web import console_payees
from chalicelib.api import checkout
from chalicelib.web import checkout_page, portal_pages
from chalicelib import jobs
from chalicelib.config import settings

app = Chalice(app_name="billing")
middleware.register(app)

app.register_blueprint(health.blueprint)
app.register_blueprint(merchants.blueprint)
app.register_blueprint(payment_page.blueprint)
app.register_blueprint(stripe_webhook.blueprint)
app.register_blueprint(offers.blueprint)
app.register_blueprint(customers.blueprint)
app.register_blueprint(subscriptions.blueprint)
app.register_blueprint(devices.blueprint)
app.register_blueprint(usage.blueprint)
app.register_blueprint(invoices.blueprint)
app.register_blueprint(credit_notes.blueprint)
app.register_blueprint(reports.blueprint)
app.register_blueprint(reference.blueprint)
app.register_blueprint(audit.blueprint)
app.register_blueprint(staff.blueprint)
app.register_blueprint(payees.blueprint)
app.register_blueprint(webhook_endpoints.blueprint)
app.register_blueprint(console_auth.blueprint)
app.register_blueprint(console_home.blueprint)
app.register_blueprint(console_customers.blueprint)
app.register_blueprint(console_customer_page.blueprint)
app.register_blueprint(console_offers.blueprint)
app.register_blueprint(console_reports.blueprint)
app.register_blueprint(console_settings.blueprint)
app.register_blueprint(console_billing.blueprint)
app.register_blueprint(console_invoices.blueprint)
app.register_blueprint(console_payees.blueprint)
app.register_blueprint(checkout.blueprint)
app.register_blueprint(checkout_page.blueprint)
app.register_blueprint(portal_pages.blueprint)
# Invoice PDFs (GET /invoices/{id}/pdf) leave API Gateway as binary.
app.api.binary_types.append("application/pdf")
# The accounting export (GET /exports/invoices.csv), gzip-compressed.
app.api.binary_types.append("text/csv")
# The FEC file (GET /exports/fec.txt), gzip-compressed too.
app.api.binary_types.append("text/tab-separated-values")


# The billing table's stream: the monthly report aggregates (the packager
# points it at the BillingTable's stream; the ARN here names the table).
@app.on_dynamodb_record(stream_arn=jobs.BILLING_TABLE_STREAM, batch_size=100, starting_position="TRIM_HORIZON",
                        maximum_batching_window_in_seconds=1)
def report_feed(event):
    return jobs.report_feed(event.to_dict(), event.context)


# The same stream, read on its own: the audit trail's entries and the
# domain events of each change (the stream's second and last reader).
@app.on_dynamodb_record(stream_arn=jobs.BILLING_TABLE_STREAM, batch_size=100, starting_position="TRIM_HORIZON",
                        maximum_batching_window_in_seconds=1)
def change_feed(event):
    return jobs.change_feed(event.to_dict(), event.context)


@app.on_sqs_message(queue="UsageQueue", batch_size=100, maximum_batching_window_in_seconds=5)
def ingest_usage(event):
    return jobs.ingest_usage(event.to_dict(), event.context)


@app.schedule(jobs.scheduled_job("billing_scheduler").rate())
def billing_scheduler(event):
    return jobs.run_scheduled("billing_scheduler")


@app.schedule(jobs.scheduled_job("dunning_scheduler").rate())
def dunning_scheduler(event):
    return jobs.run_scheduled("dunning_scheduler")


@app.on_sqs_message(queue="BillingQueue", batch_size=1, maximum_concurrency=settings().billing_worker_concurrency)
def billing_worker(event):
    return jobs.billing_worker(event.to_dict(), event.context)


@app.schedule(jobs.scheduled_job("card_expiry_scan").rate())
def card_expiry_scan(event):
    return jobs.run_scheduled("card_expiry_scan")


@app.on_sqs_message(queue="NotificationsQueue", batch_size=10)
def send_notifications(event):
    return jobs.send_notifications(event.to_dict(), event.context)


# Finalized invoices and issued credit notes handed to the merchants'
# e-invoicing platforms (EInvoiceRule on the bus -> EInvoiceQueue).
@app.on_sqs_message(queue="EInvoiceQueue", batch_size=10)
def einvoice_drop(event):
    return jobs.einvoice_drop(event.to_dict(), event.context)


# Payees' commissions and royalties accrued from paid invoices and reversed
# by credit notes (CommissionRule on the bus -> CommissionQueue).
@app.on_sqs_message(queue="CommissionQueue", batch_size=10)
def commission_feed(event):
    return jobs.commission_feed(event.to_dict(), event.context)


@app.on_sqs_message(queue="MailFeedbackQueue", batch_size=10)
def mail_feedback(event):
    return jobs.mail_feedback(event.to_dict(), event.context)


# Merchant webhooks: every domain event (WebhookRule on the bus ->
# WebhookQueue) to the endpoints listening to it, and the attempts owed.
@app.on_sqs_message(queue="WebhookQueue", batch_size=5)
def webhook_dispatch(event):
    return jobs.webhook_dispatch(event.to_dict(), event.context)


@app.schedule(jobs.scheduled_job("webhook_scheduler").rate())
def webhook_scheduler(event):
    return jobs.run_scheduled("webhook_scheduler")


if settings().is_local:
    # The local stage's clock and outbox: never registered on a deployed stage.
    from chalicelib.api import local

    app.register_blueprint(local.blueprint)

# Everything built so far lives as long as the process: out of the
# collector's sight from now on, and the collector back on.
gc.freeze()
gc.enable()
