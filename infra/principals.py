"""The principals who may ask, kept in PostgreSQL: `receipts_principals`.

A row is a principal: its id, tenant and roles, the SHA-256 of its token (never
the token), when and by whom it was added, and when it was revoked. Revoking
keeps the row, so "who was this principal" still has an answer, and its id is
never given to another principal. The table is created by the writer side
(`receipts migrate`, `up`, ingest) with the event store's tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from domain.errors import Conflict, Invalid, NotFound, Unauthorized
from domain.principals import (
    TOKEN_PREFIX,
    Principal,
    checked_token,
    same_digest,
    token_digest,
    valid_name,
)

TABLE = "receipts_principals"


def new_token() -> str:
    """A token: 32 random bytes, URL-safe, with a prefix that says what it is."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class PrincipalRecord:
    """A principal as the table keeps it (for `receipts principal list`: no token)."""

    principal: Principal
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class PrincipalExists(Conflict):
    title = "Principal exists"


class NoSuchPrincipal(NotFound):
    title = "No such principal"


class PrincipalTable:
    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier(TABLE))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, tenant text NOT NULL, "
            "roles text[] NOT NULL, token_digest text NOT NULL UNIQUE, "
            "created_at timestamptz NOT NULL, created_by text NOT NULL, revoked_at timestamptz)"
        ).format(self.table)

    def add(self, curs: psycopg.Cursor[Any], principal: Principal, by: str) -> str:
        """Add the principal; returns its new token (shown once, stored only as a digest)."""
        token = new_token()
        curs.execute(
            SQL(
                "INSERT INTO {} (id, tenant, roles, token_digest, created_at, created_by) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
            ).format(self.table),
            (principal.id, principal.tenant, sorted(principal.roles), token_digest(token), _now(), by),
        )
        if curs.rowcount != 1:
            raise PrincipalExists(
                f"principal '{principal.id}' exists (or existed: a revoked id is not given again); "
                "choose another id"
            )
        return token

    def revoke(self, curs: psycopg.Cursor[Any], principal_id: str) -> bool:
        """Revoke it; False when it was revoked already."""
        curs.execute(
            SQL("UPDATE {} SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL").format(self.table),
            (_now(), principal_id),
        )
        if curs.rowcount == 1:
            return True
        curs.execute(SQL("SELECT 1 FROM {} WHERE id = %s").format(self.table), (principal_id,))
        if curs.fetchone() is None:
            raise NoSuchPrincipal(f"no principal '{principal_id}'")
        return False

    def records(self, curs: psycopg.Cursor[Any]) -> list[PrincipalRecord]:
        curs.execute(SQL("SELECT * FROM {} ORDER BY tenant, id").format(self.table))
        return [_record(row) for row in curs.fetchall()]

    def any(self, curs: psycopg.Cursor[Any]) -> bool:
        curs.execute(SQL("SELECT EXISTS (SELECT 1 FROM {}) AS any").format(self.table))
        row = curs.fetchone()
        return bool(row and row["any"])

    def find(self, curs: psycopg.Cursor[Any], token: str) -> Principal | None:
        """The live principal this token names, or None (unknown or revoked)."""
        digest = token_digest(token)
        curs.execute(
            SQL("SELECT * FROM {} WHERE token_digest = %s AND revoked_at IS NULL").format(self.table),
            (digest,),
        )
        row = curs.fetchone()
        if row is None or not same_digest(row["token_digest"], digest):
            return None
        return _record(row).principal


class Principals:
    """The table over the store's connection pool: one short transaction a call."""

    def __init__(self, datastore: PostgresDatastore, schema: str) -> None:
        self.datastore = datastore
        self.table = PrincipalTable(schema)

    def authenticate(self, token: str) -> Principal:
        """The principal a token names; an unknown and a revoked token are refused alike."""
        token = checked_token(token)
        with self.datastore.transaction(commit=False) as curs:
            found = self.table.find(curs, token)
        if found is None:
            raise Unauthorized("unknown or revoked token")
        return found

    def add(self, principal_id: str, tenant: str, roles: Iterable[str], by: str) -> str:
        for field, value in [("id", principal_id), ("tenant", tenant), *(("role", r) for r in roles)]:
            if not valid_name(value):
                raise Invalid(field, f"'{value}' is not a name: letters, digits and ._:@- only, no spaces")
        principal = Principal(id=principal_id, tenant=tenant, roles=frozenset(roles))
        with self.datastore.transaction(commit=True) as curs:
            return self.table.add(curs, principal, by)

    def revoke(self, principal_id: str) -> bool:
        with self.datastore.transaction(commit=True) as curs:
            return self.table.revoke(curs, principal_id)

    def records(self) -> list[PrincipalRecord]:
        with self.datastore.transaction(commit=False) as curs:
            return self.table.records(curs)

    def any(self) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            return self.table.any(curs)


def write_token_file(path: Path, token: str) -> None:
    """The token, readable by its owner only (0600) from the moment the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name(path.name + ".new")
    new.unlink(missing_ok=True)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(new, path)


def _now() -> datetime:
    return datetime.now(UTC)


def _record(row: Any) -> PrincipalRecord:
    return PrincipalRecord(
        principal=Principal(id=row["id"], tenant=row["tenant"], roles=frozenset(row["roles"])),
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )
