"""The readiness report's data: the tenant's receipts (one workflow, runs started since a
time), streamed from the receipts view into domain/readiness.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Composed

from domain.policy import ReadinessThresholds as Thresholds
from domain.readiness import Readiness, readiness
from domain.receipt_model import Receipt

BATCH = 500


def lane_readiness(
    datastore: PostgresDatastore,
    receipts: Composed,
    runs: Composed,
    tenant: str,
    workflow: str | None = None,
    since: datetime | None = None,
    thresholds: Thresholds | None = None,
) -> Readiness:
    return readiness(_receipts(datastore, receipts, runs, tenant, workflow, since), thresholds)


def _receipts(
    datastore: PostgresDatastore,
    receipts: Composed,
    runs: Composed,
    tenant: str,
    workflow: str | None,
    since: datetime | None,
) -> Iterator[Receipt]:
    where: list[Composable] = [SQL("u.tenant = %s")]
    params: list[Any] = [tenant]
    if workflow is not None:
        where.append(SQL("u.workflow = %s"))
        params.append(workflow)
    if since is not None:
        where.append(SQL("u.started_at >= %s"))
        params.append(since)
    statement = SQL("SELECT r.document FROM {} r JOIN {} u USING (run_key) WHERE {}").format(
        receipts, runs, SQL(" AND ").join(where)
    )
    # A server-side cursor (it needs a transaction): a tenant's receipts stream, never all in memory.
    with (
        datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(name="readiness", row_factory=tuple_row) as curs,
    ):
        curs.execute(statement, params)
        while rows := curs.fetchmany(BATCH):
            for (document,) in rows:
                yield Receipt.model_validate_json(document)
