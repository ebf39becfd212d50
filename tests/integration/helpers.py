"""Shared moves for integration tests: run the ingest loop, publish raw bytes, read a topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from psycopg import sql

from api.bootstrap import build_ingest, migrate, open_store
from api.web import create_app
from consumers.ingest import Ingest
from domain.principals import ADMIN
from domain.step_data import RunFinishedData
from domain.step_values import Actor
from domain.steps import PolicyDecided, RunFinished, StepEvent, decision_source
from infra.kafka import ensure_topics, producer
from infra.principals import Principals
from infra.rows import read_step_state
from infra.settings import Settings
from infra.store import RunStore
from schemas import Codec, encode_json


@contextmanager
def running_store(settings: Settings) -> Iterator[RunStore]:
    migrate(settings)  # as `up` does before its children start
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def ingest_for(settings: Settings, store: RunStore, **adapters: Any) -> Iterator[Ingest]:
    """The ingest loop as `receipts ingest` builds it; `adapters` replace its own."""
    ingest = build_ingest(settings, store, **adapters)
    try:
        yield ingest
    finally:
        ingest.close()


def poll_until(ingest: Ingest, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout}s; totals {ingest.totals}")
        ingest.poll_once(100)


def publish_raw(settings: Settings, messages: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    assert settings.kafka_bootstrap
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    client = producer(settings.kafka_bootstrap)
    for key, value in messages:
        client.send(settings.topic, key=key, value=value)
    client.flush()
    client.close()


def publish_steps(
    settings: Settings, steps: Iterable[StepEvent], encode: Callable[[StepEvent], bytes] = encode_json
) -> None:
    """Publish steps as a platform does, each keyed by its run (JSON unless `encode` says)."""
    publish_raw(settings, [(s.run_id.encode(), encode(s)) for s in steps])


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list[ConsumerRecord]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
    reader.assign(partitions)
    reader.seek_to_beginning(*partitions)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in reader.poll(200).values():
            records.extend(batch)
    # One more short poll: more than expected is a failure the caller should see.
    for batch in reader.poll(300).values():
        records.extend(batch)
    reader.close()
    return records


def stored_rows(settings: Settings) -> list[tuple[object, int, bytes]]:
    assert settings.database_url
    query = sql.SQL(
        "SELECT originator_id, originator_version, state FROM {}.receipts_events ORDER BY notification_id"
    ).format(sql.Identifier(settings.database_schema))
    with psycopg.connect(settings.database_url) as conn:
        return [(r[0], r[1], bytes(r[2])) for r in conn.execute(query).fetchall()]


def execute(settings: Settings, statement: str, *params: object) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        conn.execute(statement, params)  # type: ignore[arg-type]


def query(settings: Settings, statement: str, *params: object) -> list[tuple[Any, ...]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def published_rows(settings: Settings) -> list[tuple[object, int, bytes]]:
    """The stored rows less the service's policy decisions (one after each proposed or
    edited step): what tests about the published steps count."""
    codec = Codec()
    return [
        row
        for row in stored_rows(settings)
        if not (read_step_state(row[2]).step_type == "policy.decided" and _by_service(codec, row[2]))
    ]


def _by_service(codec: Codec, state: bytes) -> bool:
    step = codec.decode(read_step_state(state).wire)
    return isinstance(step, PolicyDecided) and decision_source(step) == "service"


def incidents(settings: Settings, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(subject, detail) of every recorded incident of `kind`."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f'SELECT subject, detail FROM "{settings.database_schema}".receipts_incidents WHERE kind = %s',
            (kind,),
        ).fetchall()
    return [(subject, detail) for subject, detail in rows]


def finished_step(run_id: str) -> StepEvent:
    """A valid step to publish by hand: the run's `run.finished`, its id derived from the run."""
    return RunFinished(
        type="run.finished",
        event_id=f"{run_id}-final",
        run_id=run_id,
        occurred_at=datetime.now(UTC),
        actor=Actor(kind="agent", id="bot"),
        data=RunFinishedData(final_state="abandoned"),
    )


def add_principal(
    settings: Settings, principal_id: str = "tester", tenant: str = "default", roles: Iterable[str] = (ADMIN,)
) -> str:
    """A principal in the migrated schema of `settings`; returns its token."""
    store = open_store(settings)
    try:
        return Principals(store.steps.datastore, settings.database_schema).add(
            principal_id, tenant, roles, "tests"
        )
    finally:
        store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def client_for(settings: Settings, token: str | None = None) -> Iterator[TestClient]:
    """The HTTP app as `serve` builds it, asking as an admin of tenant `default` (or `token`)."""
    token = token or add_principal(settings, f"client-{uuid4().hex[:8]}")
    with TestClient(create_app(settings), headers=bearer(token)) as client:
        yield client


def cli_env(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, token: str | None = None, **more: str
) -> None:
    """The CLI of `receipts` talking to `settings`' servers as an admin of `default` (or `token`)."""
    env = {
        "DATABASE_URL": str(settings.database_url),
        "KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "DATABASE_SCHEMA": settings.database_schema,
        "TOKEN": token or add_principal(settings, f"cli-{uuid4().hex[:8]}"),
        **more,
    }
    for name, value in env.items():
        monkeypatch.setenv(f"RECEIPTS_{name}", value)
