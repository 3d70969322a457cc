"""The proactive refresher: renews tokens before anyone has to wait for them, part of `ledgerhook worker`.

Each pass leases the grants whose `refresh_due_at` has come (`CredentialStore.claim_due`: any
number of replicas share the work without doing it twice) and refreshes each through
`TokenManager.refresh_grant`, the same locked path as a caller's refresh. Grants that need
reauthorization are never due; grants serving only paused connections wait until one is resumed.
When grants come due: `provider_auth.tokens.policy.due_at`; the rest in docs/tokens.md ("The
proactive refresher"). Once an hour it also prunes the audit trail past its retention.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter

from provider_auth.tokens.manager import TokenManager

__all__ = ["Refresher"]

log = logging.getLogger("ledgerhook.tokens.refresher")


class Refresher:
    """Runs refresh passes every `interval` seconds (with jitter) until stopped."""

    def __init__(
        self,
        manager: TokenManager,
        *,
        interval: float = 15.0,
        batch_size: int = 100,
        concurrency: int = 4,
        lease: float = 120.0,
        status_every: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.manager = manager
        self.interval = interval
        self.batch_size = batch_size
        # Each refresh holds a pooled database connection while the provider answers.
        self.concurrency = concurrency
        self.lease = lease
        self.status_every = status_every
        self._rng = rng or random.Random()
        self._last_status = float("-inf")

    async def run_once(self) -> Counter[str]:
        """Refresh everything due now; returns how many grants ended in each outcome."""
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(self.concurrency)

        async def refresh(grant_id: str) -> str:
            async with gate:
                return await self.manager.refresh_grant(grant_id)

        while True:
            claimed = await self.manager.store.claim_due(self.manager.clock(), self.batch_size, self.lease)
            if not claimed:
                break
            outcomes.update(await asyncio.gather(*(refresh(g) for g in claimed)))
            if len(claimed) < self.batch_size:
                break
        return outcomes

    async def sample_status(self) -> None:
        """Set the connections-by-credential-status gauge from the database."""
        gauge = self.manager.metrics.connections
        gauge.clear()
        for provider, status, count in await self.manager.store.status_counts():
            gauge.labels(provider, status).set(count)

    async def run(self, stop: asyncio.Event) -> None:
        """Passes until `stop` is set; errors are logged and the next pass tries again."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                outcomes = await self.run_once()
                if outcomes:
                    log.info("token refresh pass", extra={"outcomes": dict(outcomes)})
                await self._housekeeping()
            except Exception:
                log.exception("token refresh pass failed")
            pause = self.interval * self._rng.uniform(0.8, 1.2) - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, pause))

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_status >= self.status_every:
            self._last_status = now
            await self.sample_status()
