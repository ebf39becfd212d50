"""The rollback queue: every rollback asked for, and where it stands.

A view of whole runs: one row per `rollback.requested` in a run, with the
recovery its receipt folds (domain/recovery.py): who asked and why, each reverse
action with its outcome and reference, what stands, and the state — requested,
running, failed, partially reverted, corrected or reverted. `GET /rollbacks` and
`receipts rollbacks` list them newest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composable, Composed
from pydantic import Field

from domain.recovery import Recovery
from projections.bounds import Answer, Cursor, Text, decode_cursor, paged
from projections.views import Row, RunSoFar, WholeRunView

State = Literal["requested", "running", "failed", "partially reverted", "corrected", "reverted"]


class RollbackItem(Answer):
    run_id: str
    workflow: str | None
    recovery: Recovery


class RollbackFilter(Answer):
    tenant: Text | None = Field(
        default=None, description="optional: the caller's own tenant (the token decides it)"
    )
    state: State | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


class RollbacksPage(Answer):
    rollbacks: list[RollbackItem]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class Rollbacks(WholeRunView):
    name = "rollbacks"
    columns = ("run_key", "tenant", "seq", "state", "requested_at", "document")
    definition = """
        run_key uuid NOT NULL, tenant text NOT NULL, seq int NOT NULL, state text NOT NULL,
        requested_at timestamptz NOT NULL, document text NOT NULL, PRIMARY KEY (run_key, seq)"""
    indexes = (
        "(tenant, requested_at DESC, run_key DESC, seq DESC)",
        "(tenant, state, requested_at DESC, run_key DESC, seq DESC)",
    )
    keyed = ("tenant", "state")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        r = run.receipt
        for seq, recovery in enumerate(r.recovery):
            item = RollbackItem(run_id=r.run_id, workflow=r.workflow, recovery=recovery)
            yield run.key, r.tenant, seq, recovery.state, recovery.requested_at, item.model_dump_json()


def rollbacks(datastore: PostgresDatastore, table: Composed, tenant: str, f: RollbackFilter) -> RollbacksPage:
    where: list[Composable] = [SQL("tenant = %s")]
    params: list[Any] = [tenant]
    if f.state is not None:
        where.append(SQL("state = %s"))
        params.append(f.state)
    if f.cursor:
        at, key, seq = decode_cursor(f.cursor, 3)
        where.append(SQL("(requested_at, run_key, seq) < (%s, %s::uuid, %s::int)"))
        params += [at, key, seq]
    statement = SQL(
        "SELECT requested_at, run_key, seq, document FROM {} WHERE {} "
        "ORDER BY requested_at DESC, run_key DESC, seq DESC LIMIT %s"
    ).format(table, SQL(" AND ").join(where))
    with datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        curs.execute(statement, [*params, f.limit + 1])
        rows = curs.fetchall()
    rows, cursor = paged(rows, f.limit, "requested_at", "run_key", "seq")
    return RollbacksPage(
        rollbacks=[RollbackItem.model_validate_json(r["document"]) for r in rows], next_cursor=cursor
    )
