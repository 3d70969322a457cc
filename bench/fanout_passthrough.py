"""The fan-out benchmark's baseline: copy the raw topic to another topic, nothing else.

The same aiokafka client settings as the fan-out worker (fanout.pipeline.FanoutWorker.run and
gateway.runtime.kafka.make_producer): a consumer group with manual commits starting from the earliest offset,
the worker's batch size and session timeout, the process's acks=all producer; a polled batch is
produced, every acknowledgement awaited, then its offsets committed. No parsing, routing, dedupe or
PostgreSQL: what the worker costs on top of this is what it does with the records.

Run by bench/fanout.py as `python -m bench.fanout_passthrough --to TOPIC`, configured by the same
`LEDGERHOOK_*` variables as `ledgerhook worker`; stops on SIGTERM after the batch in progress.
"""

import argparse
import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from fanout.dedupe import wait_for_acks  # noqa: E402
from fanout.pipeline import FETCH_MAX_WAIT_MS, POLL_TIMEOUT_MS  # noqa: E402
from gateway.runtime.kafka import connection_options, make_producer  # noqa: E402
from gateway.runtime.loops import run_event_loop  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402


async def copy(settings: Settings, to_topic: str, group_id: str, stop: asyncio.Event) -> int:
    """Copy raw records to `to_topic` until `stop` is set; returns how many were copied."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.worker_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.worker_session_timeout_ms // 3),
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    consumer.subscribe([settings.topic_raw])
    producer = make_producer(settings)
    await producer.start()
    await consumer.start()
    copied = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=settings.worker_batch_size)
            if not batch:
                continue
            pending = [
                await producer.send(to_topic, record.value, key=record.key, headers=list(record.headers))
                for records in batch.values()
                for record in records
            ]
            await wait_for_acks(pending)  # acknowledged before the offsets move, as in the worker
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
            copied += len(pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return copied


def main() -> int:
    """Copy until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--to", required=True, help="topic to copy the raw records to")
    parser.add_argument("--group", default="ledgerhook-bench-passthrough", help="consumer group")
    args = parser.parse_args()
    settings = load_settings()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await copy(settings, args.to, args.group, stop)

    run_event_loop(run())  # the loop `ledgerhook worker` runs on
    return 0


if __name__ == "__main__":
    sys.exit(main())
