"""`ledgerhook redrive`: feed quarantined deliveries back to the fan-out worker, through the admin API's
`POST /admin/v1/quarantine/redrive` (docs/admin-api.md), so it needs no database or Kafka settings."""

import argparse
import asyncio
import sys

from gateway.cli.admin_client import AdminError, admin_client

# The redrive reads the whole quarantine topic before it answers: give it longer than other calls.
REDRIVE_TIMEOUT_SECONDS = 120.0


def run_redrive(args: argparse.Namespace) -> int:
    """Redrive with the reason and delivery filters given; 1 when the admin API refused or failed."""
    try:
        result = asyncio.run(redrive(args.url, args.reason, args.delivery_id))
    except AdminError as exc:
        print(f"ledgerhook redrive: {exc.describe()}", file=sys.stderr)
        return 1
    print(f"redriven: {result['redriven']}, skipped: {result['skipped']}")
    return 0


async def redrive(url: str | None, reason: str | None, delivery_id: str | None) -> dict[str, int]:
    """The admin API's answer to one redrive."""
    async with admin_client(url, REDRIVE_TIMEOUT_SECONDS) as client:
        answer = await client.redrive(reason, delivery_id)
    return {"redriven": int(answer["redriven"]), "skipped": int(answer["skipped"])}
