"""Browser sessions of the reviewer's console, kept in PostgreSQL: `receipts_sessions`.

A row is a signed-in browser: the SHA-256 of its session id (never the id: a
database dump opens no session), the principal it signed in as, its CSRF token
and when it expires. The principal is read through `receipts_principals` on
every request, so revoking a principal ends its sessions at once, and a changed
role applies at the next page. Created by the writer side with the store's tables.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from domain.principals import Principal, token_digest
from infra.principals import TABLE as PRINCIPALS

TABLE = "receipts_sessions"
LIFETIME = timedelta(hours=8)  # a working day: after it, sign in again


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: datetime


class SessionTable:
    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier(TABLE))
        self.principals = SQL("{}.{}").format(Identifier(schema), Identifier(PRINCIPALS))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (id_digest text PRIMARY KEY, principal_id text NOT NULL, "
            "csrf text NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL)"
        ).format(self.table)


class Sessions:
    """The table over the store's connection pool: one short statement a call."""

    def __init__(self, datastore: PostgresDatastore, schema: str) -> None:
        self.datastore = datastore
        self.table = SessionTable(schema)

    def open(self, principal: Principal, now: datetime | None = None) -> tuple[str, Session]:
        """A new session for `principal`: its id (for the cookie, shown once) and the session."""
        now = now or datetime.now(UTC)
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + LIFETIME
        with self.datastore.transaction(commit=True) as curs:
            # Expired rows go as new ones come: the table holds live sessions, give or take.
            curs.execute(SQL("DELETE FROM {} WHERE expires_at < %s").format(self.table.table), (now,))
            curs.execute(
                SQL(
                    "INSERT INTO {} (id_digest, principal_id, csrf, created_at, expires_at) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ).format(self.table.table),
                (token_digest(session_id), principal.id, csrf, now, expires),
            )
        return session_id, Session(principal, csrf, expires)

    def find(self, session_id: str, now: datetime | None = None) -> Session | None:
        """The live session `session_id` names, with its principal as the table says now;
        None when unknown, expired, or its principal was revoked."""
        statement = SQL(
            "SELECT p.id, p.tenant, p.roles, s.csrf, s.expires_at FROM {s} s "
            "JOIN {p} p ON p.id = s.principal_id "
            "WHERE s.id_digest = %s AND s.expires_at > %s AND p.revoked_at IS NULL"
        ).format(s=self.table.table, p=self.table.principals)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, (token_digest(session_id), now or datetime.now(UTC)))
            row = curs.fetchone()
        if row is None:
            return None
        principal = Principal(id=row["id"], tenant=row["tenant"], roles=frozenset(row["roles"]))
        return Session(principal, row["csrf"], row["expires_at"])

    def close(self, session_id: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("DELETE FROM {} WHERE id_digest = %s").format(self.table.table),
                (token_digest(session_id),),
            )
