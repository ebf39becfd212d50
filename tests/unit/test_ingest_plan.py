"""Planning a batch (decode, dedupe, chain) with fakes of our own for Kafka and the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError
from kafka import TopicPartition

from consumers.ingest import HeadCache, Ingest, Plan, position_name
from consumers.positions import Seen, Verdict, check_positions
from domain.chain import GENESIS, link
from domain.run import RunHead, run_uuid
from domain.step_values import Actor
from domain.steps import StepEvent, flag
from infra.recorder import Mark, Position
from infra.retry import Backoff
from infra.rows import OPENED_TOPIC, RECORDED_TOPIC, Row, read_step_state
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
    timestamp: int = 1_764_072_000_000


class StoredHeads:
    """The store as planning sees it: the heads of runs already recorded (a StepStore
    that never writes: these tests stop before a batch is applied)."""

    def __init__(self, heads: dict[UUID, RunHead] | None = None) -> None:
        self.stored = heads or {}
        self.asked: list[list[UUID]] = []
        self.tenants: dict[str, set[str]] = {}

    def heads(self, run_ids: Iterable[UUID]) -> dict[UUID, RunHead]:
        runs = sorted(run_ids)
        self.asked.append(runs)
        return {run: self.stored[run] for run in runs if run in self.stored}

    def tenants_of(self, run_ids: Sequence[str]) -> dict[str, set[str]]:
        return {run_id: self.tenants[run_id] for run_id in run_ids if run_id in self.tenants}

    def positions(self, names: Iterable[str]) -> dict[str, Position]:
        return {}

    def record_batch(self, batch: Plan) -> int:
        raise AssertionError("planning tests apply nothing")

    def reset_position(self, name: str, **why: Any) -> None:
        raise AssertionError("planning tests check no position")

    def move_anchor(self, name: str, anchor: Mark) -> None:
        raise AssertionError("planning tests check no position")

    def record_incident(self, kind: str, subject: str, **detail: Any) -> None:
        raise AssertionError("planning tests record no incident")


class QueuedPolls:
    """A consumer whose polls return prepared batches, then nothing."""

    def __init__(self, *batches: dict[TopicPartition, list[Record]]) -> None:
        self.batches = list(batches)
        self.calls: list[int] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.calls.append(timeout_ms)
        return self.batches.pop(0) if self.batches else {}

    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def assignment(self) -> set[TopicPartition]:
        return set()

    def commit_async(self, offsets: Any = None, callback: Any = None) -> None: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    def position(self, partition: TopicPartition) -> int:
        return 0

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    def subscribe(self, topics: list[str], listener: Any = None) -> None: ...
    def close(self, autocommit: bool = True) -> None: ...


def _ingest(store: StoredHeads) -> Ingest:
    return Ingest(consumer=QueuedPolls(), recorder=store, dead_letters=None, clock=lambda: NOW)


def _batch(*values: bytes | None, partition: int = 0, start: int = 0) -> dict[TopicPartition, list[Record]]:
    records = [Record("steps", partition, start + i, f.RUN.encode(), v) for i, v in enumerate(values)]
    return {TopicPartition("steps", partition): records}


def test_a_new_run_is_chained_from_genesis_and_opened_by_its_first_row() -> None:
    first, second = f.started(), f.finished()
    wires = [encode_json(first), encode_json(second)]
    plan = _ingest(StoredHeads()).plan(_batch(*wires, start=40))
    rows = _chained(plan)
    run = run_uuid("default", f.RUN)
    assert [(r[0], r[1], r[2]) for r in rows] == [(run, 1, OPENED_TOPIC), (run, 2, RECORDED_TOPIC)]
    headers = [read_step_state(r[3]) for r in rows]
    assert headers[0].digest == link(GENESIS, wires[0])
    assert headers[1].digest == link(headers[0].digest, wires[1])
    assert [h.wire for h in headers] == wires and headers[0].recorded_at == NOW
    assert {name: p.offset for name, p in plan.positions.items()} == {position_name("steps", 0): 41}
    assert plan.positions[position_name("steps", 0)].anchor.offset == 40  # type: ignore[union-attr]


def test_known_event_ids_are_skipped_within_a_batch_and_against_the_store() -> None:
    stored, fresh = f.started(), f.proposed()
    run = run_uuid("default", f.RUN)
    store = StoredHeads({run: RunHead(1, b"\x07" * 32, {stored.event_id: hash(encode_json(stored))})})
    plan = _ingest(store).plan(_batch(encode_json(stored), encode_json(fresh), encode_json(fresh)))
    ((run_id, version, topic, state),) = _chained(plan)
    assert (plan.duplicates, plan.recorded) == (2, 1)
    assert (run_id, version, topic) == (run, 2, RECORDED_TOPIC)
    assert read_step_state(state).digest == link(b"\x07" * 32, encode_json(fresh))


def test_cached_heads_save_the_store_lookup() -> None:
    store = StoredHeads()
    ingest = _ingest(store)
    plan = ingest.plan(_batch(encode_json(f.started())))
    _chained(plan)
    ingest.cache.put_all(plan.heads)
    ingest.plan(_batch(encode_json(f.finished()), start=1))
    assert store.asked == [[run_uuid("default", f.RUN)]]


def test_bad_values_become_dead_letters_and_still_move_the_position() -> None:
    good = encode_json(f.started())
    plan = _ingest(StoredHeads()).plan(_batch(b"garbage", good, None, partition=3, start=7))
    assert [(d.offset, d.reason) for d in plan.dead] == [(7, "not_a_step"), (9, "undecodable")]
    assert plan.dead[0].value == b"garbage" and plan.dead[0].partition == 3
    assert len(_chained(plan)) == 1
    assert {name: p.offset for name, p in plan.positions.items()} == {position_name("steps", 3): 9}


def test_the_head_cache_evicts_the_least_recently_used_run() -> None:
    cache = HeadCache(capacity=2)
    a, b, c = (UUID(int=n) for n in (1, 2, 3))
    cache.put_all({a: RunHead(1, b"", {}), b: RunHead(1, b"", {})})
    assert cache.get(a) is not None  # a is now the most recent
    cache.put_all({c: RunHead(1, b"", {})})
    assert (cache.get(a) is not None, cache.get(b), cache.get(c) is not None) == (True, None, True)
    assert len(cache) == 2


def test_a_damaged_avro_value_is_a_dead_letter_found_before_any_row_is_written() -> None:
    codec = Codec()
    good, bad = codec.encode_avro(f.started()), codec.encode_avro(f.finished())
    plan = _ingest(StoredHeads()).plan(_batch(good, bad[:-3]))
    assert [(d.offset, d.reason) for d in plan.dead] == [(1, "truncated")]
    plan.chain()
    assert [read_step_state(r[3]).wire for r in plan.rows()] == [good]


def test_a_full_poll_is_topped_up_from_the_backlog_and_a_trickle_is_not() -> None:
    value = encode_json(f.started())
    full, more = _batch(*[value] * 3), _batch(*[value] * 2, start=3)
    backlog = QueuedPolls(full, more)
    ingest = Ingest(backlog, StoredHeads(), None, backlog_from=3, max_batch=10)
    merged = ingest._poll_batch(100)
    assert [r.offset for r in merged[TopicPartition("steps", 0)]] == [0, 1, 2, 3, 4]
    assert backlog.calls == [100, 0, 0]

    live = QueuedPolls(_batch(value), more)
    trickle = Ingest(live, StoredHeads(), None, backlog_from=3)
    assert len(trickle._poll_batch(100)[TopicPartition("steps", 0)]) == 1
    assert live.calls == [100]


# --- conflicts and flags -------------------------------------------------------------------------


def _chained(plan: Plan) -> list[Row]:
    plan.chain()
    return plan.rows()


def _rows_and_settle(plan: Plan, stored: dict[str, bytes]) -> list[Row]:
    rows = _chained(plan)
    return rows + list(plan.settle(lambda _run, event_id: stored.get(event_id)))


def test_a_key_that_is_not_the_run_id_is_flagged_on_the_run() -> None:
    step = f.started()
    batch = _batch(encode_json(step))
    batch[TopicPartition("steps", 0)][0].key = b"another-key"
    plan = _ingest(StoredHeads()).plan(batch)
    rows = _rows_and_settle(plan, {})
    assert [r[1] for r in rows] == [1, 2] and plan.flagged == 1
    note = Codec().decode(read_step_state(rows[1][3]).wire)
    assert note.type == "record.flagged" and note.data.code == "key_mismatch"  # type: ignore[attr-defined]
    assert note.data.event_ids == (step.event_id,)  # type: ignore[attr-defined]


def test_a_known_id_with_other_content_is_a_conflict_and_a_dead_letter() -> None:
    first = f.proposed()
    second = first.model_copy(update={"actor": Actor(kind="human", id="mallory")})
    run = run_uuid("default", f.RUN)
    store = StoredHeads({run: RunHead(1, b"\x07" * 32, {first.event_id: hash(encode_json(first))})})
    plan = _ingest(store).plan(_batch(encode_json(second)))
    rows = _rows_and_settle(plan, {first.event_id: encode_json(first)})
    (row,) = rows
    note = Codec().decode(read_step_state(row[3]).wire)
    assert note.data.code == "conflicting_duplicate" and row[1] == 2  # type: ignore[attr-defined]
    assert [(d.reason, d.value) for d in plan.dead] == [("conflicting_duplicate", encode_json(second))]
    assert (plan.recorded, plan.duplicates, plan.flagged) == (0, 0, 1)


def test_the_same_step_encoded_otherwise_is_a_plain_duplicate() -> None:
    step = f.proposed()
    run = run_uuid("default", f.RUN)
    avro = Codec().encode_avro(step)
    store = StoredHeads({run: RunHead(1, b"\x07" * 32, {step.event_id: hash(avro)})})
    plan = _ingest(store).plan(_batch(encode_json(step)))
    assert _rows_and_settle(plan, {step.event_id: avro}) == []
    assert (plan.duplicates, plan.dead) == (1, [])


@pytest.mark.parametrize(
    "forged",
    [
        flag(f.proposed(), "conflicting_duplicate", "forged"),
        f.refused(),  # a forged attempt, pinned on someone who never tried
        f.expired(deadline=f.at(30)),  # a forged expiry closes a step a person may still decide
    ],
    ids=lambda step: step.type,
)
def test_a_service_only_type_from_the_wire_is_a_dead_letter(forged: StepEvent) -> None:
    plan = _ingest(StoredHeads()).plan(_batch(encode_json(forged)))
    assert _chained(plan) == [] and [d.reason for d in plan.dead] == ["reserved_type"]


class _Exploding(Codec):
    def decode(self, raw: bytes) -> StepEvent:
        raise RecursionError("maximum recursion depth exceeded")


def test_any_exception_while_decoding_is_a_dead_letter_not_a_stop() -> None:
    ingest = Ingest(consumer=QueuedPolls(), recorder=StoredHeads(), dead_letters=None, codec=_Exploding())
    plan = ingest.plan(_batch(encode_json(f.started())))
    assert [(d.reason, d.error) for d in plan.dead] == [
        ("undecodable", "RecursionError: maximum recursion depth exceeded")
    ]


# --- positions against the broker's log ---------------------------------------------------------


class FakeLog:
    def __init__(self, seen: dict[TopicPartition, Seen]) -> None:
        self.seen = seen

    def look(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, Seen]:
        return {tp: self.seen[tp] for tp in offsets if tp in self.seen}

    def close(self) -> None:
        pass


TP = TopicPartition("steps", 0)
STORED = Position(Mark(560, b"last"), Mark(0, b"anchor"))


@pytest.mark.parametrize(
    ("seen", "reset", "gap"),
    [
        (Seen(b"anchor", 0), False, False),  # the same log
        (Seen(b"other", 0), True, False),  # another record where the anchor was: replaced
        (Seen(None, 0), True, False),  # the log is shorter than the anchor: replaced (restart)
        (Seen(None, 0, known=False), False, False),  # no answer: try again later
        (Seen(None, 900), False, True),  # retention deleted past the stored position
    ],
)
def test_a_stored_position_is_checked_against_the_record_at_its_anchor(
    seen: Seen, reset: bool, gap: bool
) -> None:
    verdict = check_positions({TP: STORED}, FakeLog({TP: seen})).get(TP, Verdict())
    assert (verdict.reset, verdict.gap) == (reset, gap)


def test_retention_past_the_anchor_moves_it_to_the_stored_position() -> None:
    verdict = check_positions({TP: STORED}, FakeLog({TP: Seen(None, 100)}))[TP]
    assert verdict.anchor == STORED.last and not verdict.reset


def test_a_run_id_under_a_second_tenant_is_flagged_when_that_run_opens() -> None:
    store = StoredHeads()
    store.tenants = {f.RUN: {"acme"}}
    plan = _ingest(store).plan(_batch(encode_json(f.started()), encode_json(f.finished())))
    rows = _rows_and_settle(plan, {})
    notes = [Codec().decode(read_step_state(r[3]).wire) for r in rows]
    assert [n.type for n in notes] == ["run.started", "record.flagged", "run.finished"]
    assert notes[1].data.code == "tenant_changed" and "acme" not in notes[1].data.message  # type: ignore[attr-defined]
    assert plan.new_runs == [("default", f.RUN)]


# --- a store that goes away ----------------------------------------------------------------------


class SeekingPolls(QueuedPolls):
    """Records what the loop asked of it, in order."""

    def __init__(self, *batches: dict[TopicPartition, list[Record]]) -> None:
        super().__init__(*batches)
        self.asked: list[str] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        batch = super().poll(timeout_ms, max_records)
        self.asked.append(f"poll {len(batch)}")
        return batch

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.asked.append(f"seek {offset}")

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.asked.append("seek to beginning")


class AwayStore(StoredHeads):
    """The first batch fails on a lost server, and the server stays away for the
    next look-up of positions too."""

    def __init__(self) -> None:
        super().__init__()
        self.away = 2  # the failed write, then the resume after it
        self.applied: list[list[int]] = []

    def _maybe_away(self) -> None:
        if self.away:
            self.away -= 1
            raise OperationalError("server closed the connection unexpectedly")

    def positions(self, names: Iterable[str]) -> dict[str, Position]:
        self._maybe_away()
        return {}

    def record_batch(self, batch: Plan) -> int:
        self._maybe_away()
        self.applied.append([r[1] for r in batch.rows()])
        return len(batch.rows())


def test_no_batch_is_applied_past_one_that_failed_until_the_stored_positions_are_sought() -> None:
    first = _batch(encode_json(f.started()), encode_json(f.proposed()))
    later = _batch(encode_json(f.finished()), start=2)
    store, polls = AwayStore(), SeekingPolls(first, later)
    ingest = Ingest(polls, store, None)
    ingest.backoff = Backoff(first=0.0, cap=0.0)
    ingest.poll_once()  # the write fails, and the resume after it: positions are owed
    assert store.applied == [] and ingest.owed and polls.asked == ["poll 1"]
    ingest.poll_once()  # the store is back: the consumer is sought before anything is read
    assert polls.asked == ["poll 1", "seek to beginning", "poll 1"] and not ingest.owed
    assert store.applied == [[1]]
