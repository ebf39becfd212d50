"""The event store: eventsourcing on PostgreSQL, with a faster, safer recorder.

Runs live in eventsourcing's own tables (`receipts_events`, `receipts_tracking`)
and eventsourcing reads every row we write. Two things are ours:

- how a recorded step is stored (infra/rows.py: the step's bytes exactly as
  they arrived, behind a one-line header), so the chain can be recomputed from
  the table alone;
- how rows are sent: `StepRecorder` keeps eventsourcing's transaction (table
  lock, tracking rows, events, NOTIFY) but writes events with binary COPY, and
  never uses psycopg's pipeline, which hangs on saves over ~1 MB (BASELINES.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    MapperDeserialisationError,
    ProcessRecorder,
    StoredEvent,
    Tracking,
    Transcoder,
)
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from domain.chain import Integrity, StoredLink
from domain.errors import Conflict, NotFound
from domain.personal import SEALED_PREFIX, PersonalData, fallback_subject
from domain.policy import Contract, Policy
from domain.receipt_model import Receipt
from domain.run import Entry, Run, RunHead, run_uuid
from domain.steps import StepEvent
from domain.vouches import Vouch
from infra.checkpoints import CheckpointTables
from infra.dead_letters import DeadLetter, DeadLetterTable
from infra.health import Health
from infra.idempotency import IdempotencyTable
from infra.policies import LoadedPolicy, NoPolicy, PolicyBook, PolicyTable
from infra.principals import PrincipalTable
from infra.publishers import PublisherTable, Signer
from infra.rows import (
    STEP_STATE,
    CopyData,
    Row,
    read_step_state,
    step_state,
    stored_entry,
    stored_heads,
    subject_fields,
)
from infra.sealing import open_step, seal
from infra.sessions import SessionTable
from infra.subject_keys import KeyRing
from schemas import Codec, DecodeError, encode_json


class StepTranscoder(Transcoder):
    """Stored state of Run events <-> the dict eventsourcing's Mapper expects.

    Anything that is not a recorded step (later aggregates, such as policy
    versions) falls through to eventsourcing's JSON transcoder.
    """

    def __init__(self, codec: Codec, fallback: JSONTranscoder, keys: Callable[[], KeyRing]) -> None:
        self.codec = codec
        self.fallback = fallback
        self.keys = keys  # the recorder's, made after the transcoder

    def encode(self, obj: Any) -> bytes:
        step = obj.get("step") if isinstance(obj, dict) else None
        if not isinstance(step, StepEvent):
            return self.fallback.encode(obj)
        wire = obj["wire"]
        # A step the service sealed (RunStore.sealed) names whose key opens it, as ingest's rows do.
        sealed = step.subject is not None and SEALED_PREFIX.encode() in wire
        return step_state(
            obj["timestamp"],
            obj["digest"],
            step.event_id,
            wire,
            opens_run="originator_topic" in obj,
            step_type=step.type,
            subjects=subject_fields(step.subject if sealed else None, None),
            vouch=obj.get("vouch"),
        )

    def decode(self, data: bytes) -> Any:
        if not data.startswith(STEP_STATE):
            return self.fallback.decode(data)
        header = read_step_state(data)
        step = self.codec.decode(header.wire)
        if header.subject is not None:
            step = open_step(step, self.keys().key_of(step.tenant, header.subject))
        state: dict[str, Any] = {
            "timestamp": header.recorded_at,
            "step": step,
            "wire": header.wire,
            "digest": header.digest,
            "vouch": header.vouch,
        }
        if header.originator_topic:
            state["originator_topic"] = header.originator_topic
        return state


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
        self.keyring = KeyRing(self.datastore, schema)
        self.sql_create_statements.extend(self.keyring.tables.create_statements())
        self.health = Health(schema)
        self.checkpoint_tables = CheckpointTables(schema)
        self.sql_create_statements += self.checkpoint_tables.create_statements()
        self.positions_table = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_positions"))
        self.sql_create_statements.append(self.letters.create_statement())
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


class RunNotFound(NotFound, LookupError):
    title = "Run not found"

    def __init__(self, tenant: str, run_id: str) -> None:
        super().__init__(f"no run '{run_id}' in tenant '{tenant}'")


class RunUnreadable(Conflict, RuntimeError):
    title = "Run record damaged"

    """A stored event of the run no longer decodes: the record was altered or damaged."""

    def __init__(self, tenant: str, run_id: str, detail: str) -> None:
        super().__init__(
            f"run '{run_id}' in tenant '{tenant}' has an event that no longer "
            f"decodes ({detail}); `receipts verify {run_id}` names it"
        )


class RunStore(Application[UUID]):
    """The Receipts application: runs in, receipts and verification out."""

    name = "Receipts"
    env: ClassVar[dict[str, str]] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "PROCESS_RECORDER_TOPIC": get_topic(StepRecorder),
        # Exactly-once needs the tracking row written; the DB-functions path skips it.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        codec: Codec | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.codec = codec or Codec()
        # When `record` says a step was recorded (ingest stamps its own batches).
        self.clock = clock
        # The service's key (composition root: api/bootstrap.py): the steps only the service
        # writes (`record_service_step`) are vouched for by it.
        self.service: Signer | None = None
        super().__init__(env=dict(env or {}))

    def construct_transcoder(self) -> Transcoder:
        fallback = JSONTranscoder()
        self.register_transcodings(fallback)
        return StepTranscoder(self.codec, fallback, lambda: self.steps.keyring)

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    @property
    def steps(self) -> StepRecorder:
        assert isinstance(self.recorder, StepRecorder)
        return self.recorder

    def run(self, tenant: str, run_id: str, version: int | None = None) -> Run:
        try:
            run: Run = self.repository.get(run_uuid(tenant, run_id), version=version)
        except AggregateNotFoundError:
            raise RunNotFound(tenant, run_id) from None
        except MapperDeserialisationError as error:
            raise RunUnreadable(tenant, run_id, str(error.__cause__ or error)) from error
        return run

    def sealed(self, step: StepEvent, personal: PersonalData | None = None) -> tuple[StepEvent, bytes]:
        """A step the service records itself (an edit or a review through the approval queue),
        sealed as ingest seals a published one: under the run's subject, hashes keyed alike."""
        spec = personal or self._personal_data()
        if not spec.present(getattr(step, "data", None), step.type):
            return step, encode_json(step)
        run = run_uuid(step.tenant, step.run_id)
        head = self.steps.heads([run]).get(run)
        if head is None or not head.sealing:
            return step, encode_json(step)  # a run recorded before sealing began stays as it was
        subject = step.subject or head.subject or fallback_subject(step)
        key = self.steps.keyring.keys_for([(step.tenant, subject)])[(step.tenant, subject)]
        step = step.model_copy(update={"subject": subject})
        return step, seal(spec, step, subject, key) or encode_json(step)

    def _personal_data(self) -> PersonalData:
        try:
            return self.policy_in_force().policy().personal_data
        except NoPolicy:
            return PersonalData()

    def stored_entries(self, tenant: str, run_id: str) -> list[Entry]:
        """The run's steps as stored, personal fields still sealed: what the views fold, so a
        view and a fresh fold compare alike whether or not the subject's key still exists."""
        entries = []
        for stored in self.steps.select_events(run_uuid(tenant, run_id)):
            try:
                entries.append(stored_entry(stored.originator_version, stored.state, self.codec))
            except (ValueError, KeyError, DecodeError) as error:
                raise RunUnreadable(tenant, run_id, str(error)) from error
        if not entries:
            raise RunNotFound(tenant, run_id)
        return entries

    def receipt(
        self,
        tenant: str,
        run_id: str,
        unfinished_after: timedelta,
        *,
        as_of: datetime | None = None,
        version: int | None = None,
    ) -> Receipt:
        """The run's receipt from its own events (as of a time, or after `version` of
        them), as a reader sees it then: now, or at `as_of`."""
        receipt = self.run(tenant, run_id, version=version).receipt(as_of, self.contract)
        return receipt.seen_at(as_of or datetime.now(UTC), unfinished_after)

    def verify(self, tenant: str, run_id: str) -> Integrity:
        """Recompute the run's hash chain from the rows as stored."""
        links = self.steps.stored_links(run_uuid(tenant, run_id))
        if not links:
            raise RunNotFound(tenant, run_id)
        return Integrity.of(links)

    # --- the policies put in force (infra/policies.py) -------------------------------------

    def record_policy(
        self, policy: Policy, source: str, by: str, at: datetime | None = None
    ) -> tuple[LoadedPolicy, bool]:
        """Put `policy` in force unless it is already, in one transaction; whether it was new."""
        with self.steps.datastore.transaction(commit=True) as curs:
            return self.steps.policies.record(curs, policy, source, by, at)

    def policy_in_force(self, as_of: datetime | None = None) -> LoadedPolicy:
        with self.steps.datastore.transaction(commit=False) as curs:
            found = self.steps.policies.in_force(curs, as_of)
        if found is None:
            when = f" at {as_of.isoformat()}" if as_of else ""
            raise NoPolicy(f"no policy was in force{when}: none had been loaded yet")
        return found

    def recorded_policy(self, version: str) -> Policy | None:
        """The policy recorded under `version` (its content hash), None if none is."""
        known = self.steps.policy_book.known(version)
        if known is not None:
            return known
        with self.steps.datastore.transaction(commit=False) as curs:
            return self.steps.policy_book.policy(curs, version)

    def contract(self, version: str, workflow: str) -> Contract | None:
        """A `ContractLookup` over the recorded policies: what receipts are checked against."""
        policy = self.recorded_policy(version)
        return policy.contract_for(workflow) if policy else None

    def policy_versions(self) -> list[LoadedPolicy]:
        with self.steps.datastore.transaction(commit=False) as curs:
            return self.steps.policies.versions(curs)

    def latest_policy_version(self) -> str | None:
        with self.steps.datastore.transaction(commit=False) as curs:
            return self.steps.policies.latest_version(curs)

    def record(
        self, steps: Iterable[tuple[StepEvent, bytes]], vouch_for: Callable[[bytes], Vouch] | None = None
    ) -> int:
        """Record steps through the aggregate (the slow, simple path: tests, tools, and the
        steps only the service writes, each vouched for by `vouch_for` (the service's key)).

        Returns how many were new."""
        runs: dict[UUID, Run] = {}
        added = 0
        for step, wire in steps:
            key = run_uuid(step.tenant, step.run_id)
            vouch = vouch_for(wire) if vouch_for else None
            run = runs.get(key)
            if run is None:
                try:
                    run = runs[key] = self.run(step.tenant, step.run_id)
                except RunNotFound:
                    runs[key] = Run.open(step, wire, self.clock(), vouch)
                    added += 1
                    continue
            added += run.record(step, wire, self.clock(), vouch)
        self.save(*runs.values())
        return added
