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
from schemas import Codec, encode_json
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
    rows = list(plan.rows())
    run = run_uuid("default", f.RUN)
    assert [(r[0], r[1], r[2]) for r in rows] == [(run, 1, OPENED_TOPIC), (run, 2, RECORDED_TOPIC)]
    headers = [read_step_state(r[3]) for r in rows]
    assert headers[0].digest == link(GENESIS, wires[0])
    assert headers[1].digest == link(headers[0].digest, wires[1])
    assert [h.wire for h in headers] == wires and headers[0].recorded_at == NOW
    assert plan.positions == {position_name("steps", 0): 41}


def test_known_event_ids_are_skipped_within_a_batch_and_against_the_store() -> None:
    stored, fresh = f.started(), f.proposed()
    run = run_uuid("default", f.RUN)
    store = StoredHeads({run: Head(1, b"\x07" * 32, {stored.event_id})})
    plan = _ingest(store).plan(_batch(encode_json(stored), encode_json(fresh), encode_json(fresh)))
    ((run_id, version, topic, state),) = list(plan.rows())
    assert (plan.duplicates, plan.recorded) == (2, 1)
    assert (run_id, version, topic) == (run, 2, RECORDED_TOPIC)
    assert read_step_state(state).digest == link(b"\x07" * 32, encode_json(fresh))


def test_cached_heads_save_the_store_lookup() -> None:
    store = StoredHeads()
    ingest = _ingest(store)
    plan = ingest.plan(_batch(encode_json(f.started())))
    list(plan.rows())
    ingest.cache.put_all(plan.heads)
    ingest.plan(_batch(encode_json(f.finished()), start=1))
    assert store.asked == [[run_uuid("default", f.RUN)]]


def test_bad_values_become_dead_letters_and_still_move_the_position() -> None:
    good = encode_json(f.started())
    plan = _ingest(StoredHeads()).plan(_batch(b"garbage", good, None, partition=3, start=7))
    assert [(d.offset, d.reason) for d in plan.dead] == [(7, "not_a_step"), (9, "undecodable")]
    assert plan.dead[0].value == b"garbage" and plan.dead[0].partition == 3
    assert len(list(plan.rows())) == 1
    assert plan.positions == {position_name("steps", 3): 9}


def test_the_head_cache_evicts_the_least_recently_used_run() -> None:
    cache = HeadCache(capacity=2)
    a, b, c = (UUID(int=n) for n in (1, 2, 3))
    cache.put_all({a: Head(1, b"", set()), b: Head(1, b"", set())})
    assert cache.get(a) is not None  # a is now the most recent
    cache.put_all({c: Head(1, b"", set())})
    assert (cache.get(a) is not None, cache.get(b), cache.get(c) is not None) == (True, None, True)
    assert len(cache) == 2


def test_avro_values_are_peeked_for_their_run_and_decoded_as_rows_are_made() -> None:
    codec = Codec()
    good, bad = codec.encode_avro(f.started()), codec.encode_avro(f.finished())
    corrupt = bad[:-3]  # the front (ids) reads, the rest does not
    store = StoredHeads()
    plan = _ingest(store).plan(_batch(good, corrupt))
    assert store.asked == [[run_uuid("default", f.RUN)]]  # found by peeking, before decoding
    assert all(step is None for _, step, _ in plan.items) and plan.dead == []
    rows = list(plan.rows())
    assert len(rows) == 1 and read_step_state(rows[0][3]).wire == good
    assert [(d.offset, d.reason) for d in plan.dead] == [(1, "truncated")]


def test_peek_reads_tenant_and_run_only_from_known_avro() -> None:
    codec = Codec()
    step = f.started("run-é", tenant="acme")
    assert codec.peek_run(codec.encode_avro(step)) == ("acme", "run-é")
    assert codec.peek_run(encode_json(step)) is None
    assert codec.peek_run(b"\xc3\x01" + b"\x00" * 8 + b"\x02a") is None  # unknown schema
    assert codec.peek_run(codec.encode_avro(step)[:13]) is None  # cut inside the ids


class QueuedPolls:
    """A consumer whose polls return prepared batches, then nothing."""

    def __init__(self, *batches: dict[TopicPartition, list[Record]]) -> None:
        self.batches = list(batches)
        self.calls: list[int] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.calls.append(timeout_ms)
        return self.batches.pop(0) if self.batches else {}


def test_a_full_poll_is_topped_up_from_the_backlog_and_a_trickle_is_not() -> None:
    value = encode_json(f.started())
    full, more = _batch(*[value] * 3), _batch(*[value] * 2, start=3)
    ingest = Ingest(
        QueuedPolls(full, more),
        StoredHeads(),
        None,
        backlog_from=3,  # type: ignore[arg-type]
        max_batch=10,
    )
    merged = ingest._poll_batch(100)
    assert [r.offset for r in merged[TopicPartition("steps", 0)]] == [0, 1, 2, 3, 4]
    assert ingest.consumer.calls == [100, 0, 0]  # type: ignore[attr-defined]

    trickle = Ingest(QueuedPolls(_batch(value), more), StoredHeads(), None, backlog_from=3)  # type: ignore[arg-type]
    assert len(trickle._poll_batch(100)[TopicPartition("steps", 0)]) == 1
    assert trickle.consumer.calls == [100]  # type: ignore[attr-defined]
