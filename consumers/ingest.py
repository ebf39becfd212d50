"""The ingest loop: agent-steps -> Run records in PostgreSQL, exactly once.

One visible loop (`Ingest.poll_once`), and one writer thread beside it (what a
batch becomes before any lock is taken, its plan, is consumers/plan.py):

    poll a batch -> prepare it outside any lock: decode and validate each value
    (a bad one is a dead letter), find the runs' heads, dedupe, hash-chain and
    encode rows -> wait for the previous batch's commit -> the writer applies
    this one in one transaction (table lock, Kafka positions, COPY of the ready
    rows, dead letters, commit) while the next batch is polled and prepared ->
    once committed: Kafka offsets (a courtesy to lag monitors), and the dead
    letters published to the DLQ topic.

A batch is chained on the heads the batch before it left, so when one fails
to commit, the one prepared after it is dropped too, the head cache is
cleared, and the consumer seeks back to the stored positions.

Positions live in PostgreSQL beside the events, so a crash anywhere leaves the
store either with a batch and its positions or with neither; on start and on
every partition assignment the consumer seeks to the positions the database
holds, not to Kafka's committed offsets.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.plan import HeadCache, Plan, decode_value, vouched
from consumers.positions import LogProbe, check_positions, fingerprint
from consumers.sealing import BatchSeals, KeySource
from consumers.signatures import Checked, SignatureCheck
from domain.personal import PersonalData
from domain.policy import PublisherRules
from domain.routing import Router
from domain.run import RunHead, run_uuid
from domain.steps import StepEvent
from domain.vouches import WRITTEN_BY_SERVICE
from infra.dead_letters import DeadLetter
from infra.publishers import Signer
from infra.retry import Backoff
from infra.store import Mark, Position
from schemas import Codec

log = logging.getLogger(__name__)


Polled = Mapping[TopicPartition, Sequence[ConsumerRecord]]
# Seconds a thread keeps the GIL while another waits for it (see `Ingest.overlapped`).
WRITER_SWITCH_INTERVAL = 0.0005


class StepConsumer(Protocol):
    """What the loop asks of its Kafka consumer (kafka-python's KafkaConsumer)."""

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def commit_async(self, offsets: Any = None, callback: Any = None) -> Any: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def position(self, partition: TopicPartition) -> int: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def subscribe(self, topics: list[str], listener: Any = None) -> None: ...
    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None: ...


class StepStore(Protocol):
    """What the loop asks of the event store (infra.store.StepRecorder)."""

    def heads(self, run_ids: Iterable[UUID]) -> dict[UUID, RunHead]: ...
    def tenants_of(self, run_ids: Sequence[str]) -> dict[str, set[str]]: ...
    def positions(self, names: Iterable[str]) -> dict[str, Position]: ...
    def record_batch(self, batch: Plan) -> int: ...
    def reset_position(self, name: str, **why: Any) -> None: ...
    def move_anchor(self, name: str, anchor: Mark) -> None: ...
    def record_incident(self, kind: str, subject: str, **detail: Any) -> None: ...


class LetterRelay(Protocol):
    """Publishes the dead letters a batch kept (consumers.dead_letters.DeadLetterRelay)."""

    def publish_pending(self, force: bool = False) -> int: ...
    def close(self) -> None: ...


def position_name(topic: str, partition: int) -> str:
    """The tracking row that holds how far a partition has been applied to the store."""
    return f"kafka:{topic}:{partition}"


@dataclass
class Totals:
    batches: int = 0
    recorded: int = 0
    duplicates: int = 0
    dead: int = 0
    flagged: int = 0
    decided: int = 0
    retries: int = 0
    resets: int = 0


class Ingest:
    """Turns poll batches into committed Run records."""

    def __init__(
        self,
        consumer: StepConsumer,
        recorder: StepStore,
        dead_letters: LetterRelay | None,
        codec: Codec | None = None,
        head_cache_runs: int = 10_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_batch: int = 8_000,
        backlog_from: int = 500,
        probe: LogProbe | None = None,
        check_every: float = 30.0,
        router: Router | None = None,
        keys: KeySource | None = None,
        personal: PersonalData | None = None,
        signatures: SignatureCheck | None = None,
        service: Signer | None = None,
    ) -> None:
        self.consumer = consumer
        # Personal-data fields are sealed under their subject's key (None: stored as received).
        self.keys = keys
        self.personal = personal or PersonalData()
        # Who may write: each step's signature checked against the registered publishers.
        self.signatures = signatures
        # The steps ingest writes itself (decisions, flags) are the service's, when it holds its key.
        self.service = WRITTEN_BY_SERVICE if service is not None else None
        # The policy in force: each proposed or edited step gets the service's decision.
        self.router = router
        self.recorder = recorder
        self.dead_letters = dead_letters
        # Reads the broker's log to check stored positions still mean something in it.
        self.probe = probe
        self.check_every = check_every
        self.next_check = time.monotonic() + check_every
        self.backoff = Backoff()  # grows with consecutive batches not applied
        self.writer: ThreadPoolExecutor | None = None
        self.pending: tuple[Plan, Polled, Future[int]] | None = None  # the batch being written
        self.owed: set[TopicPartition] = set()  # partitions whose stored position must be sought first
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
        with self.overlapped():
            while not should_stop():
                self.poll_once(poll_timeout_ms)

    @contextmanager
    def overlapped(self) -> Iterator[None]:
        """A writer thread applies each batch while the next is polled and prepared:
        PostgreSQL's half (lock, COPY, commit) overlaps Python's (poll, decode,
        chain); psycopg waits on the server without holding the GIL.

        The writer needs the GIL back after each round trip to the server. At Python's
        default 5 ms switch interval the busy preparing thread keeps it that long each
        time, and the events table's lock is held for those waits rather than for work."""
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
        with ThreadPoolExecutor(1, thread_name_prefix="ingest-writer") as writer:
            self.writer = writer
            try:
                yield
                self.finish_pending()
            finally:
                self.writer = None
                sys.setswitchinterval(switch_interval)

    def poll_once(self, timeout_ms: int = 100) -> int:
        """One turn: poll → prepare the batch outside any lock (decode, validate,
        dedupe, chain, encode rows) → wait for the previous batch's commit → hand
        this batch to the writer (without a writer thread: apply it now) → Kafka
        offsets and dead letters once it is committed."""
        started = time.monotonic()
        if self.owed and not (self.finish_pending() and self.resume(list(self.owed))):
            self.backoff.sleep_after_failure()
            return 0
        if self.probe and started >= self.next_check and self.finish_pending():
            self.check_assigned()  # between batches only: it may move the consumer
        batch = self._poll_batch(timeout_ms)
        if self.owed:  # a rebalance inside the poll could not resume: what it read is not trusted
            return 0
        self.empty_poll_at = None if batch else started
        prepared: Plan | BaseException | None = None
        if batch:
            try:
                prepared = self.prepare(batch)
            except (IntegrityError, PersistenceError, KafkaError, OSError) as error:
                prepared = error
        # The batch was chained on the one in flight: if that one failed, so does this.
        if not self.finish_pending() and batch:
            self.resume(batch.keys())
            return 0
        if isinstance(prepared, BaseException):
            self._failed(batch, prepared)
            return 0
        if prepared is not None:
            self.pending = (prepared, batch, self._submit(prepared))
            if self.writer is None or prepared.suspects:
                self.finish_pending()  # a conflict is settled against the store before going on
        if self.dead_letters:
            self.dead_letters.publish_pending()
        return sum(len(records) for records in batch.values())

    def process(self, batch: Polled) -> bool:
        """Apply one batch all-or-nothing, now. False: nothing committed; it will be re-read."""
        try:
            plan = self.prepare(batch)
        except (IntegrityError, PersistenceError, KafkaError, OSError) as error:
            self._failed(batch, error)
            return False
        self.pending = (plan, batch, self._submit(plan))
        return self.finish_pending()

    def finish_pending(self) -> bool:
        """Wait for the batch in flight; False if it was not applied."""
        if self.pending is None:
            return True
        plan, batch, written = self.pending
        self.pending = None
        try:
            written.result()
        except (IntegrityError, PersistenceError, KafkaError, OSError) as error:
            self._failed(batch, error)
            return False
        self.backoff.succeeded()
        totals = self.totals
        totals.batches += 1
        totals.recorded += plan.recorded
        totals.duplicates += plan.duplicates
        totals.flagged += plan.flagged
        totals.decided += plan.decided
        totals.dead += len(plan.dead)
        if plan.dead and self.dead_letters:
            self.dead_letters.publish_pending(force=True)
        self._commit_offsets(batch)
        return True

    def _submit(self, plan: Plan) -> Future[int]:
        if self.writer is not None:
            return self.writer.submit(self.recorder.record_batch, plan)
        done: Future[int] = Future()
        try:
            done.set_result(self.recorder.record_batch(plan))
        except BaseException as error:
            done.set_exception(error)
        return done

    def _failed(self, batch: Polled, error: BaseException) -> None:
        # Another consumer applied these offsets first, a cached head went stale,
        # or a server is away: nothing was committed; re-read from the stored positions.
        self.totals.retries += 1
        log.warning(
            "batch of %s not applied (%s: %s); resuming from stored positions",
            _describe(batch),
            type(error).__name__,
            error,
        )
        self.cache.clear()
        self.backoff.sleep_after_failure()
        self.resume(batch.keys())

    def close(self) -> None:
        self.finish_pending()
        self.consumer.close(autocommit=False)
        if self.dead_letters:
            self.dead_letters.close()
        if self.probe:
            self.probe.close()

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

    def prepare(self, batch: Polled) -> Plan:
        """Decode, validate, dedupe and chain the batch into ready rows. The next batch
        chains on these heads, so they are cached now and dropped if this one fails."""
        plan = self.plan(batch)
        plan.chain()
        self.cache.put_all(plan.heads)
        return plan

    # --- planning: pure but for one head lookup --------------------------

    def plan(self, batch: Polled) -> Plan:
        """Decode each value (a bad one is a dead letter) and find the runs' heads."""
        items: list[tuple[UUID, StepEvent, ConsumerRecord, Checked]] = []
        names: dict[UUID, tuple[str, str]] = {}
        dead: list[DeadLetter] = []
        positions: dict[str, Position] = {}
        codec, check = self.codec, self.signatures
        rules = self.router.policy.publishers if self.router else PublisherRules()
        for tp, records in batch.items():
            for record in records:
                if (step := decode_value(codec, record, dead)) is None:
                    continue
                keep, checked = vouched(check, rules, step, record, dead)
                if keep:
                    run = run_uuid(step.tenant, step.run_id)
                    items.append((run, step, record, checked))
                    names[run] = (step.tenant, step.run_id)
            positions[position_name(tp.topic, tp.partition)] = Position(
                Mark(records[-1].offset, fingerprint(records[-1])),
                Mark(records[0].offset, fingerprint(records[0])),
            )
        heads = self._heads(names)
        new_runs = {run: name for run, name in names.items() if run not in heads}
        plan = Plan(
            codec, items, dead, positions, heads, self.clock(), router=self.router, service=self.service
        )
        if self.keys is not None:
            spec = self.router.policy.personal_data if self.router is not None else self.personal
            plan.seals = BatchSeals.plan(spec, ((run, step) for run, step, _, _ in items), heads, self.keys)
        if new_runs:
            plan.new_runs = list(new_runs.values())
            plan.shared = self._shared_run_ids(new_runs)
        return plan

    def _shared_run_ids(self, new_runs: Mapping[UUID, tuple[str, str]]) -> set[UUID]:
        """New runs whose run id another tenant uses too (stored, or new in this batch)."""
        tenants: dict[str, set[str]] = {}
        for tenant, run_id in new_runs.values():
            tenants.setdefault(run_id, set()).add(tenant)
        for run_id, stored in self.recorder.tenants_of(list(tenants)).items():
            tenants[run_id] |= stored
        return {run for run, (tenant, run_id) in new_runs.items() if tenants[run_id] - {tenant}}

    def _heads(self, runs: Iterable[UUID]) -> dict[UUID, RunHead]:
        heads: dict[UUID, RunHead] = {}
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

    def resume(self, partitions: Iterable[TopicPartition]) -> bool:
        """Seek each partition to just after the offset the store last applied, once
        the broker's log is shown to be the one that offset was read from.

        False when the store or the broker is away: those partitions are then owed a
        resume, and no batch is applied until it succeeds. The consumer may already
        have read past a failed batch; a later batch would pass the stored position
        check (its offsets are ahead) and skip what lies between."""
        partitions = list(partitions)
        try:
            self._resume(partitions)
        except (PersistenceError, KafkaError, OSError) as error:
            self.owed.update(partitions)
            log.warning("could not resume from stored positions yet (%s); reading nothing until then", error)
            return False
        self.owed.difference_update(partitions)
        return True

    def _resume(self, partitions: list[TopicPartition]) -> None:
        stored = self._checked({tp: self._stored(partitions).get(tp) for tp in partitions})
        for tp in partitions:
            position = stored.get(tp)
            if position is not None:
                self.consumer.seek(tp, position.offset + 1)
            else:
                self.consumer.seek_to_beginning(tp)
        log.info(
            "resumed %s from stored positions %s",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions),
            {f"{tp.topic}/{tp.partition}": p.offset for tp, p in stored.items() if p} or "{}",
        )

    def check_assigned(self) -> None:
        """Between batches, now and then: is each stored position still in the broker's
        log? A broker restarted or a topic recreated under a running consumer is
        otherwise only noticed if the new log is shorter than the old one."""
        self.next_check = time.monotonic() + self.check_every
        assigned = list(self.consumer.assignment())
        try:
            stored = self._stored(assigned)
            checked = self._checked(dict(stored))
        except (PersistenceError, KafkaError, OSError) as error:
            log.warning("could not check stored positions against the broker: %s", error)
            return
        for tp in assigned:
            if tp in stored and checked.get(tp) is None:
                self.cache.clear()
                self.consumer.seek_to_beginning(tp)

    def _stored(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Position]:
        names = {position_name(tp.topic, tp.partition): tp for tp in partitions}
        return {names[name]: position for name, position in self.recorder.positions(names).items()}

    def _checked(
        self, stored: Mapping[TopicPartition, Position | None]
    ) -> dict[TopicPartition, Position | None]:
        known = {tp: p for tp, p in stored.items() if p is not None}
        if not self.probe or not known:
            return dict(stored)
        verdicts = check_positions(known, self.probe)
        checked: dict[TopicPartition, Position | None] = dict(stored)
        for tp, verdict in verdicts.items():
            name = position_name(tp.topic, tp.partition)
            if verdict.anchor is not None:
                self.recorder.move_anchor(name, verdict.anchor)
            if verdict.gap:
                log.error("%s/%d: %s", tp.topic, tp.partition, verdict.reason)
                self.recorder.record_incident("position_gap", name, reason=verdict.reason)
                checked[tp] = None  # from the log's start, which is after the stored position
            if verdict.reset:
                log.error(
                    "%s/%d: %s; re-reading the partition from its start (event ids make the "
                    "re-read events duplicates, never doubles)",
                    tp.topic,
                    tp.partition,
                    verdict.reason,
                )
                self.recorder.reset_position(name, reason=verdict.reason, stored_offset=known[tp].offset)
                self.totals.resets += 1
                checked[tp] = None
        return checked

    def _commit_offsets(self, batch: Polled) -> None:
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


def _describe(batch: Polled) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{r[0].offset}-{r[-1].offset}" for tp, r in batch.items())
