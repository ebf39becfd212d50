"""Findings about lanes and approvals: a step executed without the policy's lane, without
an approval, by its own proposer, or in a version no reviewer saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from domain.evidence import Evidence, Finding, proposal_ids
from domain.lanes import agents_own_execution, covering_consents, is_handoff

if TYPE_CHECKING:
    from domain.receipt_model import Consent, StepReceipt


def no_policy_rule(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.action and step.policy is None:
            confident = step.signal is not None and step.signal.confidence is not None
            yield Finding(
                code="no_policy_rule",
                severity="warning" if confident else "info",
                step_id=step.step_id,
                message="routed on the agent's own signal with no policy rule"
                if confident
                else "no policy rule recorded for this step",
                event_ids=proposal_ids(ev, step),
            )


def executed_outside_lane(ev: Evidence) -> Iterator[Finding]:
    """The agent executed a step its lane keeps from execution (block) or leaves to a person (draft_only)."""
    for step in ev.steps:
        lane = step.policy.lane if step.policy else None
        if step.execution is None or lane not in ("block", "draft_only") or not agents_own_execution(step):
            continue
        code = "blocked_action_executed" if lane == "block" else "executed_in_draft_only"
        yield Finding(
            code=code,
            severity="critical",
            step_id=step.step_id,
            message=f"executed although policy routed it to '{lane}'",
            event_ids=_decided_then(step),
        )


def executed_without_approval(ev: Evidence) -> Iterator[Finding]:
    """Only where a lane needs a person's approval (review, escalate, or no rule at all),
    the agent executed, and it was not a hand-off. A customer's consent stands in for the
    approval where the lane's contract accepts it; where it does not, the finding names the
    consent too, so a reviewer sees what was there and why it did not count."""
    for step in ev.steps:
        if step.execution is None or not agents_own_execution(step) or is_handoff(step):
            continue
        lane = step.policy.lane if step.policy else None
        if lane in ("auto", "block", "draft_only") or step.approval is not None:
            continue
        consents = covering_consents(step)
        if consents and ev.accepts_consent:
            continue
        why = f"lane '{lane}'" if lane else "no policy rule allowed auto-execution"
        yield Finding(
            code="executed_without_approval",
            severity="critical",
            step_id=step.step_id,
            message=f"executed with no recorded approval ({why})" + _consent_not_accepted(consents),
            event_ids=(step.execution.event_id, *(c.event_id for c in consents)),
        )


def _consent_not_accepted(consents: Sequence[Consent]) -> str:
    if not consents:
        return ""
    said = "; ".join(f'"{c.text}" at {c.at.isoformat()}' for c in consents)
    return f"; the customer consented ({said}), but its lane contract does not accept consent for approval"


def _decided_then(step: StepReceipt) -> tuple[str, ...]:
    """The decision that routed the step, then its execution."""
    assert step.execution is not None and step.policy is not None
    return (step.policy.event_id, step.execution.event_id)


def policy_disagreement(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        ours, theirs = step.policy, step.platform_policy
        if ours and theirs and ours.source == "service" and ours.lane != theirs.lane:
            yield Finding(
                code="policy_disagreement",
                severity="warning",
                step_id=step.step_id,
                message=f"the platform routed it to '{theirs.lane}' ({theirs.rule_id}), the service's "
                f"policy to '{ours.lane}' ({ours.rule_id}); the service's decision governs",
                event_ids=(theirs.event_id, ours.event_id),
            )


def missing_account_context(ev: Evidence) -> Iterator[Finding]:
    """Fields a policy rule requires (the account owner, the pricing page) were not there."""
    for step in ev.steps:
        if step.policy and step.policy.missing_fields:
            yield Finding(
                code="missing_account_context",
                severity="warning" if step.execution else "info",
                step_id=step.step_id,
                message="missing account context: " + ", ".join(step.policy.missing_fields),
                event_ids=(step.policy.event_id,),
            )


def executed_differs_from_approved(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        approval = step.approval
        if step.execution and approval and step.output.executed_hash != approval.reviewed_hash:
            yield Finding(
                code="executed_differs_from_approved",
                severity="critical",
                step_id=step.step_id,
                message="the executed content is not the version the reviewer approved",
                event_ids=(approval.event_id, step.execution.event_id),
            )


def edit_not_captured(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.action is None:
            continue
        known = {step.output.draft_hash} | {e.output_hash for e in step.output.edits}
        shown = [(r.reviewed_hash, r.event_id) for r in step.reviews]
        if step.execution and step.output.executed_hash:
            shown.append((step.output.executed_hash, step.execution.event_id))
        shown += [(e.base_hash, e.event_id) for e in step.output.edits]
        unknown = tuple(event_id for digest, event_id in shown if digest not in known)
        if unknown:
            yield Finding(
                code="edit_not_captured",
                severity="warning",
                step_id=step.step_id,
                message="a version was reviewed or executed that no recorded edit produced",
                event_ids=unknown,
            )


def self_approval(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.proposed_by is None:
            continue
        for review in step.reviews:
            if review.decision == "approved" and (
                review.reviewer.id == step.proposed_by.id or review.reviewer.kind == "agent"
            ):
                yield Finding(
                    code="self_approval",
                    severity="critical",
                    step_id=step.step_id,
                    message=f"approved by {review.reviewer.kind} '{review.reviewer.id}',"
                    " not by an independent human reviewer",
                    event_ids=(review.event_id,),
                )
