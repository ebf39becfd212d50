"""Dead letters: values that are not valid steps, kept whole with the reason.

They are written to PostgreSQL in the same transaction as the batch that
passes them, so a position never moves past a value that is not kept
somewhere; a relay then publishes them to `<topic>.dlq`. A letter the DLQ
topic refuses (too large for the broker) stays in PostgreSQL, marked `kept`.

Once the topic holds a letter, PostgreSQL keeps its metadata, SHA-256 and length,
not its bytes: a bad value can carry a person's words, and the database is what
`receipts erase` answers for. A letter still held (pending, or kept) whose bytes
name an erased subject has its bytes dropped by the erasure the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from domain.personal import record_named, run_named

REASON = "receipts.reason"
ERROR = "receipts.error"
SOURCE_TOPIC = "receipts.source.topic"
SOURCE_PARTITION = "receipts.source.partition"
SOURCE_OFFSET = "receipts.source.offset"
LETTER_ID = "receipts.dead_letter.id"
# On a letter whose bytes an erasure dropped before it was published: the erasure's subject.
ERASED_FOR = "receipts.dead_letter.erased_for"
# What a letter's bytes become once the topic holds them, or an erasure dropped them.
_DROP_VALUE = "value_sha256 = sha256(value), value_length = length(value), value = ''::bytea"


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


@dataclass(frozen=True, slots=True)
class StoredLetter:
    id: int
    letter: DeadLetter
    recorded_at: datetime
    erased_for: str | None = None  # its bytes were dropped by the erasure of this subject


class DeadLetterTable:
    """`receipts_dead_letters`: every dead letter, published to the DLQ topic or kept."""

    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_dead_letters"))

    def create_statements(self) -> list[Composed]:
        # One letter per source record: a batch re-read after a crash or a lost
        # position finds its letters already there.
        return [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "id bigserial PRIMARY KEY, topic text NOT NULL, partition int NOT NULL, "
                '"offset" bigint NOT NULL, key bytea, value bytea NOT NULL, reason text NOT NULL, '
                "error text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), "
                'published_at timestamptz, kept text, UNIQUE (topic, partition, "offset", reason))'
            ).format(self.table),
            SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS value_sha256 bytea, "
                "ADD COLUMN IF NOT EXISTS value_length integer, ADD COLUMN IF NOT EXISTS erased_for text"
            ).format(self.table),
        ]

    def insert(self, curs: psycopg.Cursor[Any], letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        curs.executemany(
            SQL(
                'INSERT INTO {} (topic, partition, "offset", key, value, reason, error) '
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(self.table),
            [(d.topic, d.partition, d.offset, d.key, d.value, d.reason, d.error) for d in letters],
        )

    def pending(self, curs: psycopg.Cursor[Any], limit: int = 500) -> list[StoredLetter]:
        """Letters neither published nor kept, oldest first."""
        curs.execute(
            SQL(
                'SELECT id, topic, partition, "offset", key, value, reason, error, recorded_at, erased_for '
                "FROM {} WHERE published_at IS NULL AND kept IS NULL ORDER BY id LIMIT %s"
            ).format(self.table),
            (limit,),
        )
        return [
            StoredLetter(
                row[0],
                DeadLetter(row[1], row[2], row[3], _bytes(row[4]), bytes(row[5]), row[6], row[7]),
                row[8],
                row[9],
            )
            for row in (tuple(r.values()) if isinstance(r, dict) else r for r in curs.fetchall())
        ]

    def published(self, curs: psycopg.Cursor[Any], ids: Sequence[int]) -> None:
        """The topic holds these letters now: their bytes leave PostgreSQL (digest and length stay)."""
        curs.execute(
            SQL("UPDATE {} SET published_at = now(), " + _DROP_VALUE + " WHERE id = ANY(%s)").format(
                self.table
            ),
            (list(ids),),
        )

    def erase(self, curs: psycopg.Cursor[Any], subject: str) -> int:
        """Drop the bytes of every letter still held whose bytes name `subject` (how many).

        A dead letter may not decode, so it is searched, not read: for the subject as
        published, for a record's system and id both (a subject derived from the record a
        run works on, `system/kind/id`), or for a run id (`run/<id>`). A letter that spells
        them with JSON escapes is not found; one that names them in passing is dropped too:
        for a letter, losing a bad value's bytes costs less than keeping a person's words."""
        spellings = [[subject.encode()], *_spellings(subject)]
        found = " OR ".join(
            "(" + " AND ".join(["position(%s in value) > 0"] * len(s)) + ")" for s in spellings
        )
        curs.execute(
            SQL(
                "UPDATE {} SET erased_for = %s, "
                + _DROP_VALUE
                + " WHERE length(value) > 0 AND ("
                + found
                + ")"
            ).format(self.table),
            (subject, *(needle for needles in spellings for needle in needles)),
        )
        return curs.rowcount

    def keep(self, curs: psycopg.Cursor[Any], letter_id: int, why: str) -> None:
        curs.execute(SQL("UPDATE {} SET kept = %s WHERE id = %s").format(self.table), (why, letter_id))


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _spellings(subject: str) -> list[list[bytes]]:
    """What else, besides itself, a subject is spelled as in a step's bytes: each list's
    members all present (in JSON or Avro alike, each is a string's raw bytes)."""
    if (run := run_named(subject)) is not None:
        return [[run.encode()]]
    if (record := record_named(subject)) is not None:
        system, _, record_id = record
        return [[system.encode(), record_id.encode()]]
    return []
