"""`ledgerhook redrive`: feed quarantined deliveries back to the fan-out worker, as the admin API's
`POST /admin/v1/quarantine/redrive` does (gateway.admin.quarantine)."""

import argparse
import asyncio
import sys

from aiokafka.errors import KafkaError

from fanout.quarantine import Reason
from gateway.admin.quarantine import redrive_once
from gateway.settings import load_settings


def run_redrive(args: argparse.Namespace) -> int:
    """Redrive with the reason and delivery filters given; 1 when the broker did not answer."""
    settings = load_settings()
    reason = Reason(args.reason) if args.reason else None
    try:
        result = asyncio.run(redrive_once(settings, reason, args.delivery_id))
    except (KafkaError, TimeoutError) as exc:
        print(f"ledgerhook redrive: the broker did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"redriven: {result.redriven}, skipped: {result.skipped}")
    return 0
