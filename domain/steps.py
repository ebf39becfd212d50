"""The facts an agent run is made of: one frozen class per step type.

Wire names (`action.proposed`) are the stable contract; class names
(`ActionProposed`) are what the code calls them. Nothing here knows how a step
travels or is stored: that is `schemas/` and `infra/`.

Fields a receipt treats as evidence (an input reference, a rollback link, the
model) are optional on purpose: a step that lacks them is still a fact worth
recording, and its absence is reported as a finding instead of being rejected.

What a step may hold at all is bounded here, once (see "limits" below): a value
outside the bounds is not a fact the store could keep or its readers could read
back, so it is rejected and dead-lettered with the field and the limit named.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

# --- limits: what the store and its readers can hold -------------------------
#
# Every value a publisher sends is checked against these before it is recorded,
# so nothing unstorable gets in and nothing recorded breaks a reader later.
# Ingest validates tens of thousands of events a second, so each check is one
# pydantic-core constraint or one memchr, never a Python walk over a whole step.
# README "Limits of what is recorded" documents them for publishers.

# Identifiers, names and codes end up in text columns and btree indexes, whose
# entries must stay under ~2.7 KB: 512 characters leaves room for realistic ids
# (URLs used as ids, file paths) and keeps one column's entry at most 2 KB (4
# bytes a character). It cannot make an index over several such columns safe:
# two 512-character CJK values in one row already make a 3,096-byte entry
# (measured), so such indexes must take a prefix or a hash of their columns.
MAX_NAME_LENGTH = 512
# Instants PostgreSQL timestamptz and Python's datetime both hold, with room for
# any UTC offset (Python stops at years 1 and 9999 *in UTC*, so 9999-12-31T23:00-05:00
# is stored by PostgreSQL and then breaks every reader).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# Levels of objects and arrays in `params` (the object itself is level 1). Parsers
# and serialisers recurse: pydantic's serialiser refuses a few hundred levels,
# Python's json module raises RecursionError past ~1,000. A real tool call nests
# a handful of levels; 64 keeps every reader far from its own limit.
MAX_PARAMS_DEPTH = 64
# PostgreSQL text cannot hold U+0000, so no string anywhere may contain it, free
# text included: rejecting is simpler and more honest than a silent substitution.
NO_NUL = r"^[^\x00]*$"
NUL_REASON = "should not contain NUL (U+0000), which PostgreSQL text cannot hold"
NUL_MESSAGE = f"String {NUL_REASON}"


def _bounded_json(params: dict[str, Any]) -> dict[str, Any]:
    """`params` is the one free-form JSON value: check its depth, NULs and numbers.

    Iterative on purpose: a recursive walk is the very thing deep nesting breaks."""
    stack: list[tuple[Any, int]] = [(params, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PARAMS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMS_DEPTH} levels of objects and arrays")
        if isinstance(node, dict):
            for key in node:
                if "\x00" in key:
                    raise ValueError(f"a key {NUL_REASON}")
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, str):
                if "\x00" in child:
                    raise ValueError(f"a string {NUL_REASON}")
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float) and not math.isfinite(child):
                # JSON has no NaN or Infinity (1e400 parses as inf): it would be
                # written back as null, so the record would not say what was sent.
                raise ValueError("a number is not finite (NaN, Infinity or out of range)")
    return params


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError(NUL_MESSAGE)
    return text


# A required identifier, name or code; `Label` is the same where empty is allowed.
# Native constraints: no Python call per field (~60 ns a short string).
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NO_NUL)]
Label = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH, pattern=NO_NUL)]
# Free text (outputs, excerpts, comments, reasons, URIs): any length, no NUL. Not
# the pattern: pydantic-core's regex costs ~2.5 ns a character (25 µs on a 10 KB
# output) where `in` (memchr) costs a fixed ~70 ns call.
Text = Annotated[str, AfterValidator(_no_nul)]
Sentence = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
Instant = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
Params = Annotated[dict[str, Any], AfterValidator(_bounded_json)]

Lane = Literal["auto", "review", "escalate", "draft_only", "block"]
RollbackMethod = Literal["revert", "amend", "reopen", "correct", "delete", "none"]
ExecutedState = Literal["sent", "routed", "written", "published", "synced", "noted"]
FinalState = Literal[
    "sent",
    "held",
    "edited",
    "rejected",
    "escalated",
    "synced",
    "published",
    "reverted",
    "corrected",
    "failed",
    "abandoned",
]


class Fact(BaseModel):
    # Unknown fields are ignored so that newer publishers (extra optional
    # fields) never break an older reader.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Actor(Fact):
    kind: Literal["agent", "human", "system"]
    id: Name
    role: Label | None = None


class Reference(Fact):
    """A record in some other system: a ticket, a CRM contact, a page."""

    system: Name
    kind: Name
    id: Name
    uri: Text | None = None

    @property
    def key(self) -> str:
        return f"{self.system}/{self.kind}/{self.id}"


class InputReference(Reference):
    hash: Label | None = None


class ContainedRecord(Fact):
    """A record that is part of a source: a payment method in a user record, an item in an order."""

    system: Name
    kind: Name
    id: Name

    @property
    def key(self) -> str:
        return f"{self.system}/{self.kind}/{self.id}"


class Source(Reference):
    version: Label | None = None
    retrieved_at: Instant | None = None
    excerpt: Text | None = None
    hash: Label | None = None


class Agent(Fact):
    name: Name
    version: Label


class Model(Fact):
    provider: Name
    name: Name
    version: Label


class Action(Fact):
    verb: Name
    target: Reference
    tool: Name
    params: Params = Field(default_factory=dict)
    output: Text = ""
    output_hash: Label = ""


class Signal(Fact):
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    reason_code: Label | None = None
    flags: tuple[Label, ...] = ()


class RollbackLink(Fact):
    method: RollbackMethod
    ref: Label | None = None
    prior_version: Label | None = None
    runbook: Text | None = None


# --- data of each step type -------------------------------------------------


class Origin(Fact):
    """Where an imported run's record came from (v4): absent for a run published live."""

    format: Name
    # False: the format carries no approvals, so their absence proves nothing.
    approvals_recorded: bool


