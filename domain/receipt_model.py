"""What a receipt holds: frozen records for each step (review, edit, output, execution,
reversal) and for the run as a whole. `domain/receipt.py` folds a run's steps into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from domain.chain import Integrity
from domain.evidence import Finding
from domain.record_findings import final_state_unclear
from domain.recovery import Recovery
from domain.step_data import DecisionSource
from domain.step_values import (
    Action,
    Actor,
    Agent,
    Fact,
    FinalState,
    InputReference,
    Lane,
    Model,
    RollbackLink,
    Signal,
    Source,
)


class PolicyRule(Fact):
    """A lane decision as the receipt shows it: the service's (its policy engine) or the platform's."""

    decision_id: str | None = None
    rule_id: str
    matched_rules: tuple[str, ...] = ()
    policy_version: str
    lane: Lane
    reasons: tuple[str, ...] = ()
    missing_fields: tuple[str, ...] = ()
    required_role: str | None = None
    source: DecisionSource = "platform"
    decided_by: Actor
    event_id: str


class Review(Fact):
    reviewer: Actor
    decision: Literal["approved", "rejected", "escalated"]
    reviewed_hash: str
    # Which text the reviewer saw: the agent's draft, an edit (by number), or
    # a version the record never captured.
    reviewed_version: str
    comment: str | None = None
    at: datetime
    event_id: str


class Edit(Fact):
    editor: Actor
    output: str
    output_hash: str
    base_hash: str
    at: datetime
    event_id: str


class Output(Fact):
    draft: str | None = None
    draft_hash: str | None = None
    edits: tuple[Edit, ...] = ()
    approved: str | None = None
    approved_hash: str | None = None
    executed: str | None = None
    executed_hash: str | None = None
    draft_to_approved_diff: str | None = None
    approved_to_executed_diff: str | None = None


class StepTimestamps(Fact):
    proposed: datetime | None = None
    # When the customer consented (the earliest consent), which may precede the proposal.
    consented: datetime | None = None
    reviewed: datetime | None = None
    executed: datetime | None = None


class Consent(Fact):
    """A customer's consent to the step: their words, and when they said them."""

    given_by: Actor
    text: str
    pattern: str | None = None
    at: datetime
    event_id: str


class Execution(Fact):
    state: str
    external_ref: str | None = None
    url: str | None = None
    executed_by: Actor
    event_id: str
    authorization_ref: str | None = None  # the decision it relied on


class Reversal(Fact):
    requested_reason: str | None = None
    requested_by: Actor | None = None
    reverted_method: str | None = None
    reverse_ref: str | None = None
    note: str | None = None
    failed_error: str | None = None
    verified: bool | None = None
    retryable: bool | None = None
    # What a person must do for a step a rollback could not undo.
    stands: str | None = None
    # The step's latest outcome: a sent email is `corrected`, never `reverted`.
    state: Literal["reverted", "corrected", "failed", "stands"] | None = None


class Correction(Fact):
    correction: str
    reason: str
    by: Actor
    at: datetime
    event_id: str


class RefusedDecision(Fact):
    """A person's decision the approval queue refused: kept, so "who tried what" is on record."""

    tried_by: Actor
    decision: str
    version_hash: str
    rule: str
    detail: str
    at: datetime
    event_id: str


class StepReceipt(Fact):
    step_id: str
    proposed_by: Actor | None = None
    action: Action | None = None
    signal: Signal | None = None
    source_ids: tuple[str, ...] = ()
    # The decision that governs the step: the service's when it made one, else the platform's.
    policy: PolicyRule | None = None
    # The platform's own decision, kept beside the service's (a disagreement is a finding).
    platform_policy: PolicyRule | None = None
    reviews: tuple[Review, ...] = ()
    # In the order the customer gave them (their real time), whatever order they arrived in.
    consents: tuple[Consent, ...] = ()
    output: Output = Output()
    timestamps: StepTimestamps = StepTimestamps()
    execution: Execution | None = None
    held: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    rollback: RollbackLink | None = None
    reversal: Reversal | None = None
    corrections: tuple[Correction, ...] = ()
    refused: tuple[RefusedDecision, ...] = ()
    # When its wait for a person ended at the lane's deadline (the service recorded it).
    expired_at: datetime | None = None

    @property
    def approval(self) -> Review | None:
        return standing_approval(self.reviews)


def standing_approval(reviews: Sequence[Review]) -> Review | None:
    """The approval a step stands on: the last review, if it approved (a later rejection
    or escalation withdraws an earlier approval)."""
    return reviews[-1] if reviews and reviews[-1].decision == "approved" else None


class Vouched(Fact):
    """Who vouched for one recorded event: the publisher whose signature over the bytes it
    arrived as held when it was recorded (`service`: the service's own key), None if unsigned."""

    event_id: str
    type: str
    publisher: str | None = None


class RunTimestamps(Fact):
    started: datetime | None = None
    first_proposed: datetime | None = None
    last_reviewed: datetime | None = None
    last_executed: datetime | None = None
    finished: datetime | None = None
    # When the service recorded the run's latest step (not a source time).
    last_recorded: datetime | None = None


class Receipt(Fact):
    run_id: str
    tenant: str
    workflow: str | None = None
    input: InputReference | None = None
    agent: Agent | None = None
    model: Model | None = None
    sources: tuple[Source, ...] = ()
    steps: tuple[StepReceipt, ...] = ()
    timestamps: RunTimestamps = RunTimestamps()
    final_state: FinalState | None = None
    findings: tuple[Finding, ...] = ()
    integrity: Integrity
    # Each rollback asked of the run: who asked and why, each reverse action, what stands.
    recovery: tuple[Recovery, ...] = ()
    event_ids: tuple[str, ...] = Field(default=(), repr=False)
    # Each event in record order, with the publisher that vouched for it (domain/vouches.py).
    vouched: tuple[Vouched, ...] = ()

    def fields(self) -> dict[str, object | None]:
        """The ten questions a receipt answers; None marks a gap."""
        return {
            "input_reference": self.input,
            "sources": self.sources or None,
            "model_and_action": (
                (self.model, [s.action for s in self.steps if s.action])
                if self.model and any(s.action for s in self.steps)
                else None
            ),
            "policy_rule": [s.policy for s in self.steps if s.policy] or None,
            # Who approved: a reviewer, or the customer in their own words (a consent).
            "reviewer": [d for s in self.steps for d in (*s.reviews, *s.consents)] or None,
            "timestamps": self.timestamps if self.timestamps.first_proposed else None,
            "output": [s.output for s in self.steps if s.output.draft is not None] or None,
            "signal": [s.signal for s in self.steps if s.signal and _has_signal(s.signal)] or None,
            "rollback_link": [s.rollback for s in self.steps if s.rollback] or None,
            "final_state": self.final_state,
        }

    def gaps(self) -> list[str]:
        return [name for name, value in self.fields().items() if value is None]

    def seen_at(self, now: datetime, unfinished_after: timedelta) -> Receipt:
        """The receipt as a reader sees it at `now`: with `final_state_unclear` once
        the run has stayed unfinished `unfinished_after` its last recorded step."""
        last = self.timestamps.last_recorded
        overdue = last and final_state_unclear(self.final_state, last, now, unfinished_after)
        if not overdue:
            return self
        return self.model_copy(update={"findings": (*self.findings, overdue)})


def _has_signal(signal: Signal) -> bool:
    return signal.confidence is not None or bool(signal.reason_code) or bool(signal.flags)
