"""Closing checkpoints over the event log, storing them and handing them out.

`Checkpointer.close` reads only the rows after the last checkpoint, by position
(the first 128 bytes of a step's row hold its digest), and writes the signed
checkpoint, the heads it moved and nothing else, in one transaction under an
advisory lock: two checkpointers, or one restarted after a crash, can never
close the same range twice or leave a gap. Publishing to `<topic>.checkpoints`
is an outbox: a checkpoint is marked published only after the broker has it, so
a crash sends it again (same key, same bytes; readers keep one).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from kafka.errors import KafkaError
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from domain.checkpoint import GENESIS, Checkpoint, head_text
from domain.merkle import head_leaf, root, set_add, set_hex, set_remove
from infra.keyring import KeyRecord, Keyring, install_rotated, retired_from, rotate, staged_path
from infra.rows import DIGEST_SQL
from infra.signing import BadKey, SigningKey
from schemas import Codec

log = logging.getLogger(__name__)
_LOCK = 0x0C4EC7  # the advisory lock that makes closing a checkpoint one at a time


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: str  # base64 Ed25519 over checkpoint.body()

    def document(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint.model_dump(mode="json"), "signature": self.signature}

    def text(self) -> str:
        return json.dumps(self.document(), indent=1, sort_keys=True)


class CheckpointTables:
    def __init__(self, schema: str, events_table: str = "receipts_events") -> None:
        self.schema = schema
        self.checkpoints: Composed = SQL("{}.{}").format(
            Identifier(schema), Identifier("receipts_checkpoints")
        )
        self.heads: Composed = SQL("{}.{}").format(
            Identifier(schema), Identifier("receipts_checkpoint_heads")
        )
        self.events: Composed = SQL("{}.{}").format(Identifier(schema), Identifier(events_table))
        self.keyring = Keyring(schema)

    def create_statements(self) -> list[Composed]:
        return [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigint PRIMARY KEY, first_position bigint NOT NULL, "
                "last_position bigint NOT NULL, hash text NOT NULL, document text NOT NULL, "
                "published boolean NOT NULL DEFAULT false)"
            ).format(self.checkpoints),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (run uuid PRIMARY KEY, version bigint NOT NULL, "
                "digest bytea NOT NULL)"
            ).format(self.heads),
            self.keyring.create_statement(),
        ]

    def all(self, curs: psycopg.Cursor[Any]) -> list[SignedCheckpoint]:
        curs.execute(SQL("SELECT document FROM {} ORDER BY seq").format(self.checkpoints))
        return [signed_from(json.loads(_first(row))) for row in curs.fetchall()]

    def latest(self, curs: psycopg.Cursor[Any]) -> Checkpoint | None:
        curs.execute(SQL("SELECT document FROM {} ORDER BY seq DESC LIMIT 1").format(self.checkpoints))
        row = curs.fetchone()
        return signed_from(json.loads(_first(row))).checkpoint if row else None


def signed_from(document: dict[str, Any]) -> SignedCheckpoint:
    return SignedCheckpoint(Checkpoint.model_validate(document["checkpoint"]), str(document["signature"]))


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


# (position, run, version, digest, leaf)
LogRow = tuple[int, UUID, int, bytes, bytes]


class Sender(Protocol):
    def send(self, topic: str, value: bytes, key: bytes) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...


class Checkpointer:
    def __init__(
        self,
        datastore: PostgresDatastore,
        tables: CheckpointTables,
        key_file: Path,
        codec: Codec,
        max_events: int = 100_000,
        by: str = "receipts relay",
    ) -> None:
        self.datastore = datastore
        self.tables = tables
        self.key_file = key_file
        self.codec = codec
        self.max_events = max_events
        self.by = by

    def pending_events(self) -> int:
        """How many positions lie after the last checkpoint (an upper bound: positions have gaps)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT coalesce((SELECT max(notification_id) FROM {}), 0) - "
                    "coalesce((SELECT max(last_position) FROM {}), 0)"
                ).format(self.tables.events, self.tables.checkpoints)
            )
            return int(_first(curs.fetchone()))

    def close(self, now: datetime | None = None) -> SignedCheckpoint | None:
        """Close a checkpoint over the events after the last one (at most max_events); None
        when there are none. The key is read from its file each time: a rotation applies
        from the next checkpoint on."""
        key = SigningKey.load(self.key_file)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            self.tables.keyring.ensure(curs, key, self.by)
            current = self._current(curs, key)
            if current is None:
                return None
            key = current
            previous = self.tables.latest(curs)
            after = previous.last if previous else 0
            rows = self.rows(curs, after)
            if not rows:
                return None
            signed = self._sign(curs, key, previous, rows, now or datetime.now(UTC))
            curs.execute(
                SQL(
                    "INSERT INTO {} (seq, first_position, last_position, hash, document) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ).format(self.tables.checkpoints),
                (
                    signed.checkpoint.seq,
                    signed.checkpoint.first,
                    signed.checkpoint.last,
                    signed.checkpoint.hash,
                    json.dumps(signed.document()),
                ),
            )
        log.info(
            "checkpoint %d closed: positions %d..%d, %d events, %d runs touched, key %s",
            signed.checkpoint.seq,
            signed.checkpoint.first,
            signed.checkpoint.last,
            signed.checkpoint.events,
            len(signed.checkpoint.runs),
            key.key_id,
        )
        return signed

    def _current(self, curs: psycopg.Cursor[Any], key: SigningKey) -> SigningKey | None:
        """The key to sign with: a key rotated out is never used again. Its successor, if
        a rotation's crash left it staged, is installed; else nothing is signed yet."""
        successor = retired_from(self.tables.keyring.history(curs)).get(key.key_id)
        if successor is None:
            return key
        staged = staged_path(self.key_file)
        if staged.exists() and SigningKey.load(staged).key_id == successor[0]:
            install_rotated(self.key_file)
            return SigningKey.load(self.key_file)
        log.error(
            "the signing key %s was rotated out (by %s); %s does not hold its successor: no checkpoint",
            key.key_id,
            successor[0],
            self.key_file,
        )
        return None

    def rows(self, curs: psycopg.Cursor[Any], after: int, until: int | None = None) -> list[LogRow]:
        """The rows after `after` (up to `until`: a closed checkpoint's range, read again for
        inclusion proofs). PostgreSQL reads each digest and hashes each leaf, in C: this
        runs over every event, beside ingest."""
        reader = curs.connection.cursor(binary=True, row_factory=tuple_row)
        reader.execute(
            SQL(
                "SELECT notification_id, originator_id, originator_version, d.digest, "
                "sha256('\\x00'::bytea || uuid_send(originator_id) || int8send(originator_version) "
                "|| d.digest) "
                "FROM {}, LATERAL (SELECT " + DIGEST_SQL + " AS digest) d "
                "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id LIMIT %s"
            ).format(self.tables.events),
            (after, *((2**62, self.max_events) if until is None else (until, 2**62))),
        )
        return reader.fetchall()

    def _sign(
        self,
        curs: psycopg.Cursor[Any],
        key: SigningKey,
        previous: Checkpoint | None,
        rows: list[LogRow],
        now: datetime,
    ) -> SignedCheckpoint:
        leaves: list[bytes] = []
        total = 0
        heads: dict[UUID, tuple[int, bytes]] = {}
        for _, run, version, digest, leaf in rows:
            leaves.append(leaf)
            total += int.from_bytes(leaf, "big")  # reduced once below: set_add's sum
            heads[run] = (version, digest)
        total = set_add(total, b"")
        heads_sum = int(previous.heads_sum, 16) if previous else 0
        count = previous.heads if previous else 0
        for run, old in self._old_heads(curs, list(heads)).items():
            heads_sum = set_remove(heads_sum, head_leaf(run, *old))
            count -= 1
        for run, (version, digest) in heads.items():
            heads_sum = set_add(heads_sum, head_leaf(run, version, digest))
            count += 1
        curs.execute(
            SQL(
                "INSERT INTO {} (run, version, digest) SELECT * FROM unnest(%s::uuid[], %s::bigint[], "
                "%s::bytea[]) ON CONFLICT (run) DO UPDATE SET version = EXCLUDED.version, "
                "digest = EXCLUDED.digest"
            ).format(self.tables.heads),
            (list(heads), [h[0] for h in heads.values()], [h[1] for h in heads.values()]),
        )
        checkpoint = Checkpoint(
            seq=previous.seq + 1 if previous else 1,
            first=(previous.last if previous else 0) + 1,
            last=rows[-1][0],
            events=len(rows),
            root=root(leaves).hex(),
            events_sum=set_hex(total),
            runs=sorted(head_text(run.hex, v, d) for run, (v, d) in heads.items()),
            heads=count,
            heads_sum=set_hex(heads_sum),
            previous=previous.hash if previous else GENESIS,
            closed_at=now.isoformat(),
            key_id=key.key_id,
        )
        return SignedCheckpoint(checkpoint, base64.b64encode(key.sign(checkpoint.body())).decode())

    def _old_heads(self, curs: psycopg.Cursor[Any], runs: list[UUID]) -> dict[UUID, tuple[int, bytes]]:
        curs.execute(
            SQL("SELECT run, version, digest FROM {} WHERE run = ANY(%s)").format(self.tables.heads), (runs,)
        )
        found = {}
        for row in curs.fetchall():
            run, version, digest = row.values() if isinstance(row, dict) else row
            found[run] = (int(version), bytes(digest))
        return found

    # --- the outbox to <topic>.checkpoints ------------------------------------------------

    def publish(self, sender: Sender, topic: str) -> int:
        """Send what is not yet published (key records first), then mark it; returns how many."""
        with self.datastore.transaction(commit=False) as curs:
            keys = self.tables.keyring.unpublished(curs)
            curs.execute(
                SQL("SELECT seq, document FROM {} WHERE NOT published ORDER BY seq").format(
                    self.tables.checkpoints
                )
            )
            pending = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in curs.fetchall()]
        for entry in keys:
            sender.send(topic, value=key_message(entry), key=f"key/{entry.key_id}".encode())
        for seq, document in pending:
            sender.send(topic, value=str(document).encode(), key=f"checkpoint/{seq}".encode())
        if not keys and not pending:
            return 0
        sender.flush()
        with self.datastore.transaction(commit=True) as curs:
            self.tables.keyring.mark_published(curs, [e.key_id for e in keys])
            curs.execute(
                SQL("UPDATE {} SET published = true WHERE seq = ANY(%s)").format(self.tables.checkpoints),
                ([int(seq) for seq, _ in pending],),
            )
        return len(keys) + len(pending)


