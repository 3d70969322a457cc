"""The overview page: connections by status, deliveries and events per minute, quarantine size by
reason, token refresh failures and poll watermark lag, with small charts over the last hours."""

from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.charts import bar_chart
from gateway.console.gate import Gate
from gateway.console.render import Templates
from gateway.console.services import ConsoleServices
from gateway.runtime.activity import (
    EVENTS_PUBLISHED,
    POLL_WATERMARK_LAG,
    RECORDS_QUARANTINED,
    TOKEN_REFRESH_FAILURES,
    WEBHOOK_DELIVERIES,
)
from provider_auth.accounts.store import ConnectionStatus

__all__ = ["Overview"]

HOURS = 3  # how far back the per-minute charts reach
CHARTS = (
    (WEBHOOK_DELIVERIES, "Deliveries per minute"),
    (EVENTS_PUBLISHED, "Events per minute"),
    (RECORDS_QUARANTINED, "Quarantined per minute"),
    (TOKEN_REFRESH_FAILURES, "Token refresh failures per minute"),
    (POLL_WATERMARK_LAG, "Poll watermark lag, seconds"),
)


@dataclass(frozen=True, slots=True)
class Chart:
    """A titled chart and its numbers."""

    title: str
    summary: float  # the total, or the peak of a gauge
    gauge: bool
    svg: str


class Overview:
    """`GET /console/`."""

    def __init__(self, services: ConsoleServices, gate: Gate, templates: Templates) -> None:
        self._services = services
        self._gate = gate
        self._templates = templates

    async def page(self, request: Request) -> Response:
        """The overview."""
        visitor = self._gate.visitor(request)
        services = self._services
        by_status: Counter[str] = Counter()
        for (_, status), count in (await services.store.status_counts()).items():
            by_status[status.value] += count
        statuses = [(status.value, by_status.get(status.value, 0)) for status in ConnectionStatus]
        charts = []
        for metric, title in CHARTS:
            # A gauge's minutes without a measure are None: drawn as no bar.
            values = [value or 0.0 for _, value in await services.activity.series(metric, HOURS)]
            gauge = metric == POLL_WATERMARK_LAG
            summary = max(values, default=0.0) if gauge else sum(values)
            charts.append(Chart(title, summary, gauge, bar_chart(values, title=title)))
        quarantine = await services.quarantine.counts()
        return self._templates.page(
            "overview.html",
            visitor=visitor,
            section="overview",
            statuses=statuses,
            total=sum(by_status.values()),
            charts=charts,
            hours=HOURS,
            quarantine=quarantine.by_reason,
            quarantine_complete=quarantine.complete,
            lags=await self._lags(),
        )

    async def _lags(self) -> list[dict[str, Any]]:
        """Per provider: accounts polled and the largest watermark lag among them, in seconds."""
        rows = await self._services.pool.fetch(
            "SELECT a.provider, count(DISTINCT a.provider_account_id) AS accounts,"
            " max(extract(epoch FROM now() - w.watermark)) AS lag, max(a.last_polled_at) AS last_poll"
            " FROM poll_accounts a LEFT JOIN poll_watermarks w"
            " ON w.provider = a.provider AND w.provider_account_id = a.provider_account_id"
            " WHERE a.enabled GROUP BY a.provider ORDER BY a.provider"
        )
        return [
            {
                "provider": row["provider"],
                "accounts": int(row["accounts"]),
                "lag_seconds": float(row["lag"]) if row["lag"] is not None else None,
                "last_poll": row["last_poll"],
            }
            for row in rows
        ]
