"""Process state shared by the server and the health endpoints."""

from dataclasses import dataclass


@dataclass
class Lifecycle:
    """Set `draining` once shutdown begins: `/readyz` then answers 503 so traffic moves away."""

    draining: bool = False
