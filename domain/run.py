"""The Run aggregate: one per agent run, the record its receipt is folded from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.chain import GENESIS, StoredLink, link
from domain.contracts import ContractLookup
from domain.errors import NotFound
from domain.receipt import render_checked
from domain.receipt_model import Receipt
from domain.steps import StepEvent
from domain.vouches import Vouch

if TYPE_CHECKING:
    from domain.routing import RoutingSoFar

_RUN_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/run")


@lru_cache(maxsize=65_536)  # hot on ingest: a run's events arrive together
def run_uuid(tenant: str, run_id: str) -> UUID:
    """Runs are named by (tenant, run_id) on the wire; the store keys them by UUID."""
    return uuid5(_RUN_NAMESPACE, f"{tenant}\x1f{run_id}")


@dataclass(frozen=True, slots=True)
class Entry:
    """A step as recorded: the fact, its place in the run, and its chain link."""

    version: int
    step: StepEvent
    wire: bytes
    digest: bytes
    recorded_at: datetime
    # The publisher whose signature over `wire` was checked as it arrived (None: unsigned).
    vouch: Vouch | None = None


@dataclass(slots=True)
class RunHead:
    """The one way a step is recorded: what a run must know to append to it (its
    version, its chain head, each event id with a hash of the bytes it arrived as),
    advanced by every entry. The Run aggregate, the ingest path and the tests all
    record through it."""

    version: int = 0
    digest: bytes = GENESIS
    event_ids: dict[str, int] = field(default_factory=dict)
    # Kept beside the head on the ingest path only: what routing needs of the run.
    routing: RoutingSoFar | None = None
    # Whose personal data the run's steps carry when a step names none (domain/personal.py),
    # and whether the run was opened with personal data sealed: a run recorded before keeps
    # its publishers' hashes, so its later steps are not keyed either (they would not compare).
    subject: str | None = None
    sealing: bool = False

    def record(
        self, step: StepEvent, wire: bytes, recorded_at: datetime, vouch: Vouch | None = None
    ) -> Entry | None:
        """The entry that appends `step` (arrived as `wire`, signed as `vouch` says), or None
        if its id is recorded. Whether a known id came with other content is `arrived_otherwise`."""
        if not self.accepts(step):
            return None
        entry = Entry(self.version + 1, step, wire, self.next_digest(wire), recorded_at, vouch)
        self.advance(entry)
        return entry

    def accepts(self, step: StepEvent) -> bool:
        """False for an event id the run has recorded: redelivery never doubles a step."""
        return step.event_id not in self.event_ids

    def next_digest(self, wire: bytes) -> bytes:
        return link(self.digest, wire)

    def advance(self, entry: Entry) -> None:
        self.follow(entry.version, entry.digest, entry.step.event_id, entry.wire)

    def follow(self, version: int, digest: bytes, event_id: str, wire: bytes) -> None:
        """Follow a step already recorded (read back from the store, undecoded)."""
        self.version = version
        self.digest = digest
        self.event_ids[event_id] = hash(wire)

    def arrived_as(self, step: StepEvent, wire: bytes) -> None:
        """Remember the bytes a step arrived as when what was stored differs (its sealed form)."""
        self.event_ids[step.event_id] = hash(wire)

    def arrived_otherwise(self, step: StepEvent, wire: bytes) -> bool:
        """A recorded id whose bytes now differ: the same step re-encoded, or a conflict."""
        known = self.event_ids.get(step.event_id)
        return known is not None and known != hash(wire)


class Run(Aggregate):
    """Records every step of one run, in arrival order, hash-chained.

    Nothing is refused for arriving in an impossible order (a review before its
    proposal, two finals): the record keeps what happened, and the receipt
    names the oddity as a finding. Only an event id seen before is ignored,
    since redelivery must never double a step.
    """

    @staticmethod
    def create_id(step: StepEvent, **_: Any) -> UUID:
        return run_uuid(step.tenant, step.run_id)

    @classmethod
    def open(
        cls, step: StepEvent, wire: bytes, at: datetime | None = None, vouch: Vouch | None = None
    ) -> Run:
        """A run opened by its first step, recorded `at` (default: now)."""
        opened = cls.Opened  # type: ignore[attr-defined]  # made by @event("Opened") below
        return cls._create(
            opened, step=step, wire=wire, digest=link(GENESIS, wire), vouch=vouch, timestamp=at
        )

    @event("Opened")
    def __init__(self, step: StepEvent, wire: bytes, digest: bytes, vouch: Vouch | None = None) -> None:
        self.tenant = step.tenant
        self.run_id = step.run_id
        self.entries: list[Entry] = []
        self.chain = RunHead()
        self._append(step, wire, digest, self.created_on, vouch)

    def record(
        self, step: StepEvent, wire: bytes, at: datetime | None = None, vouch: Vouch | None = None
    ) -> bool:
        """Record a step `at` (default: now); False when this event id is already in the run."""
        if not self.chain.accepts(step):
            return False
        digest = self.chain.next_digest(wire)
        self.trigger_event(self.StepRecorded, step=step, wire=wire, digest=digest, vouch=vouch, timestamp=at)
        return True

    @property
    def event_ids(self) -> set[str]:
        return set(self.chain.event_ids)

    class StepRecorded(Aggregate.Event):
        # Declared rather than made by @event: an @event method runs before the
        # aggregate's modified_on moves, and each entry needs its own event's time.
        step: StepEvent
        wire: bytes
        digest: bytes
        vouch: Vouch | None = None  # rows stored before signatures existed have none

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Run)
            aggregate._append(self.step, self.wire, self.digest, self.timestamp, self.vouch)

    def _append(
        self, step: StepEvent, wire: bytes, digest: bytes, recorded_at: datetime, vouch: Vouch | None = None
    ) -> None:
        entry = Entry(len(self.entries) + 1, step, wire, digest, recorded_at, vouch)
        self.entries.append(entry)
        self.chain.advance(entry)

    @property
    def head(self) -> bytes:
        return self.chain.digest

    def links(self) -> list[StoredLink]:
        return [StoredLink(e.version, e.wire, e.digest, e.step.event_id) for e in self.entries]

    def receipt(self, as_of: datetime | None = None, contracts: ContractLookup | None = None) -> Receipt:
        """The receipt now, or as it stood at `as_of` (only steps recorded by then); with
        `contracts`, checked against its lane contract (`domain.contracts.run_contract`)."""
        entries = self.entries
        if as_of is not None:
            entries = [e for e in self.entries if e.recorded_at <= as_of]
            if not entries:
                raise NothingRecordedYet(self.run_id, as_of, self.entries[0].recorded_at)
        return render_checked(entries, contracts)


class NothingRecordedYet(NotFound, LookupError):
    title = "Nothing recorded at that time"

    def __init__(self, run_id: str, as_of: datetime, first: datetime) -> None:
        super().__init__(
            f"run '{run_id}' had nothing recorded at {as_of.isoformat()}; "
            f"its first step was recorded at {first.isoformat()}"
        )
