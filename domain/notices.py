"""What the agent platform is told: each lane and review decision, as a notice it can gate on.

Every decision the service records about a step — the lane its policy routed
the step to, and each person's approval, rejection, escalation or edit — becomes
one `DecisionNotice`, published to `agent-steps.decisions` (projections/decisions.py).
A platform waits for the first *final* notice of a step (`Publisher … wait_for_decision`):
approved (with the version to execute), rejected (with the comment), escalated,
expired, or routed to a lane where it must not execute (draft only, blocked).

Pure: a notice is a function of the run's recorded steps up to the decision, so
replaying the log yields the same notices with the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from domain.run import Entry
from domain.steps import (
    ActionEdited,
    ActionExpired,
    ActionProposed,
    ActionReviewed,
    Actor,
    Fact,
    Lane,
    PolicyDecided,
    StepEvent,
    decision_source,
)

Outcome = Literal[
    "approved", "rejected", "escalated", "expired", "edited", "pending", "draft_only", "blocked"
]
# A platform may stop waiting on these; "pending" (a person must decide) and "edited"
# (a new version, still to be approved) are news, not an answer.
FINAL_OUTCOMES: frozenset[str] = frozenset(
    {"approved", "rejected", "escalated", "expired", "draft_only", "blocked"}
)
_LANE_OUTCOMES: dict[Lane, Outcome] = {
    "auto": "approved",
    "review": "pending",
    "escalate": "pending",
    "draft_only": "draft_only",
    "block": "blocked",
}


class DecisionNotice(Fact):
    decision_id: str  # the id of the recorded decision: stable, so a repeat is recognisable
    tenant: str
    run_id: str
    step_id: str | None
    kind: Literal["lane", "review"]
    outcome: Outcome
    final: bool
    # The version the outcome is about: the one to execute when approved.
    version_hash: str | None = None
    comment: str | None = None
    lane: Lane | None = None
    rule_id: str | None = None
    policy_version: str | None = None
    required_role: str | None = None
    decided_by: Actor
    occurred_at: datetime


def notices(history: Sequence[Entry], new: Iterable[Entry]) -> Iterator[tuple[int, DecisionNotice]]:
    """The notices of the `new` entries of one run, each with its entry's version; `history`
    is every entry of the run up to and including them (in version order)."""
    versions: dict[str | None, str] = {}  # each step's current version as the run goes
    wanted = {entry.version for entry in new}
    for entry in history:
        step = entry.step
        if isinstance(step, ActionProposed):
            versions.setdefault(step.step_id, step.data.action.output_hash)
        elif isinstance(step, ActionEdited):
            versions[step.step_id] = step.data.output_hash
        if entry.version in wanted and (notice := _notice(step, versions.get(step.step_id))) is not None:
            yield entry.version, notice


def _notice(step: StepEvent, current: str | None) -> DecisionNotice | None:
    if isinstance(step, PolicyDecided):
        if decision_source(step) != "service":
            return None  # the platform's own decision: it knows it already
        d = step.data
        outcome = _LANE_OUTCOMES[d.lane]
        return _about(
            step,
            kind="lane",
            outcome=outcome,
            final=outcome in FINAL_OUTCOMES,
            version_hash=current,
            lane=d.lane,
            rule_id=d.rule_id,
            policy_version=d.policy_version,
            required_role=d.required_role,
        )
    if isinstance(step, ActionReviewed):
        review = step.data
        return _about(
            step,
            kind="review",
            outcome=review.decision,
            final=True,
            version_hash=review.reviewed_hash,
            comment=review.comment,
        )
    if isinstance(step, ActionExpired):
        return _about(step, kind="review", outcome="expired", final=True, version_hash=current)
    if isinstance(step, ActionEdited) and step.actor.kind == "human":
        return _about(step, kind="review", outcome="edited", final=False, version_hash=step.data.output_hash)
    return None


def _about(step: StepEvent, **decision: Any) -> DecisionNotice:
    return DecisionNotice(
        decision_id=step.event_id,
        tenant=step.tenant,
        run_id=step.run_id,
        step_id=step.step_id,
        decided_by=step.actor,
        occurred_at=step.occurred_at,
        **decision,
    )
