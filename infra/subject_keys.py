"""Subjects' keys, in their own tables beside (never inside) the event store.

`receipts_subject_keys`: one row per (tenant, subject), its 32-byte secret, or NULL
once erased. An erased row stays as a tombstone, so its key is never made again: the
insert that makes keys conflicts with it and the tombstone wins. `receipts_erasures`
is the service's record of each `subject.erased {subject, reason, requested_by}`.
An erasure with no tenant also leaves a tombstone under tenant `*`, which refuses a
key for that subject in any tenant from then on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from infra.dead_letters import DeadLetterTable
from infra.sealing import ERASED_KEY, SubjectKey

KEYS_TABLE = "receipts_subject_keys"
ERASURES_TABLE = "receipts_erasures"
EVERY_TENANT = "*"
# How long a process trusts a key it read: an erasure elsewhere is seen within this long.
# A step sealed meanwhile under the destroyed key is as erased as the rest.
KEY_TTL = 5.0
# Subjects a key ring holds before it drops the ones past their TTL (read again if asked):
# ingest meets a new subject every few runs, and a cache kept them all, for good.
CACHED_SUBJECTS = 20_000

Subject = tuple[str, str]  # (tenant, subject)


@dataclass(frozen=True, slots=True)
class Erasure:
    """The record of `subject.erased`."""

    subject: str
    tenants: tuple[str, ...]
    reason: str
    requested_by: str
    erased_at: datetime
    dead_letters: int = 0  # letters still held whose bytes named the subject, dropped
    had_keys: bool = True  # False: no live key in its scope (nothing reads differently now)
    erased_before: bool = False  # an earlier erasure left a tombstone in its scope


class SubjectKeyTables:
    def __init__(self, schema: str) -> None:
        self.keys = SQL("{}.{}").format(Identifier(schema), Identifier(KEYS_TABLE))
        self.erasures = SQL("{}.{}").format(Identifier(schema), Identifier(ERASURES_TABLE))

    def create_statements(self) -> list[Composed]:
        return [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, subject text NOT NULL, secret bytea, "
                "created_at timestamptz NOT NULL DEFAULT now(), erased_at timestamptz, "
                "PRIMARY KEY (tenant, subject))"
            ).format(self.keys),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, subject text NOT NULL, "
                "tenants text[] NOT NULL, reason text NOT NULL, requested_by text NOT NULL, "
                "erased_at timestamptz NOT NULL)"
            ).format(self.erasures),
        ]


class KeyRing:
    """Subjects' keys over the store's pool, cached for `ttl` seconds (an erased one for good)."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        schema: str,
        ttl: float = KEY_TTL,
        letters: DeadLetterTable | None = None,
    ) -> None:
        self.datastore = datastore
        self.tables = SubjectKeyTables(schema)
        # Dead letters still held: their bytes are searched for an erased subject.
        self.letters = letters
        self.ttl = ttl
        self._cache: dict[Subject, tuple[SubjectKey, float]] = {}
        self._sweep_at = CACHED_SUBJECTS

    def keys_for(self, subjects: Iterable[Subject]) -> dict[Subject, SubjectKey]:
        """Each subject's key, made now if it has none and was never erased: one query for
        every subject the cache does not hold (ingest asks once a poll batch)."""
        found, missing = self._cached(subjects)
        for _ in range(2):  # a key another process made in the same instant is read on the second try
            if not missing:
                break
            fresh = [secrets.token_bytes(32) for _ in missing]
            statement = SQL(
                "WITH wanted AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[]) "
                "AS w(tenant, subject, secret)), "
                "made AS (INSERT INTO {keys} (tenant, subject, secret) SELECT w.tenant, w.subject, w.secret "
                "FROM wanted w WHERE NOT EXISTS (SELECT 1 FROM {keys} e WHERE e.tenant = %s "
                "AND e.subject = w.subject) ON CONFLICT DO NOTHING RETURNING tenant, subject, secret) "
                "SELECT tenant, subject, secret FROM made UNION ALL "
                "SELECT k.tenant, k.subject, k.secret FROM {keys} k JOIN wanted w USING (tenant, subject) "
                "UNION ALL SELECT w.tenant, w.subject, NULL FROM wanted w JOIN {keys} e "
                "ON e.tenant = %s AND e.subject = w.subject"
            ).format(keys=self.tables.keys)
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(
                    statement,
                    (
                        [t for t, _ in missing],
                        [s for _, s in missing],
                        fresh,
                        EVERY_TENANT,
                        EVERY_TENANT,
                    ),
                )
                rows = curs.fetchall()
            found.update(self._remember(rows))
            missing = [subject for subject in missing if subject not in found]
        if missing:
            raise PersistenceError(f"no key could be made or read for {missing[:3]}")
        return found

    def keys_of(self, subjects: Iterable[Subject]) -> dict[Subject, SubjectKey]:
        """Readers' lookup: never makes a key; a subject without one reads as erased."""
        found, missing = self._cached(subjects)
        if missing:
            statement = SQL(
                "SELECT k.tenant, k.subject, k.secret FROM {keys} k "
                "JOIN unnest(%s::text[], %s::text[]) AS w(tenant, subject) USING (tenant, subject) "
                "UNION ALL SELECT w.tenant, w.subject, NULL FROM unnest(%s::text[], %s::text[]) "
                "AS w(tenant, subject) JOIN {keys} e ON e.tenant = %s AND e.subject = w.subject"
            ).format(keys=self.tables.keys)
            tenants, names = [t for t, _ in missing], [s for _, s in missing]
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(statement, (tenants, names, tenants, names, EVERY_TENANT))
                rows = curs.fetchall()
            found.update(self._remember(rows))
            for subject in missing:
                found.setdefault(subject, ERASED_KEY)
        return found

    def key_of(self, tenant: str, subject: str) -> SubjectKey:
        return self.keys_of([(tenant, subject)])[(tenant, subject)]

    def _cached(self, subjects: Iterable[Subject]) -> tuple[dict[Subject, SubjectKey], list[Subject]]:
        now = time.monotonic()
        found: dict[Subject, SubjectKey] = {}
        missing: list[Subject] = []
        for subject in set(subjects):
            cached = self._cache.get(subject)
            if cached is not None and (cached[0].erased or now - cached[1] < self.ttl):
                found[subject] = cached[0]
            else:
                missing.append(subject)
        return found, missing

    def _remember(self, rows: Iterable[Any]) -> dict[Subject, SubjectKey]:
        now = time.monotonic()
        found: dict[Subject, SubjectKey] = {}
        for row in rows:
            subject = (row["tenant"], row["subject"])
            secret = row["secret"]
            # A tombstone (here or under `*`) outranks any key row for the same subject.
            if subject in found and found[subject].erased:
                continue
            key = SubjectKey(bytes(secret)) if secret is not None else ERASED_KEY
            found[subject] = key
            self._cache[subject] = (key, now)
        if len(self._cache) > self._sweep_at:
            self._sweep(now)
        return found

    def _sweep(self, now: float) -> None:
        """Drop the keys past their TTL (an erased one stays: it is never read again). The next
        sweep waits for the cache to double, so a burst of live subjects is not swept per batch."""
        self._cache = {s: e for s, e in self._cache.items() if e[0].erased or now - e[1] < self.ttl}
        self._sweep_at = max(CACHED_SUBJECTS, 2 * len(self._cache))

    def forget(self) -> None:
        self._cache.clear()

    def erase(self, subject: str, tenant: str | None, reason: str, requested_by: str) -> Erasure:
        """Destroy the subject's key (in `tenant`, or in every tenant) and record why and by whom.

        The keys table is locked against new keys for the transaction: a batch making a key
        for this subject right now either committed first (and its key is destroyed here) or
        waits, then finds the tombstone."""
        at = datetime.now(UTC)
        keys = self.tables.keys
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(keys))
            curs.execute(
                SQL("SELECT tenant, secret IS NOT NULL AS live FROM {} WHERE subject = %s").format(keys),
                (subject,),
            )
            rows = curs.fetchall()
            scoped = [
                row for row in rows if tenant in (None, row["tenant"]) and row["tenant"] != EVERY_TENANT
            ]
            had_keys = any(row["live"] for row in scoped)
            erased_before = any(not row["live"] for row in scoped)
            tenants = sorted({row["tenant"] for row in rows} | {EVERY_TENANT}) if tenant is None else [tenant]
            _tombstones(curs, keys, subject, tenants, at)
            dropped = self.letters.erase(curs, subject) if self.letters is not None else 0
            curs.execute(
                SQL(
                    "INSERT INTO {} (subject, tenants, reason, requested_by, erased_at) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ).format(self.tables.erasures),
                (subject, tenants, reason, requested_by, at),
            )
        for cached in [s for s in self._cache if s[1] == subject]:
            del self._cache[cached]
        return Erasure(subject, tuple(tenants), reason, requested_by, at, dropped, had_keys, erased_before)

    def erasures(self) -> list[Erasure]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT * FROM {} ORDER BY id").format(self.tables.erasures))
            return [
                Erasure(r["subject"], tuple(r["tenants"]), r["reason"], r["requested_by"], r["erased_at"])
                for r in curs.fetchall()
            ]

    def vacuum(self) -> None:
        """Rewrite the keys table (and the dead letters') so a destroyed secret's old row
        version, and a dropped letter's bytes, leave their pages too."""
        tables = [self.tables.keys] + ([self.letters.table] if self.letters is not None else [])
        with self.datastore.get_connection() as conn:
            conn.commit()
            conn.autocommit = True
            try:
                for table in tables:
                    conn.execute(SQL("VACUUM (FULL) {}").format(table))
            finally:
                conn.autocommit = False


def _tombstones(
    curs: psycopg.Cursor[Any], keys: Composed, subject: str, tenants: list[str], at: datetime
) -> None:
    curs.executemany(
        SQL(
            "INSERT INTO {} (tenant, subject, secret, erased_at) VALUES (%s, %s, NULL, %s) "
            "ON CONFLICT (tenant, subject) DO UPDATE SET secret = NULL, "
            "erased_at = COALESCE({}.erased_at, EXCLUDED.erased_at)"
        ).format(keys, keys),
        [(t, subject, at) for t in tenants],
    )
