"""The gateway's Prometheus metrics, in a registry of the app's own (no process-global collectors)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """The gateway's metrics; one instance per process, exposed on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._bound: dict[str, ProviderMetrics] = {}
        self.requests = Counter(
            "ledgerhook_webhook_requests",
            "Webhook requests by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "ledgerhook_webhook_ack_seconds",
            "Time from request start to the stored acknowledgement.",
            ["provider"],
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "ledgerhook_webhook_signature_failures",
            "Deliveries refused for their signature.",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.body_bytes = Counter(
            "ledgerhook_webhook_body_bytes",
            "Bytes of webhook bodies read.",
            ["provider"],
            registry=self.registry,
        )
        # A plain count the gauge reads when scraped: a gauge's inc and dec take a lock each, twice
        # per webhook request.
        self.in_flight = 0
        Gauge(
            "ledgerhook_webhook_in_flight",
            "Webhook requests being handled now.",
            registry=self.registry,
        ).set_function(lambda: self.in_flight)

    def provider(self, label: str) -> "ProviderMetrics":
        """The children of one provider's labels, bound once (label lookups cost on every request)."""
        bound = self._bound.get(label)
        if bound is None:
            bound = self._bound[label] = ProviderMetrics(self, label)
        return bound


class ProviderMetrics:
    """One provider's bound metric children; outcome counters are bound on first use."""

    def __init__(self, metrics: Metrics, provider: str) -> None:
        self._metrics = metrics
        self._provider = provider
        self._outcomes: dict[str, Counter] = {}
        self.ack_seconds = metrics.ack_seconds.labels(provider)
        self.body_bytes = metrics.body_bytes.labels(provider)

    def outcome(self, outcome: str) -> None:
        """Count one request with its outcome."""
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._metrics.requests.labels(self._provider, outcome)
        counter.inc()

    def signature_failure(self, reason: str) -> None:
        """Count one refused signature with its reason."""
        self._metrics.signature_failures.labels(self._provider, reason).inc()
