"""Kafka clients built from settings: one producer per process, topic creation for `migrate`/`dev`."""

import random
import ssl
import zlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from gateway.settings import KafkaSettings, Settings

RAW_RETENTION_MS = 7 * 24 * 3600 * 1000  # the raw log is the replay source: keep at least 7 days


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Bootstrap, security and SASL options shared by every Kafka client Ledgerhook makes."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def crc32_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Same key, same partition, computed in C (aiokafka's murmur2 is pure Python and runs per record).

    Ledgerhook is the only producer of its topics, so nothing relies on the Java client's mapping.
    """
    if key is None:
        return random.choice(available or all_partitions)
    return partition_of(key, all_partitions)


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of `key` among a topic's sorted partition ids: the crc32 mapping, also used
    where the gateway batches records itself (gateway.ingress.rawlog)."""
    return partitions[zlib.crc32(key) % len(partitions)]


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The process's producer: acks from all in-sync replicas, idempotent unless switched off."""
    return AIOKafkaProducer(
        **connection_options(settings),
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=0,
        partitioner=crc32_partitioner,
        # aiokafka keeps one produce request in flight per broker; 16 KiB batches hold only a few
        # webhook bodies, so under load deliveries queue behind each other. Large batches let each
        # request carry everything that is waiting.
        max_batch_size=1_048_576,
        # A record the broker has not taken within the ack budget is failed by the client as well,
        # so a delivery answered 503 is rarely written later behind the provider's back.
        request_timeout_ms=max(1000, int(settings.ack_timeout_seconds * 1000)),
        max_request_size=max(1_048_576, settings.max_body_bytes + 65_536),
    )


async def ensure_topics(settings: Settings) -> list[str]:
    """Create Ledgerhook's topics where missing; returns the names it created."""
    wanted = {
        settings.topic_raw: {"retention.ms": str(RAW_RETENTION_MS)},
        settings.topic_changes: {},
        settings.topic_account_events: {},
        settings.topic_quarantine: {"retention.ms": str(RAW_RETENTION_MS * 4)},
    }
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created = []
        for name in missing:
            topic = NewTopic(
                name, settings.topic_partitions, settings.topic_replication_factor, topic_configs=wanted[name]
            )
            try:
                await admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it first
        return created
    finally:
        await admin.close()
