"""The questions an incident review asks, answered from the views.

Shared by the HTTP API and the CLI. Inputs and answers are pydantic models
(projections/answers.py); a bad input raises `BadQuery` naming the field, an
unknown run `RunNotFound`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from domain.evidence import Finding
from domain.policy import ReadinessThresholds as Thresholds
from domain.readiness import Readiness
from domain.receipt_model import Receipt
from domain.record_findings import final_state_unclear
from domain.run import run_uuid
from infra.policies import PolicyTable
from projections import quarantine
from projections.answers import (
    FindingsPage,
    RelatedRun,
    RelatedRuns,
    RunFilter,
    RunFinding,
    RunsPage,
    RunSummary,
    Touch,
    Use,
)
from projections.bounds import Answer, BadQuery, decode_cursor, paged
from projections.catalog import VIEWS
from projections.queue import QueueFilter, QueuePage, ReviewerQueue, reviewer_steps, waiting_steps
from projections.readiness import lane_readiness
from projections.rollbacks import RollbackFilter, RollbacksPage, rollbacks

# Answer and BadQuery are defined with the bounds; RelatedRuns, RunFilter and RunsPage with
# the other answers (projections/answers.py), importable from here too for bench/lookups.py.
__all__ = ["Answer", "BadQuery", "RelatedRuns", "RunFilter", "RunsPage"]

Clock = Callable[[], datetime]

_RUN_COLUMNS = tuple(RunSummary.model_fields)
_FINDING_COLUMNS = (
    "run_id, workflow, started_at, run_key, seq, code, severity, message, step_id, event_ids, count, step_ids"
)
_UNFINISHED_SEQ = 1_000_000  # sorts an overdue run's finding after its recorded ones


def _overdue(runs: str = "") -> SQL:
    """The runs view's form of domain.record_findings.final_state_unclear: no final state, and
    nothing recorded for the grace period (its instant is the one parameter)."""
    return SQL(f"{runs}final_state IS NULL AND {runs}last_recorded < %s")


class Queries:
    def __init__(
        self,
        datastore: PostgresDatastore,
        schema: str,
        unfinished_after: timedelta,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.datastore = datastore
        self.schema = schema
        self.unfinished_after = unfinished_after
        self.clock = clock
        self._views = {view.name: view(schema) for view in VIEWS}

    def _t(self, name: str) -> Composed:
        return self._views[name].identifier

    def _rows(self, statement: Composed, params: list[Any] | tuple[Any, ...]) -> list[dict[str, Any]]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
            curs.execute(statement, params)
            return curs.fetchall()

    @property
    def _overdue_before(self) -> datetime:
        return self.clock() - self.unfinished_after

    # --- runs ----------------------------------------------------------------------------------

    def runs(self, f: RunFilter) -> RunsPage:
        where: list[Composable] = [SQL("tenant = %s")]
        params: list[Any] = [f.tenant]
        for column, value in (
            ("workflow", f.workflow),
            ("final_state", f.final_state),
            ("agent", f.agent),
            ("model", f.model),
        ):
            if value is not None:
                where.append(SQL("{} = %s").format(Identifier(column)))
                params.append(value)
        if f.finding == "final_state_unclear":
            where.append(_overdue())
            params.append(self._overdue_before)
        elif f.finding is not None:
            where.append(SQL("finding_codes @> ARRAY[%s]::text[]"))
            params.append(f.finding)
        if f.reviewer is not None:
            where.append(SQL("reviewers @> ARRAY[%s]::text[]"))
            params.append(f.reviewer)
        _window(where, params, f.since, f.until)
        if f.text:
            where.append(SQL("input_ref ILIKE %s"))
            params.append("%" + f.text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%")
        if f.cursor:
            started, key = decode_cursor(f.cursor, 2)
            where.append(SQL("(started_at, run_key) < (%s, %s::uuid)"))
            params += [started, key]
        statement = SQL(
            "SELECT {}, run_key FROM {} WHERE {} ORDER BY started_at DESC, run_key DESC LIMIT %s"
        ).format(SQL(", ").join(map(Identifier, _RUN_COLUMNS)), self._t("runs"), SQL(" AND ").join(where))
        rows, cursor = paged(self._rows(statement, [*params, f.limit + 1]), f.limit, "started_at", "run_key")
        return RunsPage(
            runs=[RunSummary(**{c: row[c] for c in _RUN_COLUMNS}) for row in rows], next_cursor=cursor
        )

    def queue(self, tenant: str, f: QueueFilter) -> QueuePage:
        """The steps waiting for a person's decision (projections/queue.py)."""
        return waiting_steps(self.datastore, self._t("queue"), tenant, f)

    def reviewer_queue(self, tenant: str, f: ReviewerQueue) -> QueuePage:
        """What a reviewer with `f.roles` may decide, soonest to expire first (the console's)."""
        return reviewer_steps(self.datastore, self._t("queue"), tenant, f)

    def readiness(
        self,
        tenant: str,
        workflow: str | None = None,
        since: datetime | None = None,
        thresholds: Thresholds | None = None,
    ) -> Readiness:
        """Per workflow and lane: is it ready for more autonomy (projections/readiness.py), by
        `thresholds`, default the `[readiness]` of the policy in force (or the defaults)."""
        if thresholds is None:
            with self.datastore.transaction(commit=False) as curs:
                in_force = PolicyTable(self.schema).in_force(curs)
            thresholds = in_force.policy().readiness if in_force else None
        receipts, runs = self._t("receipts"), self._t("runs")
        return lane_readiness(self.datastore, receipts, runs, tenant, workflow, since, thresholds)

    def rollbacks(self, tenant: str, f: RollbackFilter) -> RollbacksPage:
        """Every rollback asked for, newest first (projections/rollbacks.py)."""
        return rollbacks(self.datastore, self._t("rollbacks"), tenant, f)

    # --- entities and sources ------------------------------------------------------------------

    def touched(
        self, system: str, kind: str, entity_id: str, tenant: str = "default", limit: int = 100
    ) -> RelatedRuns:
        """Runs that proposed, executed or reverted something on this record, latest first."""
        rows = self._related(
            "touches",
            "entity_id",
            [tenant, system, kind, entity_id],
            limit,
            "step_id, verb, state, at, event_id",
            "at",
        )
        runs: dict[str, RelatedRun] = {}
        for row in rows:
            run = runs.setdefault(row["run_id"], _related_run(row))
            run.touches.append(Touch(**{k: row[k] for k in Touch.model_fields}))
        return RelatedRuns(tenant=tenant, system=system, kind=kind, id=entity_id, runs=list(runs.values()))

    def relied_on(
        self,
        system: str,
        kind: str,
        source_id: str,
        tenant: str = "default",
        version: str | None = None,
        limit: int = 100,
    ) -> RelatedRuns:
        """Runs that relied on this document or record (only `version` of it, if given)."""
        params: list[Any] = [tenant, system, kind, source_id]
        rows = self._related(
            "sources",
            "source_id",
            params,
            limit,
            "step_id, version, retrieved_at, used_at, event_id",
            "used_at",
            version,
        )
        runs: dict[str, RelatedRun] = {}
        for row in rows:
            run = runs.setdefault(row["run_id"], _related_run(row))
            run.uses.append(Use(**{k: row[k] for k in Use.model_fields}))
        return RelatedRuns(
            tenant=tenant, system=system, kind=kind, id=source_id, version=version, runs=list(runs.values())
        )

    def _related(
        self,
        view: str,
        id_column: str,
        params: list[Any],
        limit: int,
        columns: str,
        at: str,
        version: str | None = None,
    ) -> list[dict[str, Any]]:
        # The latest `limit` runs first, then their rows: a busy record may have thousands.
        match = SQL("tenant = %s AND system = %s AND kind = %s AND {} = %s").format(Identifier(id_column))
        if version is not None:
            match += SQL(" AND version = %s")
            params = [*params, version]
        statement = SQL(
            "WITH hits AS (SELECT * FROM {v} WHERE {m}), "
            "latest AS (SELECT run_key, max({at}) AS last FROM hits GROUP BY run_key "
            "           ORDER BY last DESC LIMIT %s) "
            "SELECT h.run_id, r.workflow, r.final_state, r.started_at, {cols} "
            "FROM hits h JOIN latest l USING (run_key) LEFT JOIN {runs} r USING (run_key) "
            "ORDER BY l.last DESC, h.run_key, h.{at}"
        ).format(
            v=self._t(view),
            m=match,
            at=Identifier(at),
            cols=SQL(", ".join(f"h.{c}" for c in columns.split(", "))),
            runs=self._t("runs"),
        )
        return self._rows(statement, [*params, limit])

    # --- findings ------------------------------------------------------------------------------

    def findings(
        self,
        tenant: str = "default",
        code: str | None = None,
        severity: str | None = None,
        workflow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> FindingsPage:
        """Recorded findings, and runs left unfinished past the grace period, newest runs first."""
        recorded: list[Composable] = [SQL("tenant = %s")]
        overdue: list[Composable] = [SQL("tenant = %s"), _overdue()]
        rec_params: list[Any] = [tenant]
        over_params: list[Any] = [tenant, self._overdue_before]
        for column, value in (("code", code), ("severity", severity), ("workflow", workflow)):
            if value is None:
                continue
            recorded.append(SQL("{} = %s").format(Identifier(column)))
            rec_params.append(value)
            if column == "workflow":
                overdue.append(SQL("workflow = %s"))
                over_params.append(value)
        if (code not in (None, "final_state_unclear")) or severity not in (None, "warning"):
            overdue.append(SQL("false"))
        for where, params, seq_column in (
            (recorded, rec_params, SQL("seq")),
            (overdue, over_params, SQL(str(_UNFINISHED_SEQ))),
        ):
            _window(where, params, since, until)
            if cursor:
                started, key, seq = decode_cursor(cursor, 3)
                where.append(SQL("(started_at, run_key, {}) < (%s, %s::uuid, %s::int)").format(seq_column))
                params += [started, key, seq]
        statement = SQL(
            "SELECT {cols}, NULL::timestamptz AS last_recorded FROM {f} WHERE {rw} "
            "UNION ALL SELECT run_id, workflow, started_at, run_key, {seq}, 'final_state_unclear', "
            "'warning', '', NULL, '{{}}'::text[], 1, '{{}}'::text[], last_recorded FROM {r} WHERE {ow} "
            "ORDER BY started_at DESC, run_key DESC, seq DESC LIMIT %s"
        ).format(
            cols=SQL(_FINDING_COLUMNS),
            f=self._t("findings"),
            r=self._t("runs"),
            seq=SQL(str(_UNFINISHED_SEQ)),
            rw=SQL(" AND ").join(recorded),
            ow=SQL(" AND ").join(overdue),
        )
        rows, next_cursor = paged(
            self._rows(statement, [*rec_params, *over_params, limit + 1]),
            limit,
            "started_at",
            "run_key",
            "seq",
        )
        now = self.clock()
        found = []
        for row in rows:
            if row["last_recorded"] is not None:
                finding = final_state_unclear(None, row["last_recorded"], now, self.unfinished_after)
                assert finding is not None  # the query chose overdue runs with the same clock
            else:
                finding = Finding(
                    code=row["code"],
                    severity=row["severity"],
                    message=row["message"],
                    step_id=row["step_id"],
                    event_ids=tuple(row["event_ids"]),
                    count=row["count"],
                    step_ids=tuple(row["step_ids"]),
                )
            found.append(
                RunFinding(
                    run_id=row["run_id"],
                    workflow=row["workflow"],
                    started_at=row["started_at"],
                    finding=finding,
                )
            )
        return FindingsPage(findings=found, next_cursor=next_cursor)

    # --- receipts ------------------------------------------------------------------------------

    def receipt_json(self, tenant: str, run_id: str) -> str | None:
        """The stored receipt document as the reader's clock sees it, or None if not projected."""
        row = self._receipt_row(tenant, run_id)
        return self._as_seen(row) if row else None

    def stored_receipt(self, tenant: str, run_id: str) -> str | None:
        """The receipts view's document exactly as stored (to compare with the events)."""
        statement = SQL("SELECT document FROM {} WHERE run_key = %s").format(self._t("receipts"))
        rows = self._rows(statement, [run_uuid(tenant, run_id)])
        return rows[0]["document"] if rows else None

    def receipt_including(self, tenant: str, run_id: str, event_id: str) -> str | None:
        """The receipt if the view has applied `event_id` to it, else None (one look:
        projections/waiters.py waits between looks)."""
        row = self._receipt_row(tenant, run_id, event_id)
        return self._as_seen(row) if row else None

    def _receipt_row(self, tenant: str, run_id: str, event_id: str | None = None) -> dict[str, Any] | None:
        statement = SQL(
            "SELECT c.document, {overdue} AS overdue FROM {c} c LEFT JOIN {r} r USING (run_key) "
            "WHERE c.run_key = %s"
        ).format(overdue=_overdue("r."), c=self._t("receipts"), r=self._t("runs"))
        params: list[Any] = [self._overdue_before, run_uuid(tenant, run_id)]
        if event_id is not None:
            statement += SQL(" AND %s = ANY(c.event_ids)")
            params.append(event_id)
        rows = self._rows(statement, params)
        return rows[0] if rows else None

    def _as_seen(self, row: dict[str, Any]) -> str:
        document: str = row["document"]
        if not row["overdue"]:
            return document  # served as stored: no parse on the common path
        receipt = Receipt.model_validate_json(document)
        return receipt.seen_at(self.clock(), self.unfinished_after).model_dump_json()

    def quarantined(self, tenant: str, run_id: str) -> list[str]:
        """The run's events no view could apply (projections/quarantine.py), said plainly."""
        statement = SQL("SELECT position, view, reason FROM {} WHERE run_key = %s ORDER BY position").format(
            quarantine.table(self.schema)
        )
        return [
            f"log position {r['position']}, refused by view {r['view']}: {r['reason'][:200]}"
            for r in self._rows(statement, [run_uuid(tenant, run_id)])
        ]


def _window(
    where: list[Composable], params: list[Any], since: datetime | None, until: datetime | None
) -> None:
    if since and until and since >= until:
        raise BadQuery("until", f"must be after since ({since.isoformat()})")
    if since is not None:
        where.append(SQL("started_at >= %s"))
        params.append(since)
    if until is not None:
        where.append(SQL("started_at < %s"))
        params.append(until)


def _related_run(row: dict[str, Any]) -> RelatedRun:
    return RelatedRun(
        run_id=row["run_id"],
        workflow=row["workflow"],
        final_state=row["final_state"],
        started_at=row["started_at"],
    )
