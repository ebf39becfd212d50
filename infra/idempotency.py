"""`Idempotency-Key` for requests that act (asking for a rollback): the same key with the
same body gets the first answer again, with another body a 422, and while the first is
still being handled a 409. Keys are per tenant, in `receipts_idempotency`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from domain.errors import Conflict, Invalid

TABLE = "receipts_idempotency"


class KeyInUse(Conflict):
    title = "Request still being handled"


@dataclass(frozen=True)
class Answered:
    status: int
    body: dict[str, Any]


class IdempotencyTable:
    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier(TABLE))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, key text NOT NULL, "
            "request text NOT NULL, status int, answer text, at timestamptz NOT NULL, "
            "PRIMARY KEY (tenant, key))"
        ).format(self.table)


def request_digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def once(
    datastore: PostgresDatastore,
    schema: str,
    tenant: str,
    key: str,
    request: Any,
    handle: Callable[[], Answered],
) -> Answered:
    """`handle()`'s answer, or the one a request with this key got before."""
    table = IdempotencyTable(schema).table
    digest = request_digest(request)
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL(
                "INSERT INTO {} (tenant, key, request, at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING key"
            ).format(table),
            (tenant, key, digest, datetime.now(UTC)),
        )
        claimed = curs.fetchone() is not None
        if not claimed:
            curs.execute(
                SQL("SELECT request, status, answer FROM {} WHERE tenant = %s AND key = %s").format(table),
                (tenant, key),
            )
            row = curs.fetchone()
    if not claimed:
        assert row is not None
        if row["request"] != digest:
            raise Invalid("Idempotency-Key", "this key was used for another request: use a new key")
        if row["status"] is None:
            raise KeyInUse("a request with this Idempotency-Key is still being handled: try again shortly")
        return Answered(row["status"], json.loads(row["answer"]))
    try:
        answered = handle()
    except BaseException:
        with datastore.transaction(commit=True) as curs:  # nothing was done: the key is free again
            curs.execute(SQL("DELETE FROM {} WHERE tenant = %s AND key = %s").format(table), (tenant, key))
        raise
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL("UPDATE {} SET status = %s, answer = %s WHERE tenant = %s AND key = %s").format(table),
            (answered.status, json.dumps(answered.body), tenant, key),
        )
    return answered
