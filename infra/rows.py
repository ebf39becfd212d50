"""How a recorded step is stored: the one module that writes and reads the row.

A row of eventsourcing's events table holds, for each recorded step, `S1` + a
one-line JSON header (recorded-at, chain digest, event id, the step's type, and
for a run's first step the aggregate's topic, and for a signed step the publisher
that vouched for it and its signature) + the step's bytes exactly as they arrived,
so the chain can be recomputed from the table alone and eventsourcing reads
every row back as a `Run` event. The ingest writer, the head lookup, the
transcoder, verification and the projections' log all go through here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.routing import RoutingSoFar
from domain.run import Entry, Run, RunHead
from domain.vouches import Vouch
from schemas import Codec

Row = tuple[UUID, int, str, bytes]

STEP_STATE = b"S1"
# The event classes of Run (Opened made by its @event __init__).
OPENED_TOPIC = get_topic(Run.Opened)  # type: ignore[attr-defined]
RECORDED_TOPIC = get_topic(Run.StepRecorded)
RUN_TOPIC = get_topic(Run)


class StepStates:
    """Writes the stored form of steps recorded at one instant (see module doc).

    The ingest path writes one per event, so the header is formatted by hand:
    json.dumps with custom separators builds a new encoder on every call."""

    _OPENS = f',"o":{json.dumps(RUN_TOPIC)}'.encode()

    def __init__(self, recorded_at: datetime) -> None:
        self._prefix = STEP_STATE + b'{"t":"' + recorded_at.isoformat().encode() + b'","d":"'

    def row(self, run: UUID, entry: Entry, subjects: bytes = b"") -> Row:
        """The row that stores `entry` of `run`: the first opens the aggregate. `subjects`:
        `subject_fields` of a step whose personal data is sealed or that names the run's subject."""
        opens = entry.version == 1
        state = self(
            entry.digest, entry.step.event_id, entry.wire, opens, entry.step.type, subjects, entry.vouch
        )
        return run, entry.version, OPENED_TOPIC if opens else RECORDED_TOPIC, state

    def __call__(
        self,
        digest: bytes,
        event_id: str,
        wire: bytes,
        opens_run: bool,
        step_type: str | None = None,
        subjects: bytes = b"",
        vouch: Vouch | None = None,
    ) -> bytes:
        return b"".join(
            (
                self._prefix,
                digest.hex().encode(),
                b'","e":',
                json.dumps(event_id).encode(),
                self._OPENS if opens_run else b"",
                _type_field(step_type),
                subjects,
                _vouch_field(vouch) if vouch else b"",
                b"}\n",
                wire,
            )
        )


SEALING_RUN = b',"p":1'


def subject_fields(sealed_for: str | None, run_subject: str | None, opens: bool = False) -> bytes:
    """Header fields naming whose key sealed the row's fields ("s"), on the row that settles
    it the run's subject ("rs": what a restarted ingest falls back to), and on a run's first
    row that the run's personal data is sealed ("p")."""
    parts = SEALING_RUN if opens else b""
    if sealed_for is not None:
        parts += b',"s":' + json.dumps(sealed_for).encode()
    if run_subject is not None:
        parts += b',"rs":' + json.dumps(run_subject).encode()
    return parts


@lru_cache(maxsize=64)
def _type_field(step_type: str | None) -> bytes:
    # The step's type in the header lets the head lookup decode only the rows routing needs.
    return f',"y":{json.dumps(step_type)}'.encode() if step_type else b""


# PostgreSQL's binary COPY format, written by hand: psycopg's per-row dumpers
# cost more than the rest of the write. A row is a field count, then each
# field's length and bytes: uuid (16), bigint (8), text, bytea.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_COPY_ROW = struct.Struct(">hi16siq")


@dataclass(frozen=True, slots=True)
class CopyData:
    """Rows encoded for `COPY … FROM STDIN (FORMAT BINARY)`, all at once. The ingest
    loop makes it while preparing a batch, so the writer thread, holding the events
    table's lock, sends one buffer and runs no Python per row."""

    payload: bytes
    rows: int

    @classmethod
    def of(cls, rows: Iterable[Row]) -> CopyData:
        parts = [_COPY_SIGNATURE]
        count = 0
        for run, version, topic, state in rows:
            parts += (_COPY_ROW.pack(4, 16, run.bytes, 8, version), _copy_text(topic))
            parts += (len(state).to_bytes(4, "big"), state)
            count += 1
        parts.append(_COPY_TRAILER)
        return cls(b"".join(parts), count)


@lru_cache(maxsize=64)
def _copy_text(value: str) -> bytes:
    encoded = value.encode()
    return len(encoded).to_bytes(4, "big") + encoded


def _vouch_field(vouch: Vouch) -> bytes:
    # Beside the hashed bytes, not in them: the chain is over what the publisher sent.
    publisher = b',"vp":' + json.dumps(vouch.publisher).encode()
    if vouch.signature is None:  # written by the service itself
        return publisher
    return b"".join((publisher, b',"vs":"', base64.b64encode(vouch.signature), b'"'))


