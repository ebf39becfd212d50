"""How rows reach the event store: `StepRecorder` keeps eventsourcing's transaction (table
lock, tracking rows, events, NOTIFY) but writes events with binary COPY, and never uses
psycopg's pipeline, which hangs on saves over ~1 MB (BASELINES.md). Consumers' positions
(`Position`, `Mark`) move in the same transaction as the rows they account for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from psycopg.sql import SQL, Identifier

from domain.chain import StoredLink
from domain.run import RunHead
from infra.checkpoints import CheckpointTables
from infra.dead_letters import DeadLetter, DeadLetterTable
from infra.health import Health
from infra.idempotency import IdempotencyTable
from infra.policies import PolicyBook, PolicyTable
from infra.principals import PrincipalTable
from infra.publishers import PublisherTable
from infra.rows import CopyData, Row, read_step_state, stored_heads
from infra.sessions import SessionTable
from infra.subject_keys import KeyRing


@contextmanager
def schema_lock(database_url: str) -> Iterator[None]:
    """Hold a database-wide advisory lock while creating tables: processes that start
    together (`up`'s children) would otherwise race on eventsourcing's DDL
    ("tuple concurrently updated") and on CREATE TABLE IF NOT EXISTS."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        yield  # closing the connection releases the lock, whatever happens inside


_SCHEMA_LOCK = 0x5EC0_7D5  # any constant; the same in every process


class StalePosition(IntegrityError):
    """A batch's Kafka position is not ahead of the stored one: it was already applied."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A record of a partition's log: its offset and a fingerprint of its key, value
    and timestamp."""

    offset: int
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Position:
    """How far a Kafka partition has been applied (`last`), and an `anchor`: the first
    record applied from this log. A broker that lost its log (restarted, topic
    recreated) holds another record at the anchor's offset, or none, so the consumer
    can tell that its stored offset means nothing in the log it reads now."""

    last: Mark
    anchor: Mark | None = None

    @property
    def offset(self) -> int:
        return self.last.offset


class WritableBatch(Protocol):
    """What `record_batch` writes in one transaction (the ingest plan)."""

    dead: list[DeadLetter]
    new_runs: list[tuple[str, str]]  # (tenant, run id) of each run the batch opens

    @property
    def positions(self) -> Mapping[str, Position]:
        """Each partition's position once the batch is applied."""

    @property
    def copy_data(self) -> CopyData:
        """The batch's rows, encoded for COPY before the lock is taken."""

    def settle(self, stored_wire: Callable[[UUID, str], bytes | None]) -> Iterable[Row]:
        """Rows decided only after the COPY, when the store can be asked about them."""


class StepRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder: the ingest path writes with binary COPY
    (record_batch); an application save runs eventsourcing's own statements, in
    its one transaction, without psycopg's pipeline (insert_events)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        # Same statements and transaction as the parent, minus conn.pipeline().
        with self.datastore.transaction(commit=True) as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return []
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = self.datastore.schema
        self.lock_held = 0.0  # seconds this recorder held the events table's lock (the ingest bench reads it)
        self.letters = DeadLetterTable(schema)
        self.policies = PolicyTable(schema)
        self.policy_book = PolicyBook(self.policies)
        self.sql_create_statements.append(self.policies.create_statement())
        self.sql_create_statements.append(PrincipalTable(schema).create_statement())
        self.sql_create_statements.append(PublisherTable(schema).create_statement())
        self.sql_create_statements.append(IdempotencyTable(schema).create_statement())
        self.sql_create_statements.append(SessionTable(schema).create_statement())
        self.keyring = KeyRing(self.datastore, schema, letters=self.letters)
        self.sql_create_statements.extend(self.keyring.tables.create_statements())
        self.health = Health(schema)
        self.checkpoint_tables = CheckpointTables(schema)
        self.sql_create_statements += self.checkpoint_tables.create_statements()
        self.positions_table = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_positions"))
        self.sql_create_statements.extend(self.letters.create_statements())
        # Which tenants use a run id: one run id under two tenants is flagged.
        self.run_tenants = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_run_tenants"))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (run_id text NOT NULL, tenant text NOT NULL, "
                "PRIMARY KEY (run_id, tenant))"
            ).format(self.run_tenants)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, "
                '"offset" bigint NOT NULL, fingerprint bytea NOT NULL, '
                "anchor_offset bigint NOT NULL, anchor_fingerprint bytea NOT NULL)"
            ).format(self.positions_table)
        )

    def record_batch(self, batch: WritableBatch) -> int:
        """Append a batch's rows, its dead letters and its positions, all or nothing.

        The events table's EXCLUSIVE lock (eventsourcing's: it keeps notification
        ids in commit order) is taken only for the rows, which are ready: positions,
        dead letters and run tenants are written before it."""
        with self.datastore.transaction(commit=True) as curs:
            self._move_positions(curs, batch.positions)
            self.letters.insert(curs, batch.dead)
            if batch.new_runs:
                curs.executemany(
                    SQL("INSERT INTO {} (tenant, run_id) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                        self.run_tenants
                    ),
                    batch.new_runs,
                )
            self._lock_table(curs)
            locked = time.perf_counter()
            written = self._copy(curs, batch.copy_data)
            late = list(batch.settle(lambda run, event_id: self._stored_wire(curs, run, event_id)))
            if late:
                written += self._copy(curs, CopyData.of(late))
                self.letters.insert(curs, batch.dead)  # settling found conflicts: their letters too
            if written:
                self._notify_channel(curs)
        self.lock_held += time.perf_counter() - locked
        return written

    def _move_positions(self, curs: psycopg.Cursor[Any], positions: Mapping[str, Position]) -> None:
        for name, position in positions.items():
            try:
                self._insert_tracking(curs, Tracking(name, position.offset))
            except IntegrityError:
                raise StalePosition(f"{name} is already at or past offset {position.offset}") from None
        if positions:
            # The anchor is kept from the first batch of a log until the position is reset.
            curs.executemany(
                SQL(
                    'INSERT INTO {} (name, "offset", fingerprint, anchor_offset, anchor_fingerprint) '
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) "
                    'DO UPDATE SET "offset" = EXCLUDED."offset", fingerprint = EXCLUDED.fingerprint'
                ).format(self.positions_table),
                [
                    (name, p.last.offset, p.last.fingerprint, anchor.offset, anchor.fingerprint)
                    for name, p in positions.items()
                    for anchor in (p.anchor or p.last,)
                ],
            )

    def move_anchor(self, name: str, anchor: Mark) -> None:
        """The broker deleted the anchor record (retention): anchor at a later one."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("UPDATE {} SET anchor_offset = %s, anchor_fingerprint = %s WHERE name = %s").format(
                    self.positions_table
                ),
                (anchor.offset, anchor.fingerprint, name),
            )

    def reset_position(self, name: str, **why: Any) -> None:
        """Forget a partition's position (its broker log was replaced), recording why."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                ),
                (name,),
            )
            curs.execute(SQL("DELETE FROM {} WHERE name = %s").format(self.positions_table), (name,))
            self.health.record(curs, "position_reset", name, **why)

    def record_incident(self, kind: str, subject: str, **detail: Any) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self.health.record(curs, kind, subject, **detail)

    def _stored_wire(self, curs: psycopg.Cursor[Any], run: UUID, event_id: str) -> bytes | None:
        """The bytes an event id of a run was recorded as (the rare conflict check)."""
        curs.execute(
            SQL("SELECT state FROM {}.{} WHERE originator_id = %s").format(
                Identifier(self.datastore.schema), Identifier(self.events_table_name)
            ),
            (run,),
        )
        for row in curs.fetchall():
            header = read_step_state(bytes(row["state"]))
            if header.event_id == event_id:
                return header.wire
        return None

    def _copy(self, curs: psycopg.Cursor[Any], data: CopyData) -> int:
        statement = SQL(
            "COPY {}.{} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        with curs.copy(statement) as copy:
            copy.write(data.payload)
        return data.rows

    def copy_rows(self, rows: Iterable[Row]) -> int:
        """Rows made elsewhere (the query benchmark's loader), in one transaction under
        the events table's lock; positions, dead letters and NOTIFY are the ingest path's."""
        data = CopyData.of(rows)
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            return self._copy(curs, data)

    def positions(self, names: Iterable[str]) -> dict[str, Position]:
        statement = SQL(
            'SELECT t.application_name, t.notification_id, p."offset", p.fingerprint, p.anchor_offset, '
            "p.anchor_fingerprint FROM {}.{} t LEFT JOIN {} p ON p.name = t.application_name "
            "WHERE t.application_name = ANY(%s)"
        ).format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name), self.positions_table
        )
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, (list(names),))
            found = {}
            for row in curs.fetchall():
                offset = row["notification_id"]
                # A position written before marks existed (or one whose mark is older) has none.
                if row["offset"] != offset:
                    found[row["application_name"]] = Position(Mark(offset, b""))
                    continue
                found[row["application_name"]] = Position(
                    Mark(offset, bytes(row["fingerprint"])),
                    Mark(row["anchor_offset"], bytes(row["anchor_fingerprint"])),
                )
            return found

    def tenants_of(self, run_ids: Sequence[str]) -> dict[str, set[str]]:
        """The tenants each of these run ids is recorded under."""
        found: dict[str, set[str]] = {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT run_id, tenant FROM {} WHERE run_id = ANY(%s)").format(self.run_tenants),
                (list(run_ids),),
            )
            for row in curs.fetchall():
                found.setdefault(row["run_id"], set()).add(row["tenant"])
        return found

    def heads(self, run_ids: Iterable[UUID]) -> dict[UUID, RunHead]:
        """Version, last digest and event ids of each run that exists, and beside each the
        rows routing may need, undecoded (RoutingSoFar decodes them if a step is routed)."""
        statement = SQL(
            "SELECT originator_id, originator_version, state FROM {}.{} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, (list(run_ids),))
            return stored_heads(
                (row["originator_id"], row["originator_version"], bytes(row["state"]))
                for row in curs.fetchall()
            )

    def stored_links(self, run_id: UUID) -> list[StoredLink]:
        """The run's rows as the chain sees them; unreadable rows are kept as breaks."""
        links = []
        for stored in self.select_events(run_id):
            try:
                header = read_step_state(stored.state)
            except (ValueError, KeyError, UnicodeDecodeError):
                links.append(StoredLink(stored.originator_version, None, None))
            else:
                links.append(
                    StoredLink(stored.originator_version, header.wire, header.digest, header.event_id)
                )
        return links
