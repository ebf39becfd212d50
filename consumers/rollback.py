"""The rollback consumer: reverse events in, their outcomes recorded as steps.

A consumer group on `agent-steps.reverse`. Each reverse event goes to the adapter
configured for its target system (infra/rollback), and what became of it is
published to `agent-steps` as a step (`action.reverted`, `record.corrected` or
`rollback.failed`), which ingest records like any other. One record at a time:
reverse events are rare and each touches a real system, so the loop stays
plain — poll → dispatch → publish the outcome (confirmed) → commit its offset.

Exactly once in effect, not in delivery: a crash after the target changed and
before the offset was committed delivers the reverse event again; the adapters
are idempotent by its id (a git trailer, the webhook-id) and every outcome's id
derives from it, so the repeat changes nothing at the target and records nothing
twice. A value that is not a reverse event is dead-lettered to `<topic>.dlq`
(same headers as ingest's) and the loop goes on. A broker that will not take an
outcome stops the loop without committing: the supervisor restarts it and the
reverse event comes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.dead_letters import DeadLetter, LetterProducer
from domain import rollback
from domain.rollback import ReverseEvent
from domain.steps import StepEvent
from infra.publisher import Publisher, PublishError
from infra.rollback import Adapter, Corrected, Failed, Outcome, Reverted
from schemas import DecodeError
from schemas.reverse import decode_reverse

log = logging.getLogger(__name__)


class ReverseConsumer(Protocol):
    """What the loop asks of a Kafka consumer (kafka-python's KafkaConsumer)."""

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...
    def commit(self, offsets: Any = None) -> None: ...
    def close(self, autocommit: bool = True) -> None: ...


class RollbackWorker:
    def __init__(
        self,
        consumer: ReverseConsumer,
        outcomes: Publisher,
        letters: LetterProducer,
        dlq_topic: str,
        adapters: Mapping[str, Adapter],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.consumer = consumer
        self.outcomes = outcomes
        self.letters = letters
        self.dlq_topic = dlq_topic
        self.adapters = adapters
        self.clock = clock
        self.handled = 0
        self.dead_lettered = 0

    def run(self, should_stop: Callable[[], bool], poll_timeout_ms: int = 200) -> None:
        """The loop: until told to stop (SIGTERM finishes the reverse event in hand)."""
        while not should_stop():
            batch = self.consumer.poll(timeout_ms=poll_timeout_ms, max_records=1)
            for tp, records in batch.items():
                for record in records:
                    self.handle(record)
                    self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})

    def handle(self, record: Any) -> StepEvent | None:
        """Dispatch one reverse event and publish its outcome; None for a dead letter."""
        where = f"{record.topic}/{record.partition}@{record.offset}"
        try:
            reverse = decode_reverse(record.value or b"")
        except DecodeError as error:
            self._dead_letter(record, error)
            log.warning("dead-lettered %s: %s", where, error)
            return None
        outcome = self.dispatch(reverse)
        step = self.outcome_step(reverse, outcome)
        self.outcomes.publish(step)
        self.outcomes.flush()  # confirmed before the offset moves past the reverse event
        self.handled += 1
        log.info(
            "%s run %s step %s: %s (%s)",
            where,
            reverse.run_id,
            reverse.step_id,
            step.type,
            reverse.reverse_id,
        )
        return step

    def dispatch(self, reverse: ReverseEvent) -> Outcome:
        system = reverse.target.system
        adapter = self.adapters.get(system)
        if adapter is None:
            known = ", ".join(sorted(self.adapters)) or "none"
            return Failed(f"no rollback adapter for target system {system!r} (configured: {known})", False)
        try:
            return adapter.apply(reverse)
        except Exception as error:  # an adapter's bug must not stop every other rollback
            log.exception("adapter for %s failed on %s", system, reverse.reverse_id)
            return Failed(f"the {system} adapter failed: {type(error).__name__}: {error}", True)

    def outcome_step(self, reverse: ReverseEvent, outcome: Outcome) -> StepEvent:
        at = self.clock()
        match outcome:
            case Reverted():
                return rollback.reverted(
                    reverse,
                    reverse_ref=outcome.reverse_ref,
                    verified=outcome.verified,
                    note=outcome.note,
                    at=at,
                )
            case Corrected():
                return rollback.corrected(reverse, correction=outcome.correction, at=at)
            case Failed():
                return rollback.failed(reverse, error=outcome.error, retryable=outcome.retryable, at=at)

    def _dead_letter(self, record: Any, error: DecodeError) -> None:
        letter = DeadLetter(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value or b"",
            error.reason,
            str(error),
        )
        future = self.letters.send(
            self.dlq_topic, key=record.key, value=letter.value, headers=letter.headers()
        )
        self.letters.flush()
        if future.failed():
            raise PublishError(
                f"dead letter for {record.topic}/{record.partition}@{record.offset} not accepted"
            )
        self.dead_lettered += 1

    def close(self) -> None:
        self.consumer.close(autocommit=False)
        self.outcomes.close()
