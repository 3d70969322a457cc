"""From a verified delivery or a polled page to normalized events on Kafka.

Imports `provider_auth` only; `gateway` wires it to the pool, the producer and the HTTP session.
How the pieces fit: docs/architecture.md.
"""
