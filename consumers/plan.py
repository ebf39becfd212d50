"""A poll batch's plan: its steps decoded and validated, then chained onto their runs'
heads into ready rows — everything the ingest loop does before it takes a lock.

A value that is not a step is a dead letter here, with its reason; nothing else
escapes (consumers/ingest.py applies the plan in one transaction).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from kafka.consumer.fetcher import ConsumerRecord

from consumers.sealing import BatchSeals
from consumers.signatures import Checked, SignatureCheck, Unvouched, handling, unsigned_refused
from domain.policy import PublisherRules
from domain.routing import Router, RoutingSoFar
from domain.run import Entry, RunHead
from domain.steps import StepEvent, flag, reserved_for_service
from domain.vouches import PUBLISHER_HEADER, Vouch
from infra.dead_letters import DeadLetter
from infra.recorder import Position
from infra.rows import CopyData, Row, StepStates
from infra.sealing import SubjectKey, open_step, seal
from schemas import Codec, DecodeError, encode_json

log = logging.getLogger(__name__)


class HeadCache:
    """Each open run's head, least recently used evicted: memory stays bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heads: OrderedDict[UUID, RunHead] = OrderedDict()

    def get(self, run: UUID) -> RunHead | None:
        head = self._heads.get(run)
        if head is not None:
            self._heads.move_to_end(run)
        return head

    def put_all(self, heads: Mapping[UUID, RunHead]) -> None:
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
    """What one poll batch will do to the store: its decoded steps, then (`chain`)
    its rows, made before any lock is taken.

    Chaining advances the heads in place (copying every run's event ids per
    batch costs more than the rest of planning): a batch that is then not
    committed must drop them, and a failure clears the whole cache.

    With a policy (`router`), each recorded `action.proposed` and `action.edited` is
    followed by the service's `policy.decided`, chained right after it in the same
    transaction. Its event id is the decision id (the step's id and the policy
    version), so a redelivered step, already recorded, decides nothing again.

    A known event id that arrives with other bytes is a suspect: once the COPY
    is done, `settle` asks the store what that id was recorded as. The same step
    encoded differently is a duplicate; different content is a conflict, flagged
    on the run and kept as a dead letter (`conflicting_duplicate`).
    """

    codec: Codec
    # Each step, with the publisher that vouches for it or why none does (consumers/signatures.py).
    items: list[tuple[UUID, StepEvent, ConsumerRecord, Checked]]
    dead: list[DeadLetter]
    positions: dict[str, Position]
    heads: dict[UUID, RunHead]
    recorded_at: datetime
    recorded: int = 0
    duplicates: int = 0
    flagged: int = 0
    suspects: list[tuple[UUID, StepEvent, ConsumerRecord]] = field(default_factory=list)
    # (tenant, run id) of runs this batch opens, and those whose run id another tenant has.
    new_runs: list[tuple[str, str]] = field(default_factory=list)
    shared: set[UUID] = field(default_factory=set)
    ready: list[Row] = field(default_factory=list)
    copy_data: CopyData = field(default_factory=lambda: CopyData(b"", 0))
    router: Router | None = None
    decided: int = 0
    # Whose personal data each step carries, and the keys to seal it with (None: not sealed).
    seals: BatchSeals | None = None
    suspect_keys: dict[str, SubjectKey | None] = field(default_factory=dict)
    # Who vouches for the steps ingest writes itself (decisions, flags): the service, when it
    # holds its key (domain/vouches.py); None: they are stored unvouched.
    service: Vouch | None = None

    def rows(self) -> list[Row]:
        """The rows `chain` made, for the store's COPY."""
        return self.ready

    def chain(self) -> None:
        """Dedupe and hash-chain each step onto its run's head, and encode its row.

        The decoded steps are dropped once their rows are made: a batch waiting for
        the writer holds bytes, not a few KB of Python objects per event."""
        self.ready = list(self._rows())
        self.copy_data = CopyData.of(self.ready)
        self.items = []

    def _rows(self) -> Iterator[Row]:
        state = StepStates(self.recorded_at)
        heads = self.heads
        seals = self.seals
        for index, (run, step, record, checked) in enumerate(self.items):
            wire = record.value
            head = heads.get(run)
            notes: list[StepEvent] = []
            if head is None:
                head = heads[run] = RunHead()
                if run in self.shared:
                    notes.append(
                        flag(
                            step,
                            "tenant_changed",
                            f"run id {step.run_id!r} is recorded under another tenant too: one run's events "
                            f"were published under two isolation boundaries (this one: {step.tenant!r})",
                        )
                    )
            vouch = checked if isinstance(checked, Vouch) else None
            if not head.accepts(step):
                if head.arrived_otherwise(step, wire):
                    self.suspects.append((run, step, record))
                    if seals is not None:
                        self.suspect_keys[step.event_id] = seals.key_at(index, step)
                else:
                    self.duplicates += 1
                continue
            subjects = b""
            if seals is not None:
                stored, subjects = seals.stored(index, step, wire, head)
                seals.settle_head(index, head)
            else:
                stored = wire
            entry = _recorded(head.record(step, stored, self.recorded_at, vouch))
            if stored is not wire:
                head.arrived_as(step, wire)  # a redelivery is then known for what it is, cheaply
            self.recorded += 1
            yield state.row(run, entry, subjects)
            if self.router is not None and (decided := self._decision(head, step)) is not None:
                yield state.row(run, decided)
            if not notes and record.key is not None and record.key != step.run_id.encode():
                notes.append(
                    flag(
                        step,
                        "key_mismatch",
                        f"{step.type} arrived with Kafka key {record.key[:64]!r}, not its run id: "
                        "keyed otherwise, a run's events may land on several partitions and lose their order",
                    )
                )
            if isinstance(checked, Unvouched):
                notes.append(flag(step, checked.code, checked.message))
            for note in notes:
                self.flagged += 1
                yield state.row(run, _recorded(self._service_entry(head, note)))

    def _service_entry(self, head: RunHead, step: StepEvent) -> Entry | None:
        """`step`, written by the service itself, as `head`'s next entry."""
        return head.record(step, encode_json(step), self.recorded_at, self.service)

    def _decision(self, head: RunHead, step: StepEvent) -> Entry | None:
        """The service's decision on `step`, just recorded on `head`'s run, as its next entry."""
        assert self.router is not None
        routing = head.routing
        if routing is None:
            routing = head.routing = RoutingSoFar()
        routing.follow(step)
        decided = routing.decide(self.router, step, self._read_stored)
        if decided is None:
            return None
        entry = self._service_entry(head, decided)
        if entry is not None:
            self.decided += 1
        return entry

    def _read_stored(self, wire: bytes) -> StepEvent | None:
        """A step routing needs from the store (a restarted run's input or sources), its
        personal fields opened with the batch's key for its subject: rules match their words."""
        try:
            step = self.codec.decode(wire)
        except DecodeError as error:
            # A damaged row is `receipts verify`'s to report; routing goes on without it.
            log.warning("a stored step no longer decodes (%s); routing without it", error)
            return None
        if step.subject is not None and self.seals is not None:
            key = self.seals.keys.get((step.tenant, step.subject))
            if key is not None:
                return open_step(step, key)
        return step

    def settle(self, stored_wire: Callable[[UUID, str], bytes | None]) -> Iterator[Row]:
        state = StepStates(self.recorded_at)
        for run, step, record in self.suspects:
            original = stored_wire(run, step.event_id)
            key = self.suspect_keys.get(step.event_id)
            if original is not None and _same_step(self.codec, original, step, self.seals, key):
                self.duplicates += 1
                continue
            self.dead.append(
                _letter(
                    record,
                    "conflicting_duplicate",
                    f"event id {step.event_id!r} was already recorded in run {step.run_id!r} with other "
                    "content; the first version stands and this one is kept here",
                )
            )
            note = flag(
                step,
                "conflicting_duplicate",
                f"a second {step.type} with event id {step.event_id} and different content arrived "
                f"({record.topic}/{record.partition}@{record.offset}); the first version stands, the second "
                "is in the dead-letter queue",
                detail=hashlib.sha256(record.value).hexdigest(),
            )
            entry = self._service_entry(self.heads[run], note)
            if entry is None:
                continue  # this very content was flagged before
            self.flagged += 1
            yield state.row(run, entry)


