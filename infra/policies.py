"""The policies the service routed by, kept in PostgreSQL: `receipts_policies`.

A row is a policy put in force: its version (the SHA-256 of the canonical
document), the canonical JSON document, the source text as loaded, when and by
whom. The version in force at a time T is the one whose row is the latest loaded
at or before T, so "which policy was in force at 14:02, and what did it say" is
one query. A policy is recorded when it is not the one in force already: loading
the same file again adds nothing, and going back to an earlier version (a file
restored, an earlier version published again) is a new row, since it was put in
force again then.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed, Identifier

from domain.contracts import ContractLookup
from domain.errors import NotFound, ReceiptsError
from domain.policy import Contract, Policy, PolicyError, load_policy, sample_text


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    version: str
    document: dict[str, Any]
    source: str
    loaded_at: datetime
    loaded_by: str

    def policy(self) -> Policy:
        return Policy.model_validate(self.document)


class PolicyFileInvalid(ReceiptsError):
    """The configured (or given) policy file cannot be used: its line and field."""

    status = 422
    title = "Invalid policy"
    exit_code = 2

    def __init__(self, path: str, error: PolicyError | OSError | UnicodeDecodeError) -> None:
        if isinstance(error, PolicyError):
            where = f"{path}:{error.line}" if error.line else path
            detail = f"{where}: {error.field + ': ' if error.field else ''}{error.message}"
        else:
            detail = f"{path}: cannot read it: {error}"
        super().__init__(f"policy {detail}")
        self.error = error


class NoPolicy(NotFound, LookupError):
    title = "No policy recorded"


def read_policy_file(path: Path | None) -> tuple[Policy, str]:
    """The policy in `path` (None: the shipped sample) and its text, or PolicyFileInvalid."""
    if path is None:
        text = sample_text()
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyFileInvalid(str(path), error) from None
    try:
        return load_policy(text), text
    except PolicyError as error:
        raise PolicyFileInvalid(str(path or "(sample)"), error) from None


def loaded_by(what: str) -> str:
    """Who loads a policy: the command and where it ran, for the record."""
    return f"{what} (pid {os.getpid()} on {socket.gethostname()})"


class PolicyTable:
    """`receipts_policies`: every policy put in force, in the order it was."""

    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_policies"))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, version text NOT NULL, "
            "document text NOT NULL, source text NOT NULL, loaded_at timestamptz NOT NULL, "
            "loaded_by text NOT NULL)"
        ).format(self.table)

    def record(
        self,
        curs: psycopg.Cursor[Any],
        policy: Policy,
        source: str,
        by: str,
        at: datetime | None = None,
    ) -> tuple[LoadedPolicy, bool]:
        """Put `policy` in force unless it is already; returns the one in force and whether
        it was recorded now. Processes starting together take turns: the table is locked
        for the check and the insert."""
        curs.execute(SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self.table))
        current = self.in_force(curs)
        if current is not None and current.version == policy.version:
            return current, False
        loaded_at = at or datetime.now(UTC)
        if current is not None and loaded_at <= current.loaded_at:
            loaded_at = current.loaded_at  # a clock behind the last load must not reorder them
        curs.execute(
            SQL(
                "INSERT INTO {} (version, document, source, loaded_at, loaded_by) VALUES (%s, %s, %s, %s, %s)"
            ).format(self.table),
            (policy.version, policy.canonical(), source, loaded_at, by),
        )
        return LoadedPolicy(policy.version, json.loads(policy.canonical()), source, loaded_at, by), True

    def in_force(self, curs: psycopg.Cursor[Any], as_of: datetime | None = None) -> LoadedPolicy | None:
        """The latest policy loaded at or before `as_of` (None: now)."""
        where = SQL("WHERE loaded_at <= %s ") if as_of else SQL("")
        curs.execute(
            SQL("SELECT * FROM {} {}ORDER BY loaded_at DESC, id DESC LIMIT 1").format(self.table, where),
            (as_of,) if as_of else (),
        )
        row = curs.fetchone()
        return _loaded(row) if row else None

    def latest_version(self, curs: psycopg.Cursor[Any]) -> str | None:
        curs.execute(
            SQL("SELECT version FROM {} ORDER BY loaded_at DESC, id DESC LIMIT 1").format(self.table)
        )
        row = curs.fetchone()
        return str(row["version"]) if row else None

    def by_version(self, curs: psycopg.Cursor[Any], version: str) -> LoadedPolicy | None:
        """The policy whose version (content hash) this is, as first put in force. Any cursor
        will do (the projections' return tuples): the read uses its own, on its transaction."""
        with curs.connection.cursor(row_factory=dict_row) as own:
            own.execute(
                SQL("SELECT * FROM {} WHERE version = %s ORDER BY id LIMIT 1").format(self.table), (version,)
            )
            row = own.fetchone()
        return _loaded(row) if row else None

    def versions(self, curs: psycopg.Cursor[Any]) -> list[LoadedPolicy]:
        """Every policy put in force, oldest first."""
        curs.execute(SQL("SELECT * FROM {} ORDER BY loaded_at, id").format(self.table))
        return [_loaded(row) for row in curs.fetchall()]


class PolicyBook:
    """Recorded policies by version, each read from `receipts_policies` once: a version is the
    hash of its content, so what was read for it stays true (an unknown version is asked
    again, as it may be recorded later). One per process; readers share it."""

    def __init__(self, table: PolicyTable) -> None:
        self.table = table
        self._known: dict[str, Policy] = {}

    def known(self, version: str) -> Policy | None:
        """The policy of `version` if it was read already (no database look)."""
        return self._known.get(version)

    def policy(self, curs: psycopg.Cursor[Any], version: str) -> Policy | None:
        known = self._known.get(version)
        if known is None:
            loaded = self.table.by_version(curs, version)
            if loaded is None:
                return None
            known = self._known[version] = loaded.policy()
        return known

    def contract(self, curs: psycopg.Cursor[Any], version: str, workflow: str) -> Contract | None:
        """Version `version`'s contract for `workflow` (a `domain.contracts.ContractLookup`
        once bound to a cursor)."""
        policy = self.policy(curs, version)
        return policy.contract_for(workflow) if policy else None

    def lookup(self, curs: psycopg.Cursor[Any]) -> ContractLookup:
        return partial(self.contract, curs)


def _loaded(row: Any) -> LoadedPolicy:
    return LoadedPolicy(
        version=row["version"],
        document=json.loads(row["document"]),
        source=row["source"],
        loaded_at=row["loaded_at"],
        loaded_by=row["loaded_by"],
    )
