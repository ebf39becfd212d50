"""The hash chain that makes a run's record tamper-evident.

Each recorded event's digest is SHA-256 over the previous digest and the event
exactly as it arrived on the wire. Hashing the received bytes (not a
re-serialised form) keeps the chain cheap on the ingest path and lets anyone
recompute it from what is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.step_values import Fact

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


class Integrity(Fact):
    """The one verdict on a run's hash chain: the receipt's, `verify`'s, the API's."""

    head: str | None
    events: int
    verified: bool
    first_bad_version: int | None = None
    first_bad_event_id: str | None = None
    reason: str | None = None
    # Set only where a receipt is served (render has no clock): when the chain
    # was last recomputed from the event store, and whether the view that served
    # the receipt holds every event the store does (None: folded from the store).
    checked_at: datetime | None = None
    view_current: bool | None = None

    @classmethod
    def of(cls, links: Sequence[StoredLink]) -> Integrity:
        """Recompute the chain over a run's stored links, in version order."""
        broken = first_break(links)
        last = links[-1].digest if links else None
        return cls(
            head=last.hex() if last else None,
            events=len(links),
            verified=broken is None and bool(links),
            first_bad_version=broken.version if broken else None,
            first_bad_event_id=broken.event_id if broken else None,
            reason=broken.reason if broken else None,
        )
