"""Redelivery, producer retries, stale caches and failed batches never double or lose a step."""

from __future__ import annotations

import psycopg
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from api.bootstrap import build_publisher
from domain.run import run_uuid
from domain.steps import StepEvent
from infra.kafka import producer
from infra.settings import Settings
from infra.store import RunStore
from schemas import Codec, encode_json
from tests.integration.helpers import (
    execute,
    ingest_for,
    poll_until,
    publish_raw,
    published_rows,
    read_topic,
    running_store,
    stored_rows,
)

pytestmark = pytest.mark.integration


def _publish_runs(
    settings: Settings, runs: int, steps: int, prefix: str = "run"
) -> list[tuple[bytes, bytes]]:
    """Publish runs through the real publisher; return (key, value) of every event sent."""
    assert settings.kafka_bootstrap
    recording = Recording(producer(settings.kafka_bootstrap))
    publisher = build_publisher(settings, producer_=recording)
    sent = recording.sent
    for n in range(runs):
        with publisher.run("lead-followup", run_id=f"{prefix}-{n}") as run:
            for i in range(steps):
                run.propose(
                    "send_email",
                    {"system": "crm", "kind": "contact", "id": f"c{i}"},
                    "gmail.send",
                    output=f"draft {n}/{i}",
                )
            run.finish("sent")
    publisher.close()
    return sent


def test_redelivered_and_retried_events_are_recorded_once(settings: Settings) -> None:
    sent = _publish_runs(settings, runs=5, steps=4)
    publish_raw(settings, sent)  # the whole stream again: a redelivery
    publish_raw(settings, sent[3:7])  # and a producer retry of a few
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded + ingest.totals.duplicates >= 2 * len(sent) + 4)
        receipts = [store.run("default", f"run-{n}").receipt() for n in range(5)]
    assert len(published_rows(settings)) == len(sent) == ingest.totals.recorded
    # The service's decision on each proposed step is recorded once too.
    assert len(stored_rows(settings)) - len(sent) == ingest.totals.decided == 5 * 4
    assert ingest.totals.duplicates == len(sent) + 4
    for receipt in receipts:
        # Six published steps and the service's decision on each of the four proposals.
        assert len(receipt.event_ids) == len(set(receipt.event_ids)) == 6 + 4
        assert receipt.integrity.verified


def test_a_restart_from_a_lost_position_writes_no_duplicate(settings: Settings) -> None:
    sent = _publish_runs(settings, runs=3, steps=3)
    with running_store(settings) as store:
        with ingest_for(settings, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= len(sent))
        # Lose every stored position: the next consumer re-reads the topic from the start.
        execute(settings, "DELETE FROM receipts_tracking WHERE application_name LIKE 'kafka:%%'")
        with ingest_for(settings.model_copy(update={"group": settings.group + "-b"}), store) as again:
            poll_until(again, lambda: again.totals.duplicates >= len(sent))
            assert again.totals.recorded == 0
    assert len(published_rows(settings)) == len(sent)


def test_a_new_consumer_resumes_from_stored_positions_not_kafka_offsets(settings: Settings) -> None:
    first = _publish_runs(settings, runs=2, steps=2)
    with running_store(settings) as store:
        with ingest_for(settings, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= len(first))
        # A new group has no Kafka offsets at all and starts at 'earliest';
        # it must still start after what the store already holds.
        later = _publish_runs(settings, runs=1, steps=1, prefix="later")
        fresh = settings.model_copy(update={"group": settings.group + "-new"})
        with ingest_for(fresh, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= len(later))
            ingest.poll_once(300)
            assert ingest.totals.duplicates == 0
    assert len(published_rows(settings)) == len(first) + len(later)


