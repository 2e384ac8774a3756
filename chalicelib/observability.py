"""Powertools Logger and Metrics, one instance each for the whole app."""
from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="billing")
metrics = Metrics(namespace="Billing", service="billing")