class RunStartedData(Fact):
    workflow: Name
    input: InputReference | None = None
    agent: Agent | None = None
    model: Model | None = None
    origin: Origin | None = None


class SourceUsedData(Fact):
    source: Source
    # Records that are part of the source (v4): a step naming one relied on the source.
    contains: tuple[ContainedRecord, ...] = ()


class ActionProposedData(Fact):
    action: Action
    signal: Signal = Signal()
    source_ids: tuple[Label, ...] = ()
    rollback: RollbackLink | None = None


DecisionSource = Literal["service", "platform"]


class PolicyDecidedData(Fact):
    rule_id: Name
    policy_version: Name
    lane: Lane
    reasons: tuple[Text, ...] = ()
    missing_fields: tuple[Label, ...] = ()
    required_role: Label | None = None
    # Written by the service's own policy engine (domain.routing); a platform
    # sends none of them, so absent means the platform decided.
    decision_id: Label | None = None
    matched_rules: tuple[Label, ...] = ()
    source: DecisionSource | None = None


class ActionEditedData(Fact):
    output: Text
    output_hash: Name
    base_hash: Name


class ActionReviewedData(Fact):
    decision: Literal["approved", "rejected", "escalated"]
    reviewed_hash: Name
    comment: Text | None = None


class ActionHeldData(Fact):
    reason: Sentence
    missing_fields: tuple[Label, ...] = ()


class ActionExecutedData(Fact):
    executed_hash: Name
    state: ExecutedState
    external_ref: Label | None = None
    url: Text | None = None
    # The event id of the decision it relied on: the approval (or the lane decision of an
    # auto lane). One approval authorizes one execution (domain/authorizations.py).
    authorization_ref: Label | None = None


class ErrorData(Fact):
    error: Sentence


