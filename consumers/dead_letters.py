"""Dead letters: values that are not valid steps, kept whole with the reason."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaProducer

log = logging.getLogger(__name__)

REASON = "receipts.reason"
ERROR = "receipts.error"
SOURCE_TOPIC = "receipts.source.topic"
SOURCE_PARTITION = "receipts.source.partition"
SOURCE_OFFSET = "receipts.source.offset"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    error: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (REASON, self.reason.encode()),
            (ERROR, self.error.encode()),
            (SOURCE_TOPIC, self.topic.encode()),
            (SOURCE_PARTITION, str(self.partition).encode()),
            (SOURCE_OFFSET, str(self.offset).encode()),
        ]


class DeadLetterSink(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Make the letters durable, or raise. Called before a batch's position moves."""

    def close(self) -> None:
        """Release connections."""


class KafkaDeadLetters:
    """Publishes dead letters to `<topic>.dlq` and waits until the broker has them."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout = timeout

    def send(self, letters: Sequence[DeadLetter]) -> None:
        futures = []
        for letter in letters:
            log.warning(
                "dead letter %s/%d@%d: %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
                letter.error,
            )
            futures.append(
                self.producer.send(self.topic, key=letter.key, value=letter.value, headers=letter.headers())
            )
        if futures:
            self.producer.flush(self.timeout)
            for future in futures:
                future.get(timeout=self.timeout)  # raises if the broker refused it

    def close(self) -> None:
        self.producer.close()
