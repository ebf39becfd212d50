"""Is the service well? One report for `/health` and `receipts health`.

It answers from PostgreSQL alone, so any process can ask: each process's
heartbeat (infra/health.py), how far each view is behind the event store and
for how long, the events the views set aside (projections/quarantine.py), and
the incidents recorded in the last hour. `degraded` lists what needs a person;
`warnings` what was handled but should be known.

The report reads over a connection of its own, never one from a pool that
waiting requests could exhaust: a health check that queues behind the load it
should report is no health check.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.sql import SQL, Identifier
from pydantic import BaseModel, ConfigDict

from infra.health import Health
from infra.rows import read_step_state
from projections import quarantine
from projections.catalog import VIEWS
from projections.runner import REBUILDING

INCIDENTS_SINCE = timedelta(hours=1)
# Incident kinds recorded by ingest: handled, but an operator must know.
WARN_KINDS = {
    "position_reset": "the broker's log was behind the stored positions; reading resumed from its start",
    "dead_letter_kept": "a dead letter too large for the DLQ topic was kept in PostgreSQL",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ViewStatus(_Model):
    name: str
    position: int
    behind: int
    # How long the oldest step the view has not applied has been recorded.
    waiting_seconds: float | None
    rebuilding: bool


class ProcessReport(_Model):
    name: str
    kind: str
    pid: int
    host: str
    state: str
    beat_at: datetime
    alive: bool


class QuarantinedEvent(_Model):
    position: int
    run_key: str
    view: str
    reason: str
    at: datetime


class QuarantineReport(_Model):
    count: int
    latest: list[QuarantinedEvent]


class IncidentReport(_Model):
    id: int
    at: datetime
    kind: str
    subject: str
    detail: dict[str, Any]


class HealthReport(_Model):
    status: Literal["ok", "degraded"]
    time: datetime
    problems: list[str]
    warnings: list[str]
    last_event: int
    behind: dict[str, int]
    views: list[ViewStatus]
    processes: list[ProcessReport]
    quarantine: QuarantineReport
    incidents: list[IncidentReport]


class Thresholds(_Model):
    """A view more than `lag_events` behind whose oldest waiting step is older
    than `lag_seconds` is a problem."""

    lag_events: int = 0
    lag_seconds: float = 30.0


class StatusReader:
    def __init__(self, schema: str, events_table: str, application_name: str, thresholds: Thresholds) -> None:
        self.schema = schema
        self.application_name = application_name
        self.thresholds = thresholds
        self.health = Health(schema)
        self._events = SQL("{}.{}").format(Identifier(schema), Identifier(events_table))
        self._views = [view(schema) for view in VIEWS]

    def report(self, curs: psycopg.Cursor[Any], now: datetime | None = None) -> HealthReport:
        now = now or datetime.now(UTC)
        curs.execute(SQL("SELECT max(notification_id) FROM {}").format(self._events))
        row = curs.fetchone()
        last = int(row[0]) if row and row[0] is not None else 0
        views = [self._view(curs, view.name, view.tracking_identifier, last, now) for view in self._views]
        processes = [
            ProcessReport(
                name=p.name,
                kind=p.kind,
                pid=p.pid,
                host=p.host,
                state=p.state,
                beat_at=p.beat_at,
                alive=p.alive(now),
            )
            for p in self.health.statuses(curs)
        ]
        count, latest = quarantine.latest(curs, self.schema)
        incidents = [
            IncidentReport(id=i.id, at=i.at, kind=i.kind, subject=i.subject, detail=i.detail)
            for i in self.health.recent(curs, now - INCIDENTS_SINCE)
        ]
        problems, warnings = self._judge(views, processes, count, latest, incidents, now)
        return HealthReport(
            status="degraded" if problems else "ok",
            time=now,
            problems=problems,
            warnings=warnings,
            last_event=last,
            behind={v.name: v.behind for v in views},
            views=views,
            processes=processes,
            quarantine=QuarantineReport(
                count=count,
                latest=[
                    QuarantinedEvent(
                        position=q.position, run_key=str(q.run_key), view=q.view, reason=q.reason, at=q.at
                    )
                    for q in latest
                ],
            ),
            incidents=incidents[:10],
        )

    def _view(
        self, curs: psycopg.Cursor[Any], name: str, tracking: Any, last: int, now: datetime
    ) -> ViewStatus:
        curs.execute(
            SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(tracking),
            (self.application_name,),
        )
        row = curs.fetchone()
        position = int(row[0]) if row else 0
        if position == REBUILDING:
            return ViewStatus(name=name, position=position, behind=0, waiting_seconds=None, rebuilding=True)
        waiting = None
        if last > position:  # the oldest step not applied yet: one row by primary key
            curs.execute(
                SQL(
                    "SELECT state FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT 1"
                ).format(self._events),
                (position,),
            )
            oldest = curs.fetchone()
            try:
                recorded_at = read_step_state(bytes(oldest[0])).recorded_at if oldest else None
            except (ValueError, KeyError):  # not a step, or damaged: its age is unknown
                recorded_at = None
            waiting = max(0.0, (now - recorded_at).total_seconds()) if recorded_at else None
        return ViewStatus(
            name=name, position=position, behind=last - position, waiting_seconds=waiting, rebuilding=False
        )

    def _judge(
        self,
        views: list[ViewStatus],
        processes: list[ProcessReport],
        quarantined: int,
        latest: list[quarantine.Quarantined],
        incidents: list[IncidentReport],
        now: datetime,
    ) -> tuple[list[str], list[str]]:
        problems: list[str] = []
        warnings: list[str] = []
        limit = self.thresholds
        for v in views:
            if v.rebuilding:
                warnings.append(f"view {v.name} is being rebuilt; it answers partially until then")
            elif v.behind > limit.lag_events and (v.waiting_seconds or 0) > limit.lag_seconds:
                problems.append(
                    f"view {v.name} is {v.behind} events behind the event store; its oldest "
                    f"unapplied step has waited {v.waiting_seconds:.0f} s (is `receipts project` running?)"
                )
        for p in processes:
            if not p.alive and p.state not in ("stopped", "died"):  # died: recorded, and replaced
                silent = (now - p.beat_at).total_seconds()
                problems.append(f"process {p.name} has not been heard from for {silent:.0f} s ({p.state})")
        if quarantined:
            q = latest[0]
            problems.append(
                f"{quarantined} event(s) quarantined: no view could apply them; latest at log "
                f"position {q.position} (run {q.run_key}), refused by view {q.view}: {q.reason[:200]}"
            )
        for i in incidents:
            if i.kind in WARN_KINDS:
                warnings.append(f"{i.at:%Y-%m-%d %H:%M:%S}Z {i.kind} {i.subject}: {WARN_KINDS[i.kind]}")
        return problems, warnings


class StatusProbe:
    """A StatusReader over one connection of its own (opened on first use, opened
    again after it is lost). Calls are serialised: each takes a few ms."""

    def __init__(self, database_url: str, reader: StatusReader, timeout: float = 2.0) -> None:
        self.database_url = database_url
        self.reader = reader
        self.timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def report(self) -> HealthReport:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self.database_url,
                        autocommit=True,
                        connect_timeout=max(1, int(self.timeout)),
                        options=f"-c statement_timeout={int(self.timeout * 1000)}",
                    )
                with self._conn.cursor() as curs:
                    return self.reader.report(curs)
            except psycopg.Error as error:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                return _unreachable(error)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _unreachable(error: psycopg.Error) -> HealthReport:
    return HealthReport(
        status="degraded",
        time=datetime.now(UTC),
        problems=[f"the database does not answer: {error}"],
        warnings=[],
        last_event=0,
        behind={},
        views=[],
        processes=[],
        quarantine=QuarantineReport(count=0, latest=[]),
        incidents=[],
    )


def report_text(report: HealthReport) -> list[str]:
    """The report for a terminal."""
    lines = [f"{report.status.upper()}: {report.time:%Y-%m-%d %H:%M:%S}Z, event store at {report.last_event}"]
    lines += [f"  PROBLEM  {p}" for p in report.problems]
    lines += [f"  warning  {w}" for w in report.warnings]
    for v in report.views:
        state = "rebuilding" if v.rebuilding else f"{v.behind} behind"
        lines.append(f"  view     {v.name:10} at {v.position:>10}  {state}")
    for p in report.processes:
        lines.append(f"  process  {p.name:32} {p.state:10} {'alive' if p.alive else 'SILENT'}")
    lines.append(f"  quarantined events: {report.quarantine.count}")
    return lines
