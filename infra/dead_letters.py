"""Dead letters: values that are not valid steps, kept whole with the reason.

They are written to PostgreSQL in the same transaction as the batch that
passes them, so a position never moves past a value that is not kept
somewhere; a relay then publishes them to `<topic>.dlq`. A letter the DLQ
topic refuses (too large for the broker) stays in PostgreSQL, marked `kept`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier

REASON = "receipts.reason"
ERROR = "receipts.error"
SOURCE_TOPIC = "receipts.source.topic"
SOURCE_PARTITION = "receipts.source.partition"
SOURCE_OFFSET = "receipts.source.offset"
LETTER_ID = "receipts.dead_letter.id"


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


class DeadLetterTable:
    """`receipts_dead_letters`: every dead letter, published to the DLQ topic or kept."""

    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_dead_letters"))

    def create_statement(self) -> Composed:
        # One letter per source record: a batch re-read after a crash or a lost
        # position finds its letters already there.
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            "id bigserial PRIMARY KEY, topic text NOT NULL, partition int NOT NULL, "
            '"offset" bigint NOT NULL, key bytea, value bytea NOT NULL, reason text NOT NULL, '
            "error text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), "
            'published_at timestamptz, kept text, UNIQUE (topic, partition, "offset", reason))'
        ).format(self.table)

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
                'SELECT id, topic, partition, "offset", key, value, reason, error, recorded_at FROM {} '
                "WHERE published_at IS NULL AND kept IS NULL ORDER BY id LIMIT %s"
            ).format(self.table),
            (limit,),
        )
        return [
            StoredLetter(
                row[0],
                DeadLetter(row[1], row[2], row[3], _bytes(row[4]), bytes(row[5]), row[6], row[7]),
                row[8],
            )
            for row in (tuple(r.values()) if isinstance(r, dict) else r for r in curs.fetchall())
        ]

    def published(self, curs: psycopg.Cursor[Any], ids: Sequence[int]) -> None:
        curs.execute(
            SQL("UPDATE {} SET published_at = now() WHERE id = ANY(%s)").format(self.table), (list(ids),)
        )

    def keep(self, curs: psycopg.Cursor[Any], letter_id: int, why: str) -> None:
        curs.execute(SQL("UPDATE {} SET kept = %s WHERE id = %s").format(self.table), (why, letter_id))


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)
