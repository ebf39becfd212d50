"""The ingest loop: agent-steps -> Run records in PostgreSQL, exactly once.

One visible loop, no hidden threads:

    poll a batch -> find each value's run and the runs' heads ->
    one transaction: table lock, Kafka positions, then a COPY fed as each
    value is decoded, deduplicated and hash-chained -> dead letters made
    durable -> commit -> then, as a courtesy to lag monitors, Kafka offsets.

Positions live in PostgreSQL beside the events, so a crash anywhere leaves the
store either with a batch and its positions or with neither; on start and on
every partition assignment the consumer seeks to the positions the database
holds, not to Kafka's committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.dead_letters import DeadLetter, DeadLetterSink
from domain.chain import GENESIS, link
from domain.run import run_uuid
from domain.steps import StepEvent
from infra.store import OPENED_TOPIC, RECORDED_TOPIC, Head, Row, StepRecorder, StepStates
from schemas import Codec, DecodeError

log = logging.getLogger(__name__)


def position_name(topic: str, partition: int) -> str:
    """The tracking row that holds how far a partition has been applied to the store."""
    return f"kafka:{topic}:{partition}"


class HeadCache:
    """Each open run's head, least recently used evicted: memory stays bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heads: OrderedDict[UUID, Head] = OrderedDict()

    def get(self, run: UUID) -> Head | None:
        head = self._heads.get(run)
        if head is not None:
            self._heads.move_to_end(run)
        return head

    def put_all(self, heads: Mapping[UUID, Head]) -> None:
        for run, head in heads.items():
            self._heads[run] = head
            self._heads.move_to_end(run)
        while len(self._heads) > self.capacity:
            self._heads.popitem(last=False)

    def clear(self) -> None:
        self._heads.clear()

    def __len__(self) -> int:
        return len(self._heads)


@dataclass
class Plan:
    """What one poll batch will do to the store.

    Its rows are made lazily, as the store streams them into a COPY, so
    PostgreSQL applies the first rows while the last are still being decoded
    (Avro values whose run was peeked are only decoded here) and chained.
    Chaining advances the heads in place (copying every run's event ids per
    batch costs more than the rest of planning): a batch that is then not
    committed must drop them, and process() clears the whole cache.
    """

    codec: Codec
    items: list[tuple[UUID, StepEvent | None, ConsumerRecord]]
    dead: list[DeadLetter]
    positions: dict[str, int]
    heads: dict[UUID, Head]
    recorded_at: datetime
    recorded: int = 0
    duplicates: int = 0

    def rows(self) -> Iterator[Row]:
        state = StepStates(self.recorded_at)
        heads = self.heads
        for run, decoded, record in self.items:
            step = decoded or _decode(self.codec, record, self.dead)
            if step is None:
                continue
            head = heads.get(run)
            if head is None:
                head = heads[run] = Head(0, GENESIS, set())
            elif step.event_id in head.event_ids:
                self.duplicates += 1
                continue
            wire = record.value
            head.version += 1
            head.digest = link(head.digest, wire)
            head.event_ids.add(step.event_id)
            opens = head.version == 1
            self.recorded += 1
            yield (
                run,
                head.version,
                OPENED_TOPIC if opens else RECORDED_TOPIC,
                state(head.digest, step.event_id, wire, opens),
            )


def _decode(codec: Codec, record: ConsumerRecord, dead: list[DeadLetter]) -> StepEvent | None:
    value = record.value
    try:
        if value is None:
            raise DecodeError("the message has no value (a tombstone?)")
        return codec.decode(value)
    except DecodeError as error:
        dead.append(
            DeadLetter(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                value or b"",
                error.reason,
                str(error),
            )
        )
        return None


@dataclass
class Totals:
    batches: int = 0
    recorded: int = 0
    duplicates: int = 0
    dead: int = 0
    retries: int = 0