def key_message(entry: KeyRecord) -> bytes:
    return json.dumps({"key": entry.model_dump()}).encode()


class CheckpointSchedule:
    """When to close: every `seconds`, or sooner once `events` positions wait; run between
    the relay's turns (like the deadline sweeper), so a checkpoint is never a new process."""

    def __init__(
        self,
        checkpointer: Checkpointer,
        publish: Callable[[], int],
        seconds: float,
        events: int,
        look_every: float = 0.5,
    ) -> None:
        self.checkpointer = checkpointer
        self.publish = publish
        self.seconds = seconds
        self.events = events
        self.look_every = look_every
        self._last_close = time.monotonic()
        self._next_look = 0.0

    def on_each_turn(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        def turn() -> bool:
            now = time.monotonic()
            if now >= self._next_look:
                self._next_look = now + self.look_every
                self.turn(now)
            return should_stop()

        return turn

    def turn(self, now: float) -> None:
        try:
            due = now - self._last_close >= self.seconds
            if due or self.checkpointer.pending_events() >= self.events:
                while (
                    self.checkpointer.close() is not None
                    and self.checkpointer.pending_events() >= self.events
                ):
                    pass
                self._last_close = now
            self.publish()
        except (PersistenceError, KafkaError, OSError) as error:  # the next turn tries again
            log.warning("checkpoint not closed or published yet: %s: %s", type(error).__name__, error)
        except BadKey as error:
            # No usable key: the relay goes on publishing decisions; checkpoints wait for one.
            self._last_close = now
            log.error("no checkpoint closed: %s", error.detail)


def rotate_key(
    datastore: PostgresDatastore, tables: CheckpointTables, path: Path, by: str, reason: str
) -> KeyRecord:
    """Rotate under the checkpointer's lock: the new key signs from the next checkpoint on,
    and no checkpoint is closed with the old one after that."""
    with datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        latest = tables.latest(curs)
        entry = rotate(curs, tables.keyring, path, by, reason, (latest.seq if latest else 0) + 1)
    install_rotated(path)
    return entry
