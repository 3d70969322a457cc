"""Prometheus metrics of the token lifecycle, registered in a registry the caller owns."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["REFRESH_BUCKETS", "TokenMetrics"]

REFRESH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class TokenMetrics:
    """Refreshes by provider and outcome, refresh latency, and connections by credential status."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.refreshes = Counter(
            "ledgerhook_token_refreshes",
            "Token endpoint calls by provider and outcome (success, transient, lost, invalid_grant, "
            "invalid_client, unauthorized_client).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.refresh_seconds = Histogram(
            "ledgerhook_token_refresh_seconds",
            "Duration of token endpoint calls.",
            ["provider"],
            buckets=REFRESH_BUCKETS,
            registry=self.registry,
        )
        self.transitions = Counter(
            "ledgerhook_token_transitions",
            "Grant state changes by provider and new state (needs_reauth, unavailable, active), and "
            "refresh races detected (race).",
            ["provider", "state"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "ledgerhook_token_connections",
            "Connections with credentials, by provider and credential status (sampled by the refresher).",
            ["provider", "status"],
            registry=self.registry,
        )