def step_state(
    recorded_at: datetime,
    digest: bytes,
    event_id: str,
    wire: bytes,
    opens_run: bool,
    step_type: str | None = None,
    subjects: bytes = b"",
    vouch: Vouch | None = None,
) -> bytes:
    return StepStates(recorded_at)(digest, event_id, wire, opens_run, step_type, subjects, vouch)


@dataclass(frozen=True, slots=True)
class StepHeader:
    recorded_at: datetime
    digest: bytes
    event_id: str
    originator_topic: str | None
    wire: bytes
    step_type: str | None = None  # None in rows written before headers named it
    subject: str | None = None  # whose key sealed its personal fields; None: nothing sealed
    run_subject: str | None = None
    sealing: bool = False  # the run's first row: its personal data is sealed
    vouch: Vouch | None = None  # None: the step arrived unsigned


def read_step_state(state: bytes) -> StepHeader:
    if not state.startswith(STEP_STATE):
        raise ValueError("not a recorded step")
    newline = state.index(b"\n")
    header = json.loads(state[len(STEP_STATE) : newline])
    return StepHeader(
        recorded_at=datetime.fromisoformat(header["t"]),
        digest=bytes.fromhex(header["d"]),
        event_id=header["e"],
        originator_topic=header.get("o"),
        wire=state[newline + 1 :],
        step_type=header.get("y"),
        subject=header.get("s"),
        run_subject=header.get("rs"),
        sealing=bool(header.get("p")),
        vouch=_vouch(header),
    )


def _vouch(header: dict[str, Any]) -> Vouch | None:
    if "vp" not in header:
        return None
    signature = header.get("vs")
    return Vouch(header["vp"], base64.b64decode(signature) if signature is not None else None)


def stored_entry(version: int, state: bytes, codec: Codec) -> Entry:
    """The recorded step a row holds; raises ValueError/KeyError/DecodeError if it no longer reads."""
    header = read_step_state(state)
    return Entry(
        version, codec.decode(header.wire), header.wire, header.digest, header.recorded_at, header.vouch
    )


def stored_heads(rows: Iterable[tuple[UUID, int, bytes]]) -> dict[UUID, RunHead]:
    """Each run's head from its stored rows (run, version, state), in version order, with
    beside it the rows routing may need, undecoded: the head lookup reads nothing else."""
    found: dict[UUID, RunHead] = {}
    for run, version, state in rows:
        header = read_step_state(state)
        head = found.get(run)
        if head is None:
            head = found[run] = RunHead(routing=RoutingSoFar())
        head.follow(version, header.digest, header.event_id, header.wire)
        if header.run_subject is not None and head.subject is None:
            head.subject = header.run_subject
        head.sealing = head.sealing or header.sealing
        if head.routing is not None:
            head.routing.stored(header.step_type, header.wire)
    return found


_DIGEST_FIELD = b'"d":"'
# The digest field is the header's second: always within this many bytes of the row.
DIGEST_WITHIN = 128
_HEX = re.compile(rb"[0-9a-f]{64}")


def header_digest(state: bytes) -> bytes | None:
    """A step's chain digest read from the first DIGEST_WITHIN bytes of its row, without
    parsing the header's JSON (the checkpointer and `verify --all` read every row). The
    checkpointer's SQL (infra/checkpoints.py, DIGEST_SQL) applies the same rule."""
    if not state.startswith(STEP_STATE):
        return None
    at = state.find(_DIGEST_FIELD, 2, DIGEST_WITHIN)
    if at < 0:
        return None
    chunk = state[at + 5 : at + 69]
    if at + 69 > DIGEST_WITHIN or not _HEX.fullmatch(chunk):
        return None
    return bytes.fromhex(chunk.decode("ascii"))


def anchored_digest(state: bytes) -> bytes:
    """What a checkpoint commits to for a stored row: a step's chain digest; for any other
    row, or a step whose header no longer reads, the SHA-256 of all its bytes."""
    return header_digest(state) or hashlib.sha256(state).digest()


# header_digest in SQL, over a column `state`: PostgreSQL finds and decodes the digest (and
# hashes the leaf) in C, so the checkpointer beside ingest runs little Python per event.
# position() is 1-based: the field is "within" when it ends by byte DIGEST_WITHIN.
_AT = f'position(\'"d":"\'::bytea in substring(state from 3 for {DIGEST_WITHIN - 2}))'
_CHUNK = f"encode(substring(state from {_AT} + 7 for 64), 'escape')"
DIGEST_SQL = (
    f"CASE WHEN substring(state for 2) = 'S1'::bytea AND {_AT} > 0 AND {_AT} + 70 <= {DIGEST_WITHIN} "
    f"AND length({_CHUNK}) = 64 AND {_CHUNK} ~ '^[0-9a-f]+$' "
    f"THEN decode({_CHUNK}, 'hex') ELSE sha256(state) END"
)
