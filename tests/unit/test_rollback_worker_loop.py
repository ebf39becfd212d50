"""The rollback loop's failure paths, with fakes of the broker: a failure commits nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka.structs import TopicPartition

from consumers.rollback import RollbackWorker
from domain.rollback import ReverseEvent
from infra.publisher import Publisher, PublishError
from infra.rollback import Failed, Outcome, Reverted
from schemas import Codec
from schemas.reverse import encode_reverse
from tests.fakes import FakeProducer, SendResult

TP = TopicPartition("steps.reverse", 0)
NOW = datetime(2025, 3, 3, 10, tzinfo=UTC)


def _reverse(reverse_id: str = "rev-1", system: str = "crm") -> ReverseEvent:
    return ReverseEvent.model_validate(
        {
            "reverse_id": reverse_id,
            "rollback_id": "rb-1",
            "tenant": "default",
            "run_id": "run-1",
            "step_id": "s-1",
            "executed_event_id": "e-1",
            "method": "amend",
            "verb": "add_note",
            "target": {"system": system, "kind": "note", "id": "n-1"},
            "reason": "wrong note",
            "requested_at": NOW,
        }
    )


@dataclass
class Record:
    offset: int
    value: bytes
    topic: str = TP.topic
    partition: int = TP.partition
    key: bytes = b"run-1"


@dataclass
class FakeConsumer:
    records: list[Record]
    commits: list[int] = field(default_factory=list)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        return {TP: [self.records.pop(0)]} if self.records else {}

    def commit(self, offsets: Any = None) -> None:
        self.commits.extend(o.offset for o in offsets.values())

    def close(self, autocommit: bool = True) -> None:
        pass


@dataclass
class LetterBox:
    refuse: bool = False
    letters: list[tuple[str, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> SendResult:
        self.letters.append((topic, value, headers))
        return SendResult(TimeoutError("dlq away") if self.refuse else None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Exploding:
    def apply(self, reverse: ReverseEvent) -> Outcome:
        raise RuntimeError("adapter bug")


class Fixed:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.calls = 0

    def apply(self, reverse: ReverseEvent) -> Outcome:
        self.calls += 1
        return self.outcome


def _worker(
    records: list[Record],
    adapters: dict[str, Any],
    *,
    producer: FakeProducer | None = None,
    letters: LetterBox | None = None,
) -> tuple[RollbackWorker, FakeConsumer, FakeProducer]:
    consumer = FakeConsumer(records)
    producer = producer or FakeProducer()
    outcomes = Publisher(producer=producer, topic="steps", retries=1, encoding="json")
    worker = RollbackWorker(
        consumer, outcomes, letters or LetterBox(), "steps.dlq", adapters, clock=lambda: NOW
    )
    return worker, consumer, producer


def _run(worker: RollbackWorker, consumer: FakeConsumer) -> None:
    worker.run(lambda: not consumer.records, poll_timeout_ms=0)


def test_each_outcome_is_published_before_its_offset_is_committed() -> None:
    adapter = Fixed(Reverted("note-1@v3", verified=True))
    records = [Record(0, encode_reverse(_reverse("rev-1"))), Record(1, encode_reverse(_reverse("rev-2")))]
    worker, consumer, producer = _worker(records, {"crm": adapter})
    _run(worker, consumer)
    assert consumer.commits == [1, 2] and adapter.calls == 2
    steps = [Codec().decode(value) for value in producer.accepted]
    assert [(s.type, s.data.reverse_id) for s in steps] == [  # type: ignore[attr-defined]
        ("action.reverted", "rev-1"),
        ("action.reverted", "rev-2"),
    ]


def test_an_adapter_that_raises_is_a_retryable_failure_and_the_loop_goes_on() -> None:
    records = [
        Record(0, encode_reverse(_reverse("rev-1"))),
        Record(1, encode_reverse(_reverse("rev-2", "ok"))),
    ]
    worker, consumer, producer = _worker(records, {"crm": Exploding(), "ok": Fixed(Failed("locked", False))})
    _run(worker, consumer)
    first, second = (Codec().decode(value) for value in producer.accepted)
    assert (first.type, first.data.retryable) == ("rollback.failed", True)  # type: ignore[attr-defined]
    assert "RuntimeError: adapter bug" in first.data.error  # type: ignore[attr-defined]
    assert (second.data.error, second.data.retryable) == ("locked", False)  # type: ignore[attr-defined]
    assert consumer.commits == [1, 2]


def test_an_outcome_the_broker_will_not_take_commits_nothing() -> None:
    worker, consumer, _ = _worker(
        [Record(0, encode_reverse(_reverse()))],
        {"crm": Fixed(Reverted("x", True))},
        producer=FakeProducer(fail_first=99),
    )
    with pytest.raises(PublishError):
        _run(worker, consumer)
    assert consumer.commits == []


def test_a_dead_letter_the_broker_will_not_take_commits_nothing() -> None:
    worker, consumer, _ = _worker([Record(0, b"garbage")], {}, letters=LetterBox(refuse=True))
    with pytest.raises(PublishError, match="dead letter"):
        _run(worker, consumer)
    assert consumer.commits == []


def test_a_dead_letter_keeps_the_value_and_says_why() -> None:
    letters = LetterBox()
    worker, consumer, producer = _worker([Record(7, b"garbage")], {}, letters=letters)
    _run(worker, consumer)
    ((topic, value, headers),) = letters.letters
    assert (topic, value) == ("steps.dlq", b"garbage") and dict(headers)["receipts.reason"] == b"not_a_step"
    assert dict(headers)["receipts.source.offset"] == b"7" and consumer.commits == [8]
    assert producer.accepted == []


def test_bytes_sent_to_another_topic_are_retried_to_that_topic() -> None:
    producer = FakeProducer(fail_first=1)
    publisher = Publisher(producer=producer, topic="steps", retries=2)
    publisher.send("steps.reverse", b"run-1", encode_reverse(_reverse()))
    publisher.flush()
    assert [topic for topic, _, _ in producer.sent] == ["steps.reverse", "steps.reverse"]
    assert producer.accepted == [encode_reverse(_reverse())]
