"""The facts an agent run is made of: one frozen class per step type.

Wire names (`action.proposed`) are the stable contract; class names
(`ActionProposed`) are what the code calls them. Nothing here knows how a step
travels or is stored: that is `schemas/` and `infra/`.

Fields a receipt treats as evidence (an input reference, a rollback link, the
model) are optional on purpose: a step that lacks them is still a fact worth
recording, and its absence is reported as a finding instead of being rejected.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


class Fact(BaseModel):
    # Unknown fields are ignored so that newer publishers (extra optional
    # fields) never break an older reader.
    model_config = ConfigDict(frozen=True, extra="ignore")


NonEmpty = Annotated[str, Field(min_length=1)]
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


class Actor(Fact):
    kind: Literal["agent", "human", "system"]
    id: NonEmpty
    role: str | None = None


class Reference(Fact):
    """A record in some other system: a ticket, a CRM contact, a page."""

    system: NonEmpty
    kind: NonEmpty
    id: NonEmpty
    uri: str | None = None

    @property
    def key(self) -> str:
        return f"{self.system}/{self.kind}/{self.id}"


class InputReference(Reference):
    hash: str | None = None


class Source(Reference):
    version: str | None = None
    retrieved_at: AwareDatetime | None = None
    excerpt: str | None = None
    hash: str | None = None


class Agent(Fact):
    name: NonEmpty
    version: str


class Model(Fact):
    provider: NonEmpty
    name: NonEmpty
    version: str


class Action(Fact):
    verb: NonEmpty
    target: Reference
    tool: NonEmpty
    params: dict[str, Any] = Field(default_factory=dict)
    output: str = ""
    output_hash: str = ""


class Signal(Fact):
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    reason_code: str | None = None
    flags: tuple[str, ...] = ()


class RollbackLink(Fact):
    method: RollbackMethod
    ref: str | None = None
    prior_version: str | None = None
    runbook: str | None = None


# --- data of each step type -------------------------------------------------


class RunStartedData(Fact):
    workflow: NonEmpty
    input: InputReference | None = None
    agent: Agent | None = None
    model: Model | None = None


class SourceUsedData(Fact):
    source: Source


class ActionProposedData(Fact):
    action: Action
    signal: Signal = Signal()
    source_ids: tuple[str, ...] = ()
    rollback: RollbackLink | None = None


class PolicyDecidedData(Fact):
    rule_id: NonEmpty
    policy_version: NonEmpty
    lane: Lane
    reasons: tuple[str, ...] = ()
    missing_fields: tuple[str, ...] = ()
    required_role: str | None = None


class ActionEditedData(Fact):
    output: str
    output_hash: NonEmpty
    base_hash: NonEmpty


class ActionReviewedData(Fact):
    decision: Literal["approved", "rejected", "escalated"]
    reviewed_hash: NonEmpty
    comment: str | None = None


class ActionHeldData(Fact):
    reason: NonEmpty
    missing_fields: tuple[str, ...] = ()


class ActionExecutedData(Fact):
    executed_hash: NonEmpty
    state: ExecutedState
    external_ref: str | None = None
    url: str | None = None


class ErrorData(Fact):
    error: NonEmpty


class RollbackRequestedData(Fact):
    reason: NonEmpty
    scope: Literal["step", "run"]


class ActionRevertedData(Fact):
    method: RollbackMethod
    reverse_ref: str | None = None
    note: str | None = None


class RecordCorrectedData(Fact):
    corrects: NonEmpty
    correction: NonEmpty
    reason: NonEmpty


class RunFinishedData(Fact):
    final_state: FinalState


FlagCode = Literal["conflicting_duplicate", "key_mismatch", "tenant_changed"]


class RecordFlaggedData(Fact):
    """The service's note on how one of the run's events arrived."""

    code: FlagCode
    message: NonEmpty
    event_ids: tuple[str, ...] = ()


# --- the envelope, one class per wire type ----------------------------------


class StepEvent(Fact):
    type: str  # the wire name; each subclass narrows it to its Literal
    event_id: NonEmpty
    run_id: NonEmpty
    tenant: NonEmpty = "default"
    occurred_at: AwareDatetime
    actor: Actor
    step_id: str | None = None


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
    data: ErrorData


class RecordCorrected(StepEvent):
    type: Literal["record.corrected"]
    data: RecordCorrectedData


class RunFinished(StepEvent):
    type: Literal["run.finished"]
    data: RunFinishedData


class RecordFlagged(StepEvent):
    """Written by the service only (ingest dead-letters it from the wire)."""

    type: Literal["record.flagged"]
    data: RecordFlaggedData


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
    | RecordCorrected
    | RunFinished
    | RecordFlagged,
    Field(discriminator="type"),
]

STEP_TYPES: dict[str, type[StepEvent]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in StepEvent.__subclasses__()
}

step_adapter: TypeAdapter[Step] = TypeAdapter(Step)


# Step types only the service writes; a publisher sending one is refused.
SERVICE_TYPES = frozenset({"record.flagged"})
SERVICE = Actor(kind="system", id="agent-receipts")
_FLAG_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/flag")


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
