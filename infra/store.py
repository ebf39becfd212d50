"""The event store: eventsourcing on PostgreSQL, with a faster, safer recorder.

Runs live in eventsourcing's own tables (`receipts_events`, `receipts_tracking`)
and eventsourcing reads every row we write. Two things are ours:

- how a recorded step is stored (infra/rows.py: the step's bytes exactly as
  they arrived, behind a one-line header), so the chain can be recomputed from
  the table alone;
- how rows are sent: `StepRecorder` (infra/recorder.py) keeps eventsourcing's
  transaction (table lock, tracking rows, events, NOTIFY) but writes events with
  binary COPY, and never uses psycopg's pipeline, which hangs on saves over ~1 MB
  (BASELINES.md).

`RunStore` here is the application over both: it records steps and reads runs,
receipts and policies back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import JSONTranscoder, MapperDeserialisationError, ProcessRecorder, Transcoder
from eventsourcing.utils import get_topic

from domain.chain import Integrity
from domain.errors import Conflict, NotFound
from domain.personal import SEALED_PREFIX, PersonalData, fallback_subject
from domain.policy import Contract, Policy
from domain.receipt_model import Receipt
from domain.run import Entry, Run, run_uuid
from domain.steps import StepEvent
from domain.vouches import Vouch
from infra.policies import LoadedPolicy, NoPolicy
from infra.publishers import Signer

# Mark, Position and StepRecorder stay importable from here for consumers/ingest.py and
# bench/, which the module split left alone; their imports can move to infra.recorder.
from infra.recorder import Mark as Mark  # noqa: PLC0414
from infra.recorder import Position as Position  # noqa: PLC0414
from infra.recorder import StepRecorder as StepRecorder  # noqa: PLC0414
from infra.rows import STEP_STATE, read_step_state, step_state, stored_entry, subject_fields
from infra.sealing import open_step, seal
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
        if not spec.carries(step):
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
