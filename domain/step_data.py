"""The data each step type carries: one frozen record per wire type, held in the
envelope's `data` field (domain/steps.py).

Fields a receipt treats as evidence (an input reference, a rollback link, the
model) are optional on purpose: a step that lacks them is still a fact worth
recording, and its absence is reported as a finding instead of being rejected.
"""

from __future__ import annotations

from typing import Literal

from domain.step_values import (
    Action,
    Actor,
    Agent,
    ContainedRecord,
    ExecutedState,
    Fact,
    FinalState,
    InputReference,
    Instant,
    Label,
    Lane,
    Model,
    Name,
    Origin,
    RollbackLink,
    RollbackMethod,
    Sentence,
    Signal,
    Source,
    Text,
)


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


FlagCode = Literal[
    "conflicting_duplicate",
    "key_mismatch",
    "tenant_changed",
    # who may write (consumers/signatures.py): no signature, one that does not hold, another tenant's
    "unsigned_event",
    "bad_signature",
    "publisher_not_for_tenant",
]


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
