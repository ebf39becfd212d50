"""The one interface every rollback adapter implements, and what it may answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.rollback import ReverseEvent


@dataclass(frozen=True, slots=True)
class Reverted:
    """Undone: `reverse_ref` names the undoing at the target (a revert commit, a
    webhook delivery); `verified` says the adapter checked the target after it."""

    reverse_ref: str | None
    verified: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Corrected:
    """Not undoable (a sent email): a correction was recorded and the owner told."""

    correction: str
    notified_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Not undone. `retryable`: the same reverse event may succeed later (a target
    away); otherwise a person must act (a conflict, a refusal), so never loop on it."""

    error: str
    retryable: bool


Outcome = Reverted | Corrected | Failed


class Adapter(Protocol):
    """Undoes one reverse event at its target system.

    Must be idempotent by `reverse.reverse_id`: the rollback consumer may deliver the
    same reverse event again (a crash before its offset was committed), and a repeat
    must change nothing more at the target and answer as the first call did. Errors
    the target reports are a `Failed`, not an exception."""

    def apply(self, reverse: ReverseEvent) -> Outcome: ...
