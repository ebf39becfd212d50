"""What the service's processes say about themselves, kept in PostgreSQL so that
any process (`/health`, `receipts health`) can read it.

- `receipts_processes`: one row per running process (ingest, project, serve,
  up), its heartbeat and state. A row whose heartbeat is older than
  `STALE_AFTER` belongs to a process that is gone or stuck.
- `receipts_incidents`: append-only record of what went wrong and was handled
  (a broker log behind the stored positions, a dead letter kept in PostgreSQL,
  a child restarted...). Each is an event an operator must be able to see
  after the fact, not only in a log file that rotated away.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

# A process beats every BEAT_EVERY; one not heard from for STALE_AFTER is down.
BEAT_EVERY = timedelta(seconds=2)
STALE_AFTER = timedelta(seconds=15)

_TABLES = """
CREATE TABLE IF NOT EXISTS {processes} (
    name text PRIMARY KEY, kind text NOT NULL, pid int NOT NULL, host text NOT NULL,
    started_at timestamptz NOT NULL, beat_at timestamptz NOT NULL,
    state text NOT NULL, detail text NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS {incidents} (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL,
    subject text NOT NULL, detail jsonb NOT NULL DEFAULT '{{}}');
CREATE INDEX IF NOT EXISTS {incidents_kind} ON {incidents} (kind, at DESC);
"""


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    name: str
    kind: str
    pid: int
    host: str
    started_at: datetime
    beat_at: datetime
    state: str
    detail: str

    def alive(self, now: datetime) -> bool:
        return self.state != "stopped" and now - self.beat_at < STALE_AFTER


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    at: datetime
    kind: str
    subject: str
    detail: dict[str, Any]


class Health:
    """Reads and writes the two tables in one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.processes = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_processes"))
        self.incidents = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_incidents"))

    def create_tables(self, curs: psycopg.Cursor[Any]) -> None:
        curs.execute(
            SQL(_TABLES).format(
                processes=self.processes,
                incidents=self.incidents,
                incidents_kind=Identifier("receipts_incidents_kind"),
            )
        )

    # --- writing ---------------------------------------------------------------------------

    def beat(self, curs: psycopg.Cursor[Any], process: ProcessName, state: str, detail: str = "") -> None:
        """Insert or refresh this process's row."""
        curs.execute(
            SQL(
                "INSERT INTO {} (name, kind, pid, host, started_at, beat_at, state, detail) "
                "VALUES (%s, %s, %s, %s, %s, now(), %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "beat_at = now(), state = EXCLUDED.state, detail = EXCLUDED.detail, pid = EXCLUDED.pid, "
                "started_at = EXCLUDED.started_at"
            ).format(self.processes),
            (process.name, process.kind, process.pid, process.host, process.started_at, state, detail),
        )

    def bury(self, curs: psycopg.Cursor[Any], host: str) -> list[str]:
        """Mark this host's processes that died without saying so (SIGKILL, a crash of
        their machine's `up`) as `died`, each recorded as an incident: a new process
        has taken over, and a row left `running` would keep /health degraded for ever."""
        buried = []
        for status in self.statuses(curs):
            if status.host != host or status.state in ("stopped", "died") or _running(status):
                continue
            curs.execute(
                SQL("UPDATE {} SET state = 'died' WHERE name = %s AND beat_at = %s").format(self.processes),
                (status.name, status.beat_at),
            )
            self.record(curs, "process_died", status.name, last_beat=status.beat_at, state=status.state)
            buried.append(status.name)
        return buried

    def record(self, curs: psycopg.Cursor[Any], kind: str, subject: str, **detail: Any) -> None:
        """Append an incident (in the caller's transaction)."""
        curs.execute(
            SQL("INSERT INTO {} (kind, subject, detail) VALUES (%s, %s, %s)").format(self.incidents),
            (kind, subject, json.dumps(detail, default=str)),
        )

    # --- reading ---------------------------------------------------------------------------

    def statuses(self, curs: psycopg.Cursor[Any]) -> list[ProcessStatus]:
        with curs.connection.cursor(row_factory=dict_row) as c:
            c.execute(
                SQL(
                    "SELECT name, kind, pid, host, started_at, beat_at, state, detail FROM {} ORDER BY name"
                ).format(self.processes)
            )
            return [ProcessStatus(**row) for row in c.fetchall()]

    def recent(
        self, curs: psycopg.Cursor[Any], since: datetime, kinds: tuple[str, ...] = ()
    ) -> list[Incident]:
        where = SQL("at >= %s") + (SQL(" AND kind = ANY(%s)") if kinds else SQL(""))
        params: list[Any] = [since, list(kinds)] if kinds else [since]
        with curs.connection.cursor(row_factory=dict_row) as c:
            c.execute(
                SQL(
                    "SELECT id, at, kind, subject, detail FROM {} WHERE {} ORDER BY id DESC LIMIT 100"
                ).format(self.incidents, where),
                params,
            )
            return [Incident(**row) for row in c.fetchall()]


def _running(status: ProcessStatus) -> bool:
    """Is the process of this row still running (its pid, started when the row says)?"""
    try:
        started = float(psutil.Process(status.pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return started <= status.started_at.timestamp() + 1  # a reused pid started later


@dataclass(frozen=True, slots=True)
class ProcessName:
    """Who is beating: `kind` (ingest, project, serve, up) on this host and pid."""

    kind: str
    pid: int
    host: str
    started_at: datetime

    @classmethod
    def here(cls, kind: str) -> ProcessName:
        return cls(kind, os.getpid(), socket.gethostname(), datetime.now(UTC))

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.host}:{self.pid}"
