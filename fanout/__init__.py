"""From a verified delivery or a CDC page to normalized events on Kafka.

Imports `provider_auth` only; `gateway` wires it to the pool, the producer and the HTTP session.
"""
