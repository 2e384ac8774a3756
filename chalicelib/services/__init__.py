"""Use cases: the domain, the store and the gateways (Stripe, SES, queues) put together."""