def _recorded(entry: Entry | None) -> Entry:
    assert entry is not None, "a flag's id derives from a step recorded just now"
    return entry


def _same_step(
    codec: Codec, original: bytes, step: StepEvent, seals: BatchSeals | None, key: SubjectKey | None
) -> bool:
    try:
        stored = codec.decode(original)
        if seals is None or key is None:
            return stored == step
        subject = stored.subject
        if key.erased or subject is None:
            # Nothing tells what an erased subject's step said; the first version stands
            # and no copy of this one is kept (a dead letter would hold the plaintext).
            return True
        resealed = seal(seals.spec, step, subject, key)
        again = codec.decode(resealed) if resealed is not None else step
        return open_step(stored, key) == open_step(again, key)
    except DecodeError:
        return False


def _letter(record: ConsumerRecord, reason: str, error: str) -> DeadLetter:
    # PostgreSQL text cannot hold NUL, and an error naming a huge value must not be huge itself.
    text = error.replace("\x00", "\\x00")[:2000]
    return DeadLetter(
        record.topic, record.partition, record.offset, record.key, record.value or b"", reason, text
    )


def decode_value(codec: Codec, record: ConsumerRecord, dead: list[DeadLetter]) -> StepEvent | None:
    value = record.value
    try:
        if value is None:
            raise DecodeError("the message has no value (a tombstone?)")
        step = codec.decode(value)
    except DecodeError as error:
        dead.append(_letter(record, error.reason, str(error)))
        return None
    except MemoryError:
        raise  # the process is short of memory, not the value wrong: the batch is retried
    except Exception as error:
        log.exception(
            "decoding %s/%d@%d raised; dead-lettered", record.topic, record.partition, record.offset
        )
        dead.append(_letter(record, "undecodable", f"{type(error).__name__}: {error}"))
        return None
    if (reserved := reserved_for_service(step)) is not None:
        dead.append(_letter(record, "reserved_type", reserved))
        return None
    return step


def vouched(
    check: SignatureCheck | None,
    rules: PublisherRules,
    step: StepEvent,
    record: ConsumerRecord,
    dead: list[DeadLetter],
) -> tuple[bool, Checked]:
    """Whether `step` is to be recorded, and who vouches for it (or why nobody does); a step
    the tenant's policy refuses unvouched is a dead letter here, with the reason."""
    checked = check.check(step, record) if check else None
    if checked is None and unsigned_refused(rules, step.tenant) and not _signed(record):
        checked = Unvouched(
            "unsigned_event",
            f"{step.type} {step.event_id} arrived unsigned, and tenant {step.tenant!r} "
            "records signed events only",
        )
    if isinstance(checked, Unvouched) and handling(rules, step.tenant, checked) == "dead_letter":
        dead.append(_letter(record, checked.code, checked.message))
        return False, checked
    return True, checked


def _signed(record: ConsumerRecord) -> bool:
    return any(key == PUBLISHER_HEADER for key, _ in record.headers or ())
