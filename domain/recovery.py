"""The recovery a receipt shows: each rollback asked of the run, and what became of it.

Pure, like the receipt: for every `rollback.requested` the plan is made again
from the record as it stood when it was asked (domain.rollback.plan), so the
receipt knows which reverse actions to expect, and each expected step is matched
with its latest outcome (`action.reverted`, `record.corrected`, `rollback.failed`,
by its rollback id). Who asked and why, each reverse action with outcome and
reference, what stands and what a person must do, and the state: a rollback is
never "reverted" while something stands or is still to come.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from domain.evidence import Finding
from domain.rollback import plan, rollback_id_of
from domain.step_values import Actor, Fact
from domain.steps import (
    ActionReverted,
    RecordCorrected,
    RollbackFailed,
    RollbackRequested,
    RollbackStands,
    StepEvent,
)

ActionOutcome = Literal["pending", "reverted", "corrected", "failed"]
RecoveryState = Literal["requested", "running", "failed", "partially reverted", "corrected", "reverted"]


class ReverseAction(Fact):
    step_id: str
    method: str
    target: str
    outcome: ActionOutcome = "pending"
    # The undoing at the target: a revert commit, a webhook delivery.
    reverse_ref: str | None = None
    verified: bool | None = None
    correction: str | None = None
    error: str | None = None
    retryable: bool | None = None
    at: datetime | None = None
    event_id: str | None = None


class Standing(Fact):
    """An executed step the rollback cannot undo, and what a person must do."""

    step_id: str
    runbook: str
    method: str | None = None


class Recovery(Fact):
    rollback_id: str
    requested_by: Actor
    reason: str
    requested_at: datetime
    steps: tuple[str, ...] = ()
    actions: tuple[ReverseAction, ...] = ()
    stands: tuple[Standing, ...] = ()
    state: RecoveryState
    event_id: str


def recoveries(events: Sequence[StepEvent]) -> tuple[Recovery, ...]:
    """One Recovery per rollback asked of the run, in the order they were asked."""
    out: list[Recovery] = []
    for index, event in enumerate(events):
        if isinstance(event, RollbackRequested):
            out.append(_recovery(events[:index], event, events[index + 1 :]))
    return tuple(out)


def _recovery(before: Sequence[StepEvent], asked: RollbackRequested, after: Sequence[StepEvent]) -> Recovery:
    rollback_id = rollback_id_of(asked)
    planned = plan(before, asked)
    actions = {
        r.step_id: ReverseAction(step_id=r.step_id, method=r.method, target=r.target.key)
        for r in planned.reverse
    }
    stands = [
        Standing(step_id=s.step_id or "", runbook=s.data.runbook, method=s.data.method)
        for s in planned.stands
    ]
    for event in after:
        step_id = event.step_id
        if step_id is None or step_id not in actions:
            continue
        if isinstance(event, RollbackStands) and event.data.rollback_id == rollback_id:
            # Handed to a person (e.g. after a conflict): it stands, with what they must do.
            del actions[step_id]
            stands.append(Standing(step_id=step_id, runbook=event.data.runbook, method=event.data.method))
            continue
        outcome = _outcome(event, rollback_id)
        if outcome is not None:
            actions[step_id] = actions[step_id].model_copy(update=outcome)
    return Recovery(
        rollback_id=rollback_id,
        requested_by=asked.data.requested_by or asked.actor,
        reason=asked.data.reason,
        requested_at=asked.occurred_at,
        steps=asked.data.steps,
        actions=tuple(actions.values()),
        stands=tuple(stands),
        state=_state(list(actions.values()), bool(stands)),
        event_id=asked.event_id,
    )


def _outcome(event: StepEvent, rollback_id: str) -> dict[str, object] | None:
    """The fields an outcome of this rollback sets on its reverse action (the latest wins)."""
    common = {"at": event.occurred_at, "event_id": event.event_id}
    match event:
        case ActionReverted(data=d) if d.rollback_id == rollback_id:
            return {"outcome": "reverted", "reverse_ref": d.reverse_ref, "verified": d.verified, **common}
        case RecordCorrected(data=d) if d.rollback_id == rollback_id:
            return {"outcome": "corrected", "correction": d.correction, **common}
        case RollbackFailed(data=d) if d.rollback_id == rollback_id:
            return {"outcome": "failed", "error": d.error, "retryable": d.retryable, **common}
    return None


def _state(actions: list[ReverseAction], stands: bool) -> RecoveryState:
    outcomes = {a.outcome for a in actions}
    if "pending" in outcomes:
        return "running" if outcomes - {"pending"} else "requested"
    if "failed" in outcomes:
        return "failed"
    if stands:
        return "partially reverted"
    return "corrected" if "corrected" in outcomes else "reverted"


def unhandled_failures(recovery: Sequence[Recovery]) -> list[Finding]:
    """A reverse action whose latest outcome is a failure: neither retried to an outcome
    nor handed to a person (a `rollback.stands` for the step, with the rollback's id)."""
    return [
        Finding(
            code="rollback_failed",
            severity="warning",
            step_id=action.step_id,
            event_ids=(action.event_id,) if action.event_id else (),
            message=f"rollback {r.rollback_id} could not {action.method} {action.target}: {action.error}; "
            + ("retry it" if action.retryable else "a person must act")
            + " (or record rollback.stands with what a person must do)",
        )
        for r in recovery
        for action in r.actions
        if action.outcome == "failed"
    ]