class Recording:
    """A producer that keeps (key, value) of every send, then sends it."""

    def __init__(self, inner: KafkaProducer) -> None:
        self.inner = inner
        self.sent: list[tuple[bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> object:
        self.sent.append((key, value))
        return self.inner.send(topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()


class Away:
    """A DLQ producer whose broker is away until `back` is set."""

    def __init__(self, inner: KafkaProducer) -> None:
        self.inner = inner
        self.back = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> object:
        if not self.back:
            raise KafkaTimeoutError("dead-letter topic unavailable")
        return self.inner.send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout: float | None = None) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()


def test_dead_letters_are_kept_before_their_position_moves_and_published_once_the_topic_is_back(
    settings: Settings,
) -> None:
    publish_raw(settings, [(b"r", b"not a step")])
    _publish_runs(settings, runs=1, steps=1)
    assert settings.kafka_bootstrap
    dlq = Away(producer(settings.kafka_bootstrap))
    with running_store(settings) as store, ingest_for(settings, store, letters_producer=dlq) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 3 and ingest.totals.dead >= 1)
        # The batch committed: its letter is in PostgreSQL, not yet on the topic.
        assert _letters(settings) == [(b"not a step", "not_a_step", False)]
        dlq.back = True
        assert ingest.dead_letters is not None
        ingest.dead_letters.retry_at = 0.0  # not wait out the backoff
        # Once the topic holds it, the table keeps its digest and length, not its bytes.
        poll_until(ingest, lambda: _letters(settings) == [(b"", "not_a_step", True)])
    assert len(published_rows(settings)) == 3
    (letter,) = read_topic(str(settings.kafka_bootstrap), settings.dlq_topic, 1)
    assert letter.value == b"not a step"


def _letters(settings: Settings) -> list[tuple[bytes, str, bool]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        table = f'"{settings.database_schema}".receipts_dead_letters'
        query = f"SELECT value, reason, published_at IS NOT NULL FROM {table} ORDER BY id"
        rows = conn.execute(query).fetchall()
    return [(bytes(v), r, p) for v, r, p in rows]


def test_a_stale_head_fails_the_batch_and_the_retry_chains_correctly(settings: Settings) -> None:
    sent = _publish_runs(settings, runs=1, steps=1)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= len(sent))
        # Another writer appends to the run behind this consumer's cached head.
        other = store.run("default", "run-0")
        intruder = other.entries[-1].step.model_copy(update={"event_id": "written-elsewhere"})
        store.record([(intruder, encode_json(intruder))])
        late = other.entries[-1].step.model_copy(update={"event_id": "late-arrival"})
        publish_raw(settings, [(b"run-0", encode_json(late))])
        poll_until(ingest, lambda: _has(store, "late-arrival"))
        run = store.run("default", "run-0")
        assert ingest.totals.retries == 1  # the conflicting batch was refused whole, then redone
    ids = [e.step.event_id for e in run.entries]
    assert ids.count("late-arrival") == 1 and ids.count("written-elsewhere") == 1
    assert len(ids) == len(set(ids))
    assert run.receipt().integrity.verified
    assert [e.version for e in run.entries] == list(range(1, len(ids) + 1))


def _has(store: RunStore, event_id: str) -> bool:
    return event_id in store.run("default", "run-0").event_ids


@pytest.mark.timeout(90)
def test_large_batches_do_not_hang_the_store(settings: Settings) -> None:
    """BASELINES: eventsourcing's pipelined save hangs from ~1 MB over the unix socket."""
    with running_store(settings) as store:
        publisher = build_publisher(settings)
        with publisher.run("website-update", run_id="big") as run:
            for i in range(40):
                run.propose(
                    "update_page",
                    {"system": "cms", "kind": "page", "id": str(i)},
                    "cms.write",
                    output="x" * 100_000,
                )
        publisher.close()
        # Through the aggregate and eventsourcing's save(): ~8 MB in one transaction.
        steps = [(s, encode_json(s)) for s in _replay(settings, publisher.published)]
        assert store.record(steps) == publisher.published
        assert len(store.run("default", "big").entries) == publisher.published
        assert run_uuid("default", "big") == store.run("default", "big").id


def _replay(settings: Settings, count: int) -> list[StepEvent]:
    assert settings.kafka_bootstrap
    codec = Codec()
    return [codec.decode(r.value) for r in read_topic(settings.kafka_bootstrap, settings.topic, count)]
