"""The decisions topic (`agent-steps.decisions`) from Kafka's side: where a run's notices go,
what the topic already holds, and waiting for one step's decision.

Each message is one `DecisionNotice` as JSON, keyed by run id like `agent-steps`, with
the log position of the decision it reports in a `position` header. The relay
(projections/decisions.py) publishes in log order, partition by partition, so the
last message of a partition says how far that partition has been published.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from domain.errors import Unavailable
from domain.notices import DecisionNotice

POSITION_HEADER = "position"


def partition_for(run_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `run_id`."""
    return int(murmur2(run_id.encode()) & 0x7FFFFFFF) % partitions


def _partitions(consumer: KafkaConsumer, topic: str, timeout: float = 15.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while not (found := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise DecisionsUnavailable(f"topic {topic} has no partitions (does it exist?)")
        time.sleep(0.1)
    return [TopicPartition(topic, p) for p in sorted(found)]


def published_positions(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's last published log position (partitions with none are absent).

    Reads each partition's last batch: ListOffsets(latest) is its end on Kafka and the
    start of its last batch on Tansu 0.6, so reading from one before it to the high
    watermark of the fetch covers both."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    try:
        parts = _partitions(consumer, topic)
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        wanted = {tp for tp in parts if ends[tp] > 0}
        for tp in wanted:
            consumer.seek(tp, max(0, ends[tp] - 1))
        last: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while wanted:
            for tp, records in consumer.poll(timeout_ms=100).items():
                for record in records:
                    last[tp.partition] = max(last.get(tp.partition, -1), _position(record.headers))
            for tp in list(wanted):
                highwater = consumer.highwater(tp)
                if highwater is not None and consumer.position(tp) >= highwater:
                    wanted.discard(tp)
            if time.monotonic() > deadline:
                raise DecisionsUnavailable(f"could not read the end of {topic} within 15 s")
        return last
    finally:
        consumer.close()


def _position(headers: list[tuple[str, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == POSITION_HEADER:
            return int(value)
    return -1


class DecisionsUnavailable(Unavailable):
    title = "Decisions topic unavailable"


class NoDecisionYet(Unavailable, TimeoutError):
    title = "No decision yet"

    def __init__(self, run_id: str, step_id: str, waited: float) -> None:
        super().__init__(f"no final decision on step {step_id!r} of run {run_id!r} after {waited:.1f} s")


class DecisionWaiter:
    """What a platform gating execution on the service's decisions uses: read the run's
    partition of the decisions topic until the step's first final notice."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        consumer_of: Callable[[], KafkaConsumer] | None = None,
    ) -> None:
        self.topic = topic
        self._consumer_of = consumer_of or (
            lambda: KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
        )

    def wait(
        self, tenant: str, run_id: str, step_id: str, timeout: float, since: datetime | None = None
    ) -> DecisionNotice:
        """The first final notice about `step_id` (published at or after `since`, default: any)."""
        started = time.monotonic()
        consumer = self._consumer_of()
        try:
            parts = _partitions(consumer, self.topic)
            tp = parts[partition_for(run_id, len(parts))]
            consumer.assign([tp])
            self._seek(consumer, tp, since)
            about = (tenant, run_id, step_id)
            while (left := timeout - (time.monotonic() - started)) > 0:
                for records in consumer.poll(timeout_ms=int(min(left, 0.1) * 1000) or 1).values():
                    for record in records:
                        found = _notice(record.value)
                        if found and found.final and (found.tenant, found.run_id, found.step_id) == about:
                            return found
            raise NoDecisionYet(run_id, step_id, time.monotonic() - started)
        finally:
            consumer.close()

    @staticmethod
    def _seek(consumer: KafkaConsumer, tp: TopicPartition, since: datetime | None) -> None:
        if since is None:
            consumer.seek_to_beginning(tp)
            return
        # A little before: the broker stamps a message when it appends it.
        found = consumer.offsets_for_times({tp: int((since - timedelta(seconds=5)).timestamp() * 1000)})
        offset = found.get(tp)
        if offset is None:
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, offset.offset)


def _notice(value: Any) -> DecisionNotice | None:
    try:
        return DecisionNotice.model_validate_json(value)
    except ValueError:
        return None  # not ours to judge: the relay writes every message of this topic
