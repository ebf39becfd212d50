"""One approval authorizes exactly one execution: the findings that hold an execution to
the decision it names (`action.executed.authorization_ref`).

An execution names the event id of the decision it relied on: a person's approval of the
version it executed, or, in an `auto` lane, the service's lane decision. Findings, each
naming its events:

- `authorization_reused` (critical): a second execution relies on a decision already used.
- `authorization_mismatch` (critical): the decision named is not an approval of this step,
  or approved another version than the one executed.
- `authorization_unknown` (critical): the run records no decision with that id.
- `execution_not_bound` (warning): a lane that needs a person, an approval on record, and
  an execution that names none (which approval did it rely on?).
- `attempted_without_approval` (warning): in a lane that needs a person (or with no rule
  at all), the agent tried the action with no approval on record, and it failed (nothing
  changed; not silence either).

A hand-off, and an action a customer or another person carried out, bind nobody's lane. On a
lane whose contract accepts consent, a customer's consent to the step stands in for the
approval, and an execution may name the consent event as the decision it relied on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from domain.evidence import Finding
from domain.lanes import agents_own_execution, consented, is_handoff
from domain.steps import ActionFailed, StepEvent

if TYPE_CHECKING:  # the receipt calls these checks as it is rendered
    from domain.receipt_model import StepReceipt

NEEDS_A_PERSON = ("review", "escalate")


def check_authorizations(
    steps: Sequence[StepReceipt], events: Sequence[StepEvent] = (), accepts_consent: bool = False
) -> list[Finding]:
    """`accepts_consent`: the run's lane contract takes a customer's consent for an approval."""
    return [*_findings(steps, accepts_consent), *_attempts(steps, events, accepts_consent)]


def _attempts(
    steps: Sequence[StepReceipt], events: Sequence[StepEvent], accepts_consent: bool
) -> Iterator[Finding]:
    failed: dict[str | None, list[str]] = {}
    for event in events:
        if isinstance(event, ActionFailed) and event.actor.kind != "human":
            failed.setdefault(event.step_id, []).append(event.event_id)
    for step in steps:
        lane = step.policy.lane if step.policy else None
        attempts = failed.get(step.step_id)
        if not attempts or step.execution is not None or step.approval is not None or is_handoff(step):
            continue
        if lane not in (*NEEDS_A_PERSON, None) or (
            step.proposed_by is not None and step.proposed_by.kind == "human"
        ):
            continue
        if consented(step, accepts_consent):
            continue
        why = f"lane '{lane}'" if lane else "no policy rule"
        yield Finding(
            code="attempted_without_approval",
            severity="warning",
            step_id=step.step_id,
            message=f"attempted with no recorded approval ({why}), and it failed",
            event_ids=tuple(attempts),
        )


def _findings(steps: Sequence[StepReceipt], accepts_consent: bool) -> Iterator[Finding]:
    approvals = {r.event_id: (step, r) for step in steps for r in step.reviews}
    consents = {c.event_id: step for step in steps for c in step.consents}
    lane_decisions = {s.policy.event_id: s for s in steps if s.policy is not None}
    used: dict[str, str] = {}  # decision id -> the execution that relied on it first
    for step in steps:
        execution = step.execution
        if execution is None or not agents_own_execution(step) or is_handoff(step):
            continue
        ref = execution.authorization_ref
        lane = step.policy.lane if step.policy else None
        if ref is None:
            if lane in NEEDS_A_PERSON and step.approval is not None:
                yield Finding(
                    code="execution_not_bound",
                    severity="warning",
                    step_id=step.step_id,
                    message="executed without naming the approval it relied on (authorization_ref)",
                    event_ids=(step.approval.event_id, execution.event_id),
                )
            continue
        if ref in used:
            yield Finding(
                code="authorization_reused",
                severity="critical",
                step_id=step.step_id,
                message=f"relies on decision {ref}, which already authorized another execution",
                event_ids=(ref, used[ref], execution.event_id),
            )
            continue
        used[ref] = execution.event_id
        if ref in approvals:
            approved_step, review = approvals[ref]
            if approved_step.step_id != step.step_id or review.decision != "approved":
                why = f"a {review.decision} decision on step {approved_step.step_id}"
            elif review.reviewed_hash != step.output.executed_hash:
                why = "an approval of another version than the one executed"
            else:
                continue
        elif ref in consents:
            if consents[ref].step_id == step.step_id and consented(step, accepts_consent):
                continue
            if consents[ref].step_id != step.step_id:
                why = f"a customer's consent to step {consents[ref].step_id}"
            elif not accepts_consent:
                why = "a customer's consent, which its lane contract does not accept for approval"
            else:
                why = "a customer's consent given after the execution"
        elif ref in lane_decisions:
            decided = lane_decisions[ref]
            assert decided.policy is not None
            if decided.step_id == step.step_id and decided.policy.lane == "auto":
                continue
            lane_named = decided.policy.lane
            why = f"the {lane_named} lane decision on step {decided.step_id}, not this step's auto lane"
        else:
            yield Finding(
                code="authorization_unknown",
                severity="critical",
                step_id=step.step_id,
                message=f"relies on decision {ref}, which the run does not record",
                event_ids=(execution.event_id,),
            )
            continue
        yield Finding(
            code="authorization_mismatch",
            severity="critical",
            step_id=step.step_id,
            message=f"relies on decision {ref}: {why}",
            event_ids=(ref, execution.event_id),
        )
