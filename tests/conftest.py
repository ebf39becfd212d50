"""Real components for the whole session: PostgreSQL and a Kafka-protocol broker.

Embedded by default; RECEIPTS_DATABASE_URL / RECEIPTS_KAFKA_BOOTSTRAP point the
suite at external servers. If a component cannot start the tests that need it
fail; they are never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.settings import Settings


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RECEIPTS_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("postgres")) / "data")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RECEIPTS_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_file=Path(tmp_path_factory.mktemp("tansu")) / "tansu.log")
    yield broker.start()
    broker.stop()


@pytest.fixture
def settings(database_url: str, kafka_bootstrap: str) -> Settings:
    """A fresh database schema, topic and consumer group for each test."""
    unique = uuid4().hex[:10]
    schema = f"t_{unique}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return Settings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        database_schema=schema,
        topic=f"steps-{unique}",
        group=f"ingest-{unique}",
        partitions=4,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session() -> Iterator[None]:
    yield
    from tests.integration.processes import IngestProcess

    for process in IngestProcess.started:
        if process.poll() is None:
            process.kill()
            process.wait(10)
