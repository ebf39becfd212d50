"""The bad day: brokers restarted, topics recreated, PostgreSQL crashing, values
too large or conflicting. Nothing published is lost, nothing is doubled, and
every handled failure is recorded."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer

from api.bootstrap import build_publisher
from infra.kafka import ensure_topics
from infra.settings import Settings
from infra.store import RunStore
from schemas import encode_json
from tests.integration.faults import RestartablePostgres, restartable_broker
from tests.integration.helpers import (
    finished_step,
    incidents,
    ingest_for,
    poll_until,
    publish_raw,
    published_rows,
    running_store,
)
from tests.integration.processes import IngestProcess

pytestmark = pytest.mark.integration


def _publish(settings: Settings, runs: int, steps: int, prefix: str) -> int:
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}))
    for n in range(runs):
        with publisher.run("crm-notes", run_id=f"{prefix}-{n}") as run:
            for i in range(steps):
                run.propose("write_note", {"system": "crm", "kind": "note", "id": f"{n}-{i}"}, "crm.note")
            run.finish("sent")
    publisher.close()
    return publisher.published


def _event_ids(settings: Settings) -> list[str]:
    from infra.rows import read_step_state

    return [read_step_state(state).event_id for _, _, state in published_rows(settings)]


def test_what_is_published_after_a_broker_restart_is_recorded(settings: Settings, tmp_path: Path) -> None:
    """`receipts up` restarted: the embedded broker starts empty, below every stored position."""
    with restartable_broker(tmp_path) as broker:
        settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        before = _publish(settings, runs=12, steps=4, prefix="before")
        with running_store(settings) as store:
            with ingest_for(settings, store) as ingest:
                poll_until(ingest, lambda: ingest.totals.recorded >= before)
            broker.restart()
            after = _publish(settings, runs=3, steps=2, prefix="after")  # fewer: every offset is below
            with ingest_for(settings, store) as ingest:
                poll_until(ingest, lambda: ingest.totals.recorded >= after)
                assert ingest.totals.resets >= 1
    ids = _event_ids(settings)
    assert len(ids) == len(set(ids)) == before + after
    resets = incidents(settings, "position_reset")
    assert resets and all("restarted" in detail["reason"] for _, detail in resets)


def test_a_broker_restarted_under_a_running_consumer_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """The new log grows past the stored positions before the consumer looks: only
    the anchor check can tell it is another log."""
    with restartable_broker(tmp_path) as broker:
        settings = settings.model_copy(
            update={"kafka_bootstrap": broker.bootstrap, "position_check_seconds": 1.0}
        )
        before = _publish(settings, runs=4, steps=2, prefix="before")
        with running_store(settings) as store, ingest_for(settings, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= before)
            broker.restart()
            after = _publish(
                settings, runs=30, steps=3, prefix="after"
            )  # more: the log outgrows the positions
            poll_until(ingest, lambda: ingest.totals.recorded >= before + after, timeout=60)
            ingest.poll_once(500)
    ids = _event_ids(settings)
    assert len(ids) == len(set(ids)) == before + after
    assert incidents(settings, "position_reset")


def test_a_recreated_topic_is_read_from_its_start(settings: Settings) -> None:
    from kafka import KafkaAdminClient

    assert settings.kafka_bootstrap
    before = _publish(settings, runs=8, steps=3, prefix="before")
    with running_store(settings) as store:
        with ingest_for(settings, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= before)
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        admin.delete_topics([settings.topic])
        admin.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                ensure_topics(settings.kafka_bootstrap, [settings.topic], settings.partitions)
                after = _publish(settings, runs=2, steps=1, prefix="after")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with ingest_for(settings, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= after)
    ids = _event_ids(settings)
    assert len(ids) == len(set(ids)) == before + after


def test_a_dead_letter_too_large_for_the_dlq_is_kept_in_postgres_and_its_partition_moves_on(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap and settings.database_url
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    big = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    big.send(settings.topic, key=b"same-run", value=b"x" * (2 * 1024 * 1024)).get(timeout=30)
    big.close()
    after = _publish(settings, runs=1, steps=2, prefix="same-run")  # keyed "same-run-0": anywhere
    publish_raw(settings, [(b"same-run", encode_json(finished_step("same-run")))])  # the same partition
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= after + 1 and ingest.totals.dead >= 1)
        poll_until(ingest, lambda: bool(incidents(settings, "dead_letter_kept")))
    with psycopg.connect(settings.database_url) as conn:
        (length, kept, published) = conn.execute(
            f"SELECT length(value), kept, published_at FROM "
            f'"{settings.database_schema}".receipts_dead_letters'
        ).fetchone() or (0, None, None)
    assert length == 2 * 1024 * 1024 and published is None
    assert kept and "too large" in kept


def test_a_conflicting_duplicate_is_flagged_and_kept_and_a_re_encoding_is_not(settings: Settings) -> None:
    from schemas import Codec

    _publish(settings, runs=1, steps=1, prefix="run")
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 3)
        proposal = store.run("default", "run-0").entries[1].step
        forged = proposal.model_copy(update={"actor": proposal.actor.model_copy(update={"id": "mallory"})})
        publish_raw(
            settings,
            [
                (b"run-0", Codec().encode_avro(proposal)),  # the same step, other bytes: a duplicate
                (b"run-0", encode_json(forged)),  # same id, other content: a conflict
                (b"run-0", encode_json(forged)),  # the same conflict again: flagged once
                (b"not-run-0", encode_json(finished_step("run-0"))),  # keyed by something else
                (b"run-0", encode_json(finished_step("run-0").model_copy(update={"tenant": "acme"}))),
            ],
        )
        poll_until(ingest, lambda: ingest.totals.dead >= 2 and ingest.totals.recorded >= 5)
        receipt = _receipt(store, "run-0")
        other = store.run("acme", "run-0").receipt()
    assert [x.code for x in other.findings if x.code == "tenant_changed"] == ["tenant_changed"]
    codes = [finding.code for finding in receipt.findings]
    assert codes.count("conflicting_duplicate") == 1 and codes.count("key_mismatch") == 1
    (conflict,) = [x for x in receipt.findings if x.code == "conflicting_duplicate"]
    assert proposal.event_id in conflict.event_ids
    (step,) = receipt.steps
    assert step.proposed_by and step.proposed_by.id != "mallory"  # the first version stands
    assert receipt.integrity.verified


def _receipt(store: RunStore, run_id: str) -> Any:
    return store.run("default", run_id).receipt()


@pytest.mark.timeout(240)
def test_postgres_crashing_mid_ingest_loses_and_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    postgres = RestartablePostgres(tmp_path / "pg")
    url = postgres.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{settings.database_schema}"')
        settings = settings.model_copy(update={"database_url": url})
        published = _publish(settings, runs=200, steps=5, prefix="run")
        consumer = IngestProcess(settings, max_poll_records=20)
        consumer.wait_for("resumed ")
        deadline = time.monotonic() + 30
        while len(published_rows(settings)) < published // 5:
            assert time.monotonic() < deadline, consumer.lines[-20:]
            time.sleep(0.05)
        postgres.crash()
        time.sleep(2)  # the consumer meets a dead server for a while
        postgres.start_again()
        deadline = time.monotonic() + 120
        while len(published_rows(settings)) < published:
            assert consumer.process.poll() is None, consumer.lines[-30:]
            assert time.monotonic() < deadline, (
                len(published_rows(settings)),
                published,
                consumer.lines[-30:],
            )
            time.sleep(0.2)
        assert consumer.stop(signal.SIGTERM) == 0
        ids = _event_ids(settings)
        assert len(ids) == len(set(ids)) == published
        with running_store(settings) as store:
            for n in range(200):
                assert store.verify("default", f"run-{n}").verified
    finally:
        postgres.stop()
