"""The connections-by-status gauge of the worker: `ledgerhook_connections{provider,status}`, sampled
from the connections table by one grouped count every minute.

Every provider and status has a series, 0 when it has no connection, so a status that empties
reads 0 rather than vanishing. Each worker replica samples the same table: dashboards take the
`max` per namespace (docs/operations.md, "Dashboard and alerts").
"""

import asyncio
import contextlib
import logging
from datetime import timedelta
from itertools import product

from prometheus_client import CollectorRegistry, Gauge

from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider

log = logging.getLogger("ledgerhook.worker.connections")

SAMPLE_INTERVAL = timedelta(minutes=1)


class ConnectionStatusSampler:
    """Periodic task: set the gauge from `ConnectionStore.status_counts` now, then every interval,
    until `stop` is set."""

    def __init__(
        self,
        store: ConnectionStore,
        registry: CollectorRegistry,
        interval: timedelta = SAMPLE_INTERVAL,
    ) -> None:
        self._store = store
        self._interval = interval.total_seconds()
        self.gauge = Gauge(
            "ledgerhook_connections",
            "Connections by provider and status (active, paused, needs_reauth, disconnected), "
            "sampled from the database by each worker.",
            ["provider", "status"],
            registry=registry,
        )

    async def sample(self) -> None:
        """Count the connections by provider and status and set every series, absent pairs to 0."""
        counts = await self._store.status_counts()
        for provider, status in product(Provider, ConnectionStatus):
            self.gauge.labels(provider.value, status.value).set(counts.get((provider, status), 0))

    async def run(self, stop: asyncio.Event) -> None:
        """Sample now, then every interval; a failed sample is logged and the gauge keeps its last
        values until the next one succeeds."""
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # best effort: the next round tries again
                log.warning("connection status sample failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
