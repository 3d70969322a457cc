"""`ledgerhook tail <topic>`: print a topic's records; CloudEvents (ce_* headers) shown as events.

No consumer group: every partition is read from its beginning, or from its end with `--from-end`.
The default bootstrap is `ledgerhook dev`'s broker.
"""

import argparse
import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from gateway.settings import KafkaSettings, describe_errors

CONNECT_SECONDS = 10.0  # how long to try the broker before saying it cannot be reached
POSITION_SECONDS = 10.0  # how long the partitions' ends may take to read
# A following tail that has printed nothing for this long asks the broker for its topics, so a
# broker that went away is said (once), not mistaken for a quiet topic; and so is its return.
QUIET_SECONDS = 5.0


class TailError(Exception):
    """The topic cannot be read: one line saying why and what to do."""


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
    """Print records of `topic` (every partition, no consumer group); returns how many were printed.

    TailError when the broker cannot be reached or the topic does not exist.
    """
    # Imported here, as it is needed: a client command loads no server module when it starts.
    from gateway.runtime.kafka import connection_options

    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(**connection_options(settings), enable_auto_commit=False)
    try:
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                await consumer.start()
                topics = await consumer.topics()
        except (KafkaError, OSError, TimeoutError):
            raise TailError(
                f"cannot reach the broker at {bootstrap}; is ledgerhook dev running? (--bootstrap)"
            ) from None
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            existing = ", ".join(sorted(name for name in topics if not name.startswith("__"))) or "none"
            raise TailError(f"topic {topic!r} does not exist at {bootstrap}; its topics: {existing}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_end:
            await _seek_to_end(consumer, assigned)
            if follow:
                print(f"ledgerhook tail: waiting for new records on {topic} (Ctrl-C stops)", file=sys.stderr)
        else:
            await consumer.seek_to_beginning(*assigned)
        return await _print_records(consumer, follow=follow, limit=limit, out=out, bootstrap=bootstrap)
    except KafkaError as exc:
        raise TailError(f"lost the broker at {bootstrap} ({type(exc).__name__})") from None
    finally:
        await consumer.stop()


async def _seek_to_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    """Put every partition at its end, so only records produced from now on are read.

    A fetch response's high watermark is exact on every broker; ListOffsets alone is not (Tansu,
    the dev broker, answers it with the last record batch's base offset + 1, which would replay that
    batch), so the larger of both is the end.
    """
    listed = await consumer.end_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, listed[tp])
    deadline = time.monotonic() + POSITION_SECONDS
    while any(consumer.highwater(tp) is None for tp in partitions) and time.monotonic() < deadline:
        await consumer.getmany(*partitions, timeout_ms=200)  # records before the end: dropped
    for tp in partitions:
        consumer.seek(tp, max(listed[tp], consumer.highwater(tp) or 0))


async def _print_records(
    consumer: AIOKafkaConsumer, *, follow: bool, limit: int | None, out: TextIO, bootstrap: str
) -> int:
    printed = 0
    heard = time.monotonic()  # the last time the broker was known to answer
    lost = False
    while limit is None or printed < limit:
        batch = await consumer.getmany(timeout_ms=1000)
        if not batch and not follow:
            break  # caught up
        if batch or (follow and time.monotonic() - heard >= QUIET_SECONDS):
            answers = bool(batch) or await _answers(consumer)
            if answers:
                heard = time.monotonic()
            if answers == lost:  # a change: say it once
                lost = not answers
                said = "the broker answers again" if answers else "the broker stopped answering; still trying"
                print(f"ledgerhook tail: {said} at {bootstrap} (Ctrl-C stops)", file=sys.stderr, flush=True)
        for records in batch.values():
            for record in records:
                if limit is not None and printed >= limit:
                    return printed
                print(render(record), file=out, flush=True)
                printed += 1
    return printed


async def _answers(consumer: AIOKafkaConsumer) -> bool:
    """Whether the broker answers a metadata request within CONNECT_SECONDS."""
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            await consumer.topics()
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


def run_tail(args: argparse.Namespace) -> int:
    """Print records until Ctrl-C (exit 130, quietly), until caught up (`--no-follow`) or `--max` of
    them; one line and exit 1 when the broker or the topic is not there."""
    try:
        settings = KafkaSettings(**({"kafka_bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    except ValidationError as exc:
        print(f"ledgerhook tail: {describe_errors(exc)}", file=sys.stderr)
        return 2
    # The client's own retries and warnings would bury the one line that says what is wrong.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)
    try:
        asyncio.run(
            tail(settings, args.topic, follow=not args.no_follow, from_end=args.from_end, limit=args.max)
        )
    except TailError as exc:
        print(f"ledgerhook tail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # Ctrl-C, the usual way to stop following: quietly
    return 0
