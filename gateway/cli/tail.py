"""`ledgerhook tail <topic>`: print a topic's records; CloudEvents (ce_* headers) shown as events."""

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from gateway.settings import KafkaSettings


def render(record: ConsumerRecord[bytes, bytes]) -> str:
    """A human-readable block for one record."""
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
    key = record.key.decode("utf-8", "replace") if record.key else ""
    lines = [f"--- {record.topic}[{record.partition}]@{record.offset} key={key}"]
    if "ce_type" in headers:
        lines.append(f"{headers.get('ce_type')}  {headers.get('ce_subject', '')}  id={headers.get('ce_id')}")
        for name in sorted(headers):
            if name.startswith("ce_") and name not in ("ce_type", "ce_subject", "ce_id"):
                lines.append(f"  {name.removeprefix('ce_')}: {headers[name]}")
    else:
        lines.extend(f"  {name}: {value}" for name, value in headers.items())
    lines.append(_pretty(record.value or b""))
    return "\n".join(lines)


def _pretty(value: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


async def tail(
    settings: KafkaSettings,
    topic: str,
    *,
    follow: bool = True,
    from_end: bool = False,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print records of `topic` (every partition, no consumer group); returns how many were printed."""
    # Imported here, as it is needed: a client command loads no server module when it starts.
    from gateway.runtime.kafka import connection_options

    consumer = AIOKafkaConsumer(
        **connection_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="latest" if from_end else "earliest",
    )
    await consumer.start()
    printed = 0
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # first look at a new topic
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            print(f"topic {topic!r} does not exist", file=sys.stderr)
            return 0
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_end:
            await consumer.seek_to_end(*assigned)
        else:
            await consumer.seek_to_beginning(*assigned)
        while limit is None or printed < limit:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and not follow:
                break
            for records in batch.values():
                for record in records:
                    print(render(record), file=out, flush=True)
                    printed += 1
        return printed
    finally:
        await consumer.stop()


def run_tail(args: argparse.Namespace) -> int:
    """Print records until Ctrl-C, until caught up (`--no-follow`) or `--max` of them; quietly."""
    settings = KafkaSettings(**({"kafka_bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(
            tail(settings, args.topic, follow=not args.no_follow, from_end=args.from_end, limit=args.max)
        )
    return 0
