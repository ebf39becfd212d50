"""kafka-python plumbing: client settings, topic creation, readiness."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from infra.settings import Settings


def require_crc32c() -> None:
    """kafka-python silently uses a pure-Python CRC without crc32c: 12x slower consume."""
    try:
        import crc32c  # noqa: F401
    except ImportError as error:  # pragma: no cover - a broken install
        raise RuntimeError("the crc32c package is missing; reinstall agent-receipts") from error


def admin(bootstrap: str, timeout: float = 15.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        except KafkaError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {bootstrap} did not answer: {error}") from error
            time.sleep(0.2)


def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    client = admin(bootstrap)
    try:
        existing = set(client.list_topics())
        wanted = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if wanted:
            # Another process may create them between list and create: that is fine.
            with suppress(TopicAlreadyExistsError):
                client.create_topics(wanted)
    finally:
        client.close()


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,  # keeps per-run order across retries
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    require_crc32c()
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": settings.group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_poll_records": settings.max_poll_records,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
    }
    config.update(overrides)
    return KafkaConsumer(**config)
