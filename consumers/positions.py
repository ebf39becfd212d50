"""Is a stored Kafka position still a place in the broker's log?

Positions live in PostgreSQL, beside the events. The broker's log can change
under them: the embedded broker keeps messages in memory only and starts each
partition at offset 0 again; an external topic can be deleted and recreated;
retention deletes old records. A consumer that seeks to a stored offset in a
log that is not the one it was read from skips whatever the new log holds
below it, silently. So each position keeps an anchor (the first record applied
from the log, fingerprinted) and, before the consumer trusts a position, the
record at the anchor's offset is read back from the broker:

- the same record: the same log; resume after the stored offset;
- another record, or none while the log starts at or before the anchor: the
  log was replaced; forget the position and read the partition from its start
  (every event id already recorded is a duplicate, never a double);
- none because retention moved the log's start past the anchor: the same log,
  older; anchor again at the stored position (if it is still there), and if
  the log now starts after the stored position, records were deleted before
  they were ingested: a gap that is recorded, loudly, and cannot be undone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import OffsetOutOfRangeError

from infra.recorder import Mark, Position

log = logging.getLogger(__name__)


def fingerprint(record: ConsumerRecord) -> bytes:
    """Identifies a record within a partition's log: its key, value and timestamp."""
    digest = hashlib.blake2b(record.key or b"", digest_size=16)
    digest.update(b"\x00" + (record.value or b"") + b"\x00" + str(record.timestamp).encode())
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Seen:
    """What the broker holds at an offset: a record's fingerprint, or nothing
    (`found` False), or no answer in time (`known` False); and where its log starts."""

    found: bytes | None
    beginning: int
    known: bool = True


class LogProbe(Protocol):
    def look(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, Seen]:
        """The record at each offset, read from the broker."""

    def close(self) -> None:
        """Release the connection."""


@dataclass(frozen=True, slots=True)
class Verdict:
    reset: bool = False  # the log was replaced: forget the position
    gap: bool = False  # records were deleted before they were ingested
    anchor: Mark | None = None  # anchor again here (retention passed the old anchor)
    reason: str = ""


def check_positions(
    positions: Mapping[TopicPartition, Position], probe: LogProbe
) -> dict[TopicPartition, Verdict]:
    """A verdict for each position that needs action; positions that check out are absent."""
    anchored = {tp: p for tp, p in positions.items() if p.anchor is not None}
    seen = probe.look({tp: p.anchor.offset for tp, p in anchored.items() if p.anchor})
    verdicts: dict[TopicPartition, Verdict] = {}
    for tp, position in anchored.items():
        anchor = position.anchor
        assert anchor is not None
        at = seen.get(tp)
        if at is None or not at.known or at.found == anchor.fingerprint:
            continue
        if at.found is not None:
            verdicts[tp] = Verdict(
                reset=True,
                reason=f"the broker holds another record at offset {anchor.offset} than the one read "
                f"there before (stored position {position.offset}): the broker was restarted or the topic "
                "recreated",
            )
        elif at.beginning <= anchor.offset:
            verdicts[tp] = Verdict(
                reset=True,
                reason=f"the broker's log ends before offset {anchor.offset}, which was read before "
                f"(stored position {position.offset}): the broker was restarted or the topic recreated",
            )
        elif at.beginning > position.offset + 1:
            verdicts[tp] = Verdict(
                gap=True,
                reason=f"the broker deleted offsets {position.offset + 1}..{at.beginning - 1} (retention) "
                "before they were ingested: those records are lost",
            )
        else:
            verdicts[tp] = Verdict(anchor=position.last, reason="retention passed the anchor")
    return verdicts


class KafkaLogProbe:
    """Reads single records with a consumer of its own (no group, no commits)."""

    def __init__(self, bootstrap: str, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            # Out of range must be an answer ("nothing there"), not a silent reset.
            auto_offset_reset="none",
            fetch_max_wait_ms=50,
            max_poll_records=500,
        )

    def look(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, Seen]:
        if not offsets:
            return {}
        consumer = self.consumer
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        beginnings = consumer.beginning_offsets(list(offsets))
        found: dict[TopicPartition, bytes | None] = {}
        deadline = time.monotonic() + self.timeout
        while len(found) < len(offsets) and time.monotonic() < deadline:
            try:
                batch = consumer.poll(timeout_ms=100)
            except OffsetOutOfRangeError as error:
                for tp in error.args[0] if error.args and isinstance(error.args[0], dict) else ():
                    found[tp] = None
                    consumer.pause(tp)
                continue
            for tp, records in batch.items():
                if tp in found or not records:
                    continue
                first = records[0]
                found[tp] = fingerprint(first) if first.offset == offsets[tp] else None
                consumer.pause(tp)
        missing = [tp for tp in offsets if tp not in found]
        # Nothing came back in time: the record does not exist if the log ends at or
        # before it (Tansu answers ListOffsets(latest) low, so only "at or before" counts).
        ends = consumer.end_offsets(missing) if missing else {}
        consumer.resume(*consumer.paused())
        seen = {tp: Seen(found[tp], beginnings.get(tp, 0)) for tp in found}
        for tp in missing:
            known = ends.get(tp, 0) <= offsets[tp]
            seen[tp] = Seen(None, beginnings.get(tp, 0), known=known)
        return seen

    def close(self) -> None:
        self.consumer.close(autocommit=False)