class Ingest:
    """Turns poll batches into committed Run records."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        recorder: StepRecorder,
        dead_letters: DeadLetterSink,
        codec: Codec | None = None,
        head_cache_runs: int = 10_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_batch: int = 8_000,
        backlog_from: int = 500,
    ) -> None:
        self.consumer = consumer
        self.recorder = recorder
        self.dead_letters = dead_letters
        self.codec = codec or Codec()
        self.cache = HeadCache(head_cache_runs)
        self.clock = clock
        self.totals = Totals()
        self.max_batch = max_batch
        self.backlog_from = backlog_from
        # When the last poll started, if it found nothing.
        self.empty_poll_at: float | None = None

    # --- the loop --------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        self.consumer.subscribe([topic], listener=_ResumeFromStore(self))

    def run(self, should_stop: Callable[[], bool], poll_timeout_ms: int = 100) -> None:
        while not should_stop():
            self.poll_once(poll_timeout_ms)

    def close(self) -> None:
        """After the loop: every batch is already committed, so nothing is pending."""
        self.consumer.close(autocommit=False)
        self.dead_letters.close()

    def poll_once(self, timeout_ms: int = 100) -> int:
        started = time.monotonic()
        batch = self._poll_batch(timeout_ms)
        self.empty_poll_at = None if batch else started
        if not batch:
            return 0
        self.process(batch)
        return sum(len(records) for records in batch.values())

    def _poll_batch(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One poll; when it comes back full (a backlog), top it up with what is
        already fetched, up to `max_batch`: each transaction's fixed cost (lock,
        positions, commit) then spreads over more events. A live trickle is
        applied as it comes, so latency stays low."""
        batch: dict[TopicPartition, list[ConsumerRecord]] = self.consumer.poll(timeout_ms=timeout_ms)
        count = sum(len(records) for records in batch.values())
        while self.backlog_from <= count < self.max_batch:
            more = self.consumer.poll(timeout_ms=0, max_records=self.max_batch - count)
            if not more:
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
        return batch

    def process(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> bool:
        """Apply one batch all-or-nothing. False: nothing committed; the batch will be re-read."""
        try:
            plan = self.plan(batch)
            # Dead letters are found while rows stream; they are made durable
            # before the transaction that moves the positions past them commits.
            self.recorder.record_batch(
                plan.rows(), plan.positions, before_commit=lambda: self.dead_letters.send(plan.dead)
            )
        except (IntegrityError, PersistenceError, KafkaError, OSError) as error:
            # Another consumer applied these offsets first, a cached head went
            # stale, or a server is away: commit nothing, re-read from the store.
            self.totals.retries += 1
            log.warning(
                "batch of %s not applied (%s: %s); resuming from stored positions",
                _describe(batch),
                type(error).__name__,
                error,
            )
            self.cache.clear()
            self.resume(batch.keys())
            time.sleep(min(0.05 * self.totals.retries, 1.0))
            return False
        self.cache.put_all(plan.heads)
        self.totals.batches += 1
        self.totals.recorded += plan.recorded
        self.totals.duplicates += plan.duplicates
        self.totals.dead += len(plan.dead)
        self._commit_offsets(batch)
        return True

    # --- planning: pure but for one head lookup --------------------------

    def plan(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> Plan:
        """Find each value's run (peeking Avro, decoding JSON) and the runs' heads."""
        items: list[tuple[UUID, StepEvent | None, ConsumerRecord]] = []
        dead: list[DeadLetter] = []
        positions: dict[str, int] = {}
        codec = self.codec
        for tp, records in batch.items():
            for record in records:
                peeked = codec.peek_run(record.value) if record.value is not None else None
                if peeked is not None:
                    items.append((run_uuid(*peeked), None, record))
                elif (step := _decode(codec, record, dead)) is not None:
                    items.append((run_uuid(step.tenant, step.run_id), step, record))
            positions[position_name(tp.topic, tp.partition)] = records[-1].offset
        heads = self._heads({run for run, _, _ in items})
        return Plan(codec, items, dead, positions, heads, self.clock())

    def _heads(self, runs: Iterable[UUID]) -> dict[UUID, Head]:
        heads: dict[UUID, Head] = {}
        missing = []
        for run in runs:
            head = self.cache.get(run)
            if head is None:
                missing.append(run)
            else:
                heads[run] = head
        if missing:
            heads.update(self.recorder.heads(missing))
        return heads

    # --- positions ---------------------------------------------------------

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Seek each partition to just after the offset the store last applied."""
        partitions = list(partitions)
        stored = self.recorder.positions(position_name(tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            offset = stored.get(position_name(tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset + 1)
            else:
                self.consumer.seek_to_beginning(tp)
        log.info(
            "resumed %s from stored positions %s",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions),
            stored or "{}",
        )

    def _commit_offsets(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in batch.items()}
        # Positions are in PostgreSQL already; this commit only feeds lag monitors,
        # so it need not wait for the broker's answer.
        self.consumer.commit_async(offsets, callback=_log_commit_failure)

    def caught_up(self, since: float) -> bool:
        """True when a poll started after `since` found nothing and every assigned
        partition is read to its end.

        The end is the larger of the high watermark of the latest fetch response
        and ListOffsets(latest): Tansu 0.6 answers the latter with the start of
        the last batch, not its end."""
        assigned = list(self.consumer.assignment())
        if self.empty_poll_at is None or self.empty_poll_at < since or not assigned:
            return False
        listed = self.consumer.end_offsets(assigned)
        return all(
            self.consumer.position(tp) >= max(self.consumer.highwater(tp) or 0, listed[tp]) for tp in assigned
        )


class _ResumeFromStore(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Each batch is committed before the next poll, so nothing is in flight.
        self.ingest.cache.clear()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.ingest.cache.clear()
        if assigned:
            self.ingest.resume(assigned)


def _log_commit_failure(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.info("Kafka offset commit skipped (%s); the store holds the positions", response)


def _describe(batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{r[0].offset}-{r[-1].offset}" for tp, r in batch.items())
