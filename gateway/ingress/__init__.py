"""Webhook ingress: the provider-facing endpoints, from request to raw log record."""
