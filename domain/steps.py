"""The facts an agent run is made of: one frozen class per step type.

Wire names (`action.proposed`) are the stable contract; class names
(`ActionProposed`) are what the code calls them. Nothing here knows how a step
travels or is stored: that is `schemas/` and `infra/`.

The envelope (`StepEvent`: ids, tenant, time, actor) lives here with one class
per wire type; the data each type carries is in `domain/step_data.py`, and what
any field may hold at all is bounded once, in `domain/step_values.py`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import Field, TypeAdapter, model_validator

from domain.step_data import (
    ActionEditedData,
    ActionExecutedData,
    ActionExpiredData,
    ActionHeldData,
    ActionProposedData,
    ActionRevertedData,
    ActionReviewedData,
    ConsentGivenData,
    DecisionRefusedData,
    DecisionSource,
    ErrorData,
    FlagCode,
    PolicyDecidedData,
    RecordCorrectedData,
    RecordFlaggedData,
    RollbackFailedData,
    RollbackRequestedData,
    RollbackStandsData,
    RunFinishedData,
    RunStartedData,
    SourceUsedData,
)

# Actor stays importable from here for bench/, which the module split left alone.
from domain.step_values import Actor as Actor  # noqa: PLC0414
from domain.step_values import Fact, Instant, Label, Name


class StepEvent(Fact):
    type: str  # the wire name; each subclass narrows it to its Literal
    event_id: Name
    run_id: Name
    tenant: Name = "default"
    occurred_at: Instant
    actor: Actor
    step_id: Label | None = None
    # Whose personal data the step carries (domain/personal.py); absent: the run's input or target.
    subject: Label | None = None


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
