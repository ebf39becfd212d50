"""The hash chain that makes a run's record tamper-evident.

Each recorded event's digest is SHA-256 over the previous digest and the event
exactly as it arrived on the wire. Hashing the received bytes (not a
re-serialised form) keeps the chain cheap on the ingest path and lets anyone
recompute it from what is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = bytes(32)


def link(previous: bytes, wire: bytes) -> bytes:
    return hashlib.sha256(previous + wire).digest()


@dataclass(frozen=True, slots=True)
class StoredLink:
    """One stored event as the chain sees it. `wire`/`digest` are None when the
    stored row could not even be read: that is a break too."""

    version: int
    wire: bytes | None
    digest: bytes | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    version: int
    event_id: str | None
    reason: str


def first_break(links: Iterable[StoredLink]) -> ChainBreak | None:
    """Recompute the chain in version order; name the first event that does not match."""
    previous = GENESIS
    expected_version = 1
    for stored in links:
        if stored.version < expected_version:
            return ChainBreak(stored.version, stored.event_id, f"version {stored.version} appears twice")
        if stored.version > expected_version:
            return ChainBreak(
                expected_version,
                None,
                f"version {expected_version} is missing (next stored is {stored.version})",
            )
        if stored.wire is None or stored.digest is None:
            return ChainBreak(stored.version, stored.event_id, "stored row is unreadable")
        recomputed = link(previous, stored.wire)
        if recomputed != stored.digest:
            return ChainBreak(
                stored.version,
                stored.event_id,
                f"digest mismatch: stored {stored.digest.hex()[:16]}…, recomputed {recomputed.hex()[:16]}…",
            )
        previous = stored.digest
        expected_version += 1
    return None
