"""Events the views cannot apply, set aside so that one of them never stops the rest.

A stored step whose values PostgreSQL refuses in a view (a NUL in a text column,
an id too long for a btree index row) fails its whole page, and would fail it
again on every retry. The runner then finds the step(s) that fail alone and
records each here instead of applying it: its log position, run, the view that
refused it and why. Every view then leaves the step out (the views stay
consistent with each other and with a rebuild), and later pages that read the
run's history skip it too. `/health` and `receipts health` report these rows:
each is a gap someone must look at; the event itself stays in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed, Identifier

TABLE = "view_quarantine"
# A reason is the database's message; a long one is cut to this.
REASON_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Quarantined:
    position: int
    run_key: UUID
    view: str
    reason: str
    at: datetime


def table(schema: str) -> Composed:
    return SQL("{}.{}").format(Identifier(schema), Identifier(TABLE))


def create(curs: psycopg.Cursor[Any], schema: str) -> None:
    curs.execute(
        SQL(
            "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, run_key uuid NOT NULL, "
            "view text NOT NULL, reason text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        ).format(table(schema))
    )


def record(
    curs: psycopg.Cursor[Any], schema: str, position: int, run_key: UUID, view: str, reason: str
) -> None:
    curs.execute(
        SQL(
            "INSERT INTO {} (position, run_key, view, reason) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (position) DO NOTHING"
        ).format(table(schema)),
        # The reason may quote the bad value itself: keep it storable.
        (position, run_key, view, reason.replace("\x00", "\\0")[:REASON_LENGTH]),
    )


def latest(curs: psycopg.Cursor[Any], schema: str, limit: int = 5) -> tuple[int, list[Quarantined]]:
    """How many events are set aside, and the latest `limit` of them."""
    with curs.connection.cursor(row_factory=dict_row) as c:
        c.execute(SQL("SELECT count(*) AS n FROM {}").format(table(schema)))
        row = c.fetchone()
        count = int(row["n"]) if row else 0
        c.execute(
            SQL(
                "SELECT position, run_key, view, reason, at FROM {} ORDER BY at DESC, position DESC LIMIT %s"
            ).format(table(schema)),
            (limit,),
        )
        return count, [Quarantined(**r) for r in c.fetchall()]
