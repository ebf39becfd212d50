"""Planning a batch (decode, dedupe, chain) with fakes of our own for Kafka and the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from kafka import TopicPartition

from consumers.ingest import HeadCache, Ingest, position_name
from domain.chain import GENESIS, link
from domain.run import run_uuid
from infra.store import OPENED_TOPIC, RECORDED_TOPIC, Head, read_step_state
from schemas import encode_json
from tests.unit import factories as f

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class StoredHeads:
    """The store as planning sees it: the heads of runs already recorded."""

    def __init__(self, heads: dict[UUID, Head] | None = None) -> None:
        self.stored = heads or {}
        self.asked: list[list[UUID]] = []

    def heads(self, runs: list[UUID]) -> dict[UUID, Head]:
        self.asked.append(sorted(runs))
        return {run: self.stored[run] for run in runs if run in self.stored}


def _ingest(store: StoredHeads) -> Ingest:
    return Ingest(consumer=None, recorder=store, dead_letters=None, clock=lambda: NOW)  # type: ignore[arg-type]


def _batch(*values: bytes | None, partition: int = 0, start: int = 0) -> dict[TopicPartition, list[Record]]:
    records = [Record("steps", partition, start + i, b"k", v) for i, v in enumerate(values)]
    return {TopicPartition("steps", partition): records}


def test_a_new_run_is_chained_from_genesis_and_opened_by_its_first_row() -> None:
    first, second = f.started(), f.finished()
    wires = [encode_json(first), encode_json(second)]
    plan = _ingest(StoredHeads()).plan(_batch(*wires, start=40))
    run = run_uuid("default", f.RUN)
    assert [(r[0], r[1], r[2]) for r in plan.rows] == [(run, 1, OPENED_TOPIC), (run, 2, RECORDED_TOPIC)]
    headers = [read_step_state(r[3]) for r in plan.rows]
    assert headers[0].digest == link(GENESIS, wires[0])
    assert headers[1].digest == link(headers[0].digest, wires[1])
    assert [h.wire for h in headers] == wires and headers[0].recorded_at == NOW
    assert plan.positions == {position_name("steps", 0): 41}


def test_known_event_ids_are_skipped_within_a_batch_and_against_the_store() -> None:
    stored, fresh = f.started(), f.proposed()
    run = run_uuid("default", f.RUN)
    store = StoredHeads({run: Head(1, b"\x07" * 32, {stored.event_id})})
    plan = _ingest(store).plan(_batch(encode_json(stored), encode_json(fresh), encode_json(fresh)))
    assert plan.duplicates == 2
    ((run_id, version, topic, state),) = plan.rows
    assert (run_id, version, topic) == (run, 2, RECORDED_TOPIC)
    assert read_step_state(state).digest == link(b"\x07" * 32, encode_json(fresh))


def test_cached_heads_save_the_store_lookup() -> None:
    store = StoredHeads()
    ingest = _ingest(store)
    plan = ingest.plan(_batch(encode_json(f.started())))
    ingest.cache.put_all(plan.heads)
    ingest.plan(_batch(encode_json(f.finished()), start=1))
    assert store.asked == [[run_uuid("default", f.RUN)]]


def test_bad_values_become_dead_letters_and_still_move_the_position() -> None:
    good = encode_json(f.started())
    plan = _ingest(StoredHeads()).plan(_batch(b"garbage", good, None, partition=3, start=7))
    assert [(d.offset, d.reason) for d in plan.dead] == [(7, "not_a_step"), (9, "undecodable")]
    assert plan.dead[0].value == b"garbage" and plan.dead[0].partition == 3
    assert len(plan.rows) == 1
    assert plan.positions == {position_name("steps", 3): 9}


def test_the_head_cache_evicts_the_least_recently_used_run() -> None:
    cache = HeadCache(capacity=2)
    a, b, c = (UUID(int=n) for n in (1, 2, 3))
    cache.put_all({a: Head(1, b"", set()), b: Head(1, b"", set())})
    assert cache.get(a) is not None  # a is now the most recent
    cache.put_all({c: Head(1, b"", set())})
    assert (cache.get(a) is not None, cache.get(b), cache.get(c) is not None) == (True, None, True)
    assert len(cache) == 2
