"""Dead letters, published: the relay from PostgreSQL to `<topic>.dlq`.

Ingest writes each dead letter in the transaction that moves the position past
it (infra.dead_letters), so none is lost to a crash or to a broker that is
away. This relay then publishes the pending ones, marks them published, and
keeps in PostgreSQL, marked and recorded as an incident, any letter the topic
refuses for its size: one oversize value must not block its partition. A
crash between publishing and marking publishes a letter again; its headers
(`receipts.dead_letter.id`, source topic/partition/offset) let readers dedupe.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from infra.dead_letters import (
    ERASED_FOR,
    ERROR,
    LETTER_ID,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    DeadLetter,
)
from infra.recorder import StepRecorder

__all__ = [
    "ERROR",
    "REASON",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "DeadLetter",
    "DeadLetterRelay",
]

log = logging.getLogger(__name__)
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class LetterProducer(Protocol):
    """What the relay asks of a Kafka producer (kafka-python's KafkaProducer)."""

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


class DeadLetterRelay:
    def __init__(
        self, producer: LetterProducer, topic: str, recorder: StepRecorder, timeout: float = 10.0
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.recorder = recorder
        self.timeout = timeout
        self.pending = True  # letters left by an earlier process are published first
        self.retry_at = 0.0
        self.failures = 0

    def publish_pending(self, force: bool = False) -> int:
        """Publish what is pending; returns how many were published. Never raises:
        a broker that is away leaves the letters pending (they are durable) and
        they are tried again with backoff."""
        if not (self.pending or force) or (not force and time.monotonic() < self.retry_at):
            return 0
        try:
            published = self._publish()
        except Exception as error:  # a broker away, a refusal, anything: ingest goes on
            self.failures += 1
            self.pending = True
            self.retry_at = time.monotonic() + min(0.5 * 2 ** (self.failures - 1), 30.0)
            log.warning(
                "dead letters not published yet (%s: %s); they are kept in PostgreSQL",
                type(error).__name__,
                error,
            )
            return 0
        self.failures = 0
        return published

    def _publish(self) -> int:
        recorder = self.recorder
        with recorder.datastore.transaction(commit=False) as curs:
            stored = recorder.letters.pending(curs)
        self.pending = len(stored) == 500  # more left than one round takes
        sent: list[tuple[int, Any]] = []
        kept: list[tuple[int, DeadLetter, str]] = []
        for item in stored:
            letter = item.letter
            log.warning(
                "dead letter %s/%d@%d: %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
                letter.error,
            )
            headers = [*letter.headers(), (LETTER_ID, str(item.id).encode())]
            if item.erased_for is not None:  # its bytes were dropped by an erasure before it went out
                headers.append((ERASED_FOR, item.erased_for.encode()))
            try:
                sent.append(
                    (
                        item.id,
                        self.producer.send(self.topic, key=letter.key, value=letter.value, headers=headers),
                    )
                )
            except _TOO_LARGE as error:
                kept.append((item.id, letter, str(error)))
        if sent:
            self.producer.flush(self.timeout)
        published = []
        for letter_id, future in sent:
            try:
                future.get(timeout=self.timeout)
            except _TOO_LARGE as error:
                kept.extend((i.id, i.letter, str(error)) for i in stored if i.id == letter_id)
            else:
                published.append(letter_id)
        with recorder.datastore.transaction(commit=True) as curs:
            recorder.letters.published(curs, published)
            for letter_id, letter, why in kept:
                text = f"too large for {self.topic} ({len(letter.value):,} bytes): {why}"
                recorder.letters.keep(curs, letter_id, text)
                recorder.health.record(
                    curs,
                    "dead_letter_kept",
                    f"{letter.topic}/{letter.partition}@{letter.offset}",
                    letter_id=letter_id,
                    reason=letter.reason,
                    size=len(letter.value),
                    why=text,
                )
                log.error("dead letter %d kept in PostgreSQL only: %s", letter_id, text)
        if len(published) + len(kept) < len(stored):
            raise RuntimeError(
                f"{len(stored) - len(published) - len(kept)} dead letter(s) not accepted by {self.topic}"
            )
        return len(published)

    def close(self) -> None:
        self.producer.close()