class RollbackRequestedData(Fact):
    reason: Sentence
    # v1 named a scope only; a v3 request names its steps (none: every executed step of
    # the run) and who asked, under an id its reverse events and outcomes point back to.
    scope: Literal["step", "run"] = "run"
    rollback_id: Label | None = None
    steps: tuple[Label, ...] = ()
    requested_by: Actor | None = None


class ReverseOutcome(Fact):
    """What an outcome of one reverse event names: its rollback and the reverse event
    (the step it undoes is the envelope's `step_id`)."""

    rollback_id: Label | None = None
    reverse_id: Label | None = None


class ActionRevertedData(ReverseOutcome):
    method: RollbackMethod
    reverse_ref: Label | None = None
    note: Text | None = None
    # True when the adapter checked the target after undoing (the file is back, the
    # endpoint acknowledged); None when a platform reported the revert itself.
    verified: bool | None = None


class RollbackFailedData(ReverseOutcome):
    error: Sentence
    # True: the same reverse event may succeed later (a target away); False: a person
    # must act (a conflict, a refusal). None: a platform's report, which does not say.
    retryable: bool | None = None


class RollbackStandsData(Fact):
    """A step a rollback cannot undo: what a person must do instead."""

    runbook: Sentence
    rollback_id: Label | None = None
    method: RollbackMethod | None = None


class RecordCorrectedData(ReverseOutcome):
    corrects: Name
    correction: Sentence
    reason: Sentence


class ConsentGivenData(Fact):
    """The customer's own words agreeing to a step (v4), kept with their real time."""

    text: Sentence
    # The confirmation pattern the words matched (an importer's mapping), if any.
    pattern: Text | None = None


class RunFinishedData(Fact):
    final_state: FinalState


FlagCode = Literal["conflicting_duplicate", "key_mismatch", "tenant_changed"]


class RecordFlaggedData(Fact):
    """The service's note on how one of the run's events arrived."""

    code: FlagCode
    message: Sentence
    event_ids: tuple[Name, ...] = ()


Verdict = Literal["approve", "reject", "edit", "escalate", "rollback"]


class DecisionRefusedData(Fact):
    """A person's decision the approval queue refused: who tried what, and the rule it broke."""

    decision: Verdict
    version_hash: Label
    rule: Name
    detail: Sentence
    tried_by: Actor


class ActionExpiredData(Fact):
    """A step that waited for a person past its lane contract's deadline."""

    deadline: Instant
    waiting_since: Instant


# --- the envelope, one class per wire type ----------------------------------


class StepEvent(Fact):
    type: str  # the wire name; each subclass narrows it to its Literal
    event_id: Name
    run_id: Name
    tenant: Name = "default"
    occurred_at: Instant
    actor: Actor
    step_id: Label | None = None


class RunStarted(StepEvent):
    type: Literal["run.started"]
    data: RunStartedData


class SourceUsed(StepEvent):
    type: Literal["source.used"]
    data: SourceUsedData


class ActionProposed(StepEvent):
    type: Literal["action.proposed"]
    data: ActionProposedData


class PolicyDecided(StepEvent):
    type: Literal["policy.decided"]
    data: PolicyDecidedData


class ActionEdited(StepEvent):
    type: Literal["action.edited"]
    data: ActionEditedData


class ActionReviewed(StepEvent):
    type: Literal["action.reviewed"]
    data: ActionReviewedData


class ActionHeld(StepEvent):
    type: Literal["action.held"]
    data: ActionHeldData


class ActionExecuted(StepEvent):
    type: Literal["action.executed"]
    data: ActionExecutedData


class ActionFailed(StepEvent):
    type: Literal["action.failed"]
    data: ErrorData


class RollbackRequested(StepEvent):
    type: Literal["rollback.requested"]
    data: RollbackRequestedData


class ActionReverted(StepEvent):
    type: Literal["action.reverted"]
    data: ActionRevertedData


class RollbackFailed(StepEvent):
    type: Literal["rollback.failed"]
    data: RollbackFailedData


class RollbackStands(StepEvent):
    type: Literal["rollback.stands"]
    data: RollbackStandsData


