"""A checkpoint: what the event log held up to a position, signed by the service.

A checkpoint covers the log positions `first..last` (the previous one's last + 1
on): the number of events recorded there, the RFC 6962 Merkle root over their
leaves in log order (domain/merkle.event_leaf), the order-free sum of the same
leaves, the head (version, digest) of every run those events touched, and the
set hash of every run's head so far — so a run deleted whole, even one the
latest checkpoints never touched, changes a number the service signed. It
names the hash of the previous checkpoint (a chain) and the key that signs it.

What is signed is the canonical JSON of the body (sorted keys, no spaces, ASCII):
the README's standalone verifier recomputes exactly those bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

GENESIS = "00" * 32
FORMAT = "agent-receipts/checkpoint/v1"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Checkpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = FORMAT
    seq: int
    first: int  # log positions covered, inclusive (positions can have gaps: aborted transactions)
    last: int
    events: int
    root: str  # hex Merkle root over the range's event leaves, in log order
    events_sum: str  # hex sum of the same leaves mod 2^256
    # "run-uuid-hex:version:digest-hex" of each run the range touched, sorted
    runs: list[str]
    heads: int  # runs anchored so far
    heads_sum: str  # hex sum of every run's head leaf (domain/merkle.head_leaf)
    previous: str  # hex SHA-256 of the previous checkpoint's body; GENESIS for the first
    closed_at: str
    key_id: str

    def body(self) -> bytes:
        return canonical(self.model_dump(mode="json"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()


def head_text(run_hex: str, version: int, digest: bytes) -> str:
    return f"{run_hex}:{version}:{digest.hex()}"


def parse_head(text: str) -> tuple[str, int, bytes]:
    run, version, digest = text.split(":")
    return run, int(version), bytes.fromhex(digest)


class Finding(BaseModel):
    """One thing the store, the checkpoints or a receipt file disagree on, named by `kind`."""

    kind: str
    detail: str
    run: str | None = None  # the run's name where known (tenant/run_id), else its store id
    version: int | None = None
    checkpoint: int | None = None