class RecordCorrected(StepEvent):
    type: Literal["record.corrected"]
    data: RecordCorrectedData


class ConsentGiven(StepEvent):
    """A customer's consent to the step named by `step_id`, at the time they gave it,
    which may be before the step was proposed."""

    type: Literal["consent.given"]
    data: ConsentGivenData

    @model_validator(mode="after")
    def _covers_a_step_and_is_a_persons(self) -> ConsentGiven:
        if self.step_id is None:
            raise ValueError("consent.given needs step_id: the step the consent covers")
        if self.actor.kind != "human":
            kind = self.actor.kind
            raise ValueError(f"consent.given is a person's: actor.kind must be 'human', not '{kind}'")
        return self


class RunFinished(StepEvent):
    type: Literal["run.finished"]
    data: RunFinishedData


class RecordFlagged(StepEvent):
    """Written by the service only (ingest dead-letters it from the wire)."""

    type: Literal["record.flagged"]
    data: RecordFlaggedData


class DecisionRefused(StepEvent):
    """Written by the service only: the approval queue's record of a refused decision."""

    type: Literal["decision.refused"]
    data: DecisionRefusedData


class ActionExpired(StepEvent):
    """Written by the service only: the step's wait for a person ended at its deadline."""

    type: Literal["action.expired"]
    data: ActionExpiredData


Step = Annotated[
    RunStarted
    | SourceUsed
    | ActionProposed
    | PolicyDecided
    | ActionEdited
    | ActionReviewed
    | ActionHeld
    | ActionExecuted
    | ActionFailed
    | RollbackRequested
    | ActionReverted
    | RollbackFailed
    | RollbackStands
    | RecordCorrected
    | ConsentGiven
    | RunFinished
    | RecordFlagged
    | DecisionRefused
    | ActionExpired,
    Field(discriminator="type"),
]

STEP_TYPES: dict[str, type[StepEvent]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in StepEvent.__subclasses__()
}

step_adapter: TypeAdapter[Step] = TypeAdapter(Step)


# Step types only the service writes; a publisher sending one is refused.
SERVICE_TYPES = frozenset({"record.flagged", "decision.refused", "action.expired"})
SERVICE = Actor(kind="system", id="agent-receipts")


def decision_source(step: PolicyDecided) -> DecisionSource:
    """Who decided: the service only if the decision says so and the service wrote it.

    Ingest is to refuse a wire step that claims to be the service's (`reserved_for_service`);
    should one be in the record anyway, naming itself so without the service's actor is not enough."""
    return "service" if step.data.source == "service" and step.actor == SERVICE else "platform"


_FLAG_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/flag")


def reserved_for_service(step: StepEvent) -> str | None:
    """Why a step arriving from the wire is refused as one only the service writes, or None.

    Beyond the service-only types: a lane decision that says it is the service's (or comes
    as the service's actor) would let a platform pass its own routing off as the policy's."""
    if step.type in SERVICE_TYPES:
        return f"{step.type} is written by the service only"
    if isinstance(step, PolicyDecided) and (step.data.source == "service" or step.actor == SERVICE):
        return "a policy.decided from the service's policy engine is written by the service only"
    return None


def flag(about: StepEvent, code: FlagCode, message: str, *, detail: str = "") -> RecordFlagged:
    """The service's flag on `about`; its id derives from what it flags (and `detail`,
    e.g. the conflicting bytes' digest), so flagging the same thing twice is one event."""
    return RecordFlagged(
        type="record.flagged",
        event_id=str(
            uuid5(_FLAG_NAMESPACE, f"{about.tenant}/{about.run_id}/{about.event_id}/{code}/{detail}")
        ),
        run_id=about.run_id,
        tenant=about.tenant,
        occurred_at=about.occurred_at,
        actor=SERVICE,
        step_id=about.step_id,
        data=RecordFlaggedData(code=code, message=message, event_ids=(about.event_id,)),
    )


def content_hash(text: str) -> str:
    """How outputs are named across proposal, edit, review and execution."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
