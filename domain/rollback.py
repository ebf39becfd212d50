"""Planning a rollback: which reverse events undo a recorded run, and what stands.

Pure: `plan(steps, request)` reads a run's recorded steps and a `rollback.requested`
and returns the reverse events (commands for the rollback tooling, newest
execution first) and the `rollback.stands` facts for what cannot be undone. No
clock, no I/O: every id derives from the rollback id and the executed step's
event id, so planning the same request again yields the same ids, and the
outcomes of a reverse event (`action.reverted`, `rollback.failed`,
`record.corrected`) derive theirs from its id: redelivery never doubles one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, TypeVar
from uuid import NAMESPACE_URL, uuid5

from domain.step_values import Actor, Fact, Label, Name, Reference, RollbackMethod, Sentence, Text
from domain.steps import (
    SERVICE,
    ActionExecuted,
    ActionProposed,
    ActionReverted,
    RecordCorrected,
    RollbackFailed,
    RollbackRequested,
    RollbackStands,
    StepEvent,
)

_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/rollback")


def _id(*parts: str) -> str:
    return str(uuid5(_NAMESPACE, "\x1f".join(parts)))


class ReverseEvent(Fact):
    """One step to undo: the command `agent-steps.reverse` carries to the rollback tooling.

    Not a step of the run (nothing happened yet); its outcome is."""

    reverse_id: Name
    rollback_id: Name
    tenant: Name
    run_id: Name
    step_id: Name
    # The execution it undoes: what the reverse id derives from.
    executed_event_id: Name
    method: RollbackMethod
    verb: Name
    target: Reference
    # The rollback link's reference and the execution's (e.g. a commit sha).
    ref: Label | None = None
    external_ref: Label | None = None
    # What amend-style targets restore.
    prior_version: Label | None = None
    runbook: Text | None = None
    reason: Sentence
    requested_by: Actor | None = None
    requested_at: datetime
    # 0 for the newest execution: the order the plan undoes them in.
    position: int = 0


SkipReason = Literal["not executed", "already reverted", "not in the run"]


class Skipped(Fact):
    step_id: str
    why: SkipReason


class RollbackPlan(Fact):
    rollback_id: str
    tenant: str
    run_id: str
    reverse: tuple[ReverseEvent, ...] = ()
    stands: tuple[RollbackStands, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def partial(self) -> bool:
        """Something executed will stand: never report such a rollback as done."""
        return bool(self.stands)


def rollback_id_of(request: RollbackRequested) -> str:
    """A v1 request names no id: its event id is one."""
    return request.data.rollback_id or request.event_id


def request(
    *,
    tenant: str,
    run_id: str,
    rollback_id: str,
    reason: str,
    steps: Sequence[str] = (),
    requested_by: Actor,
    at: datetime,
) -> RollbackRequested:
    """The `rollback.requested` a person's request is recorded as; its id derives from
    the rollback id, so asking again under the same id is the same event."""
    return RollbackRequested.model_validate(
        {
            "type": "rollback.requested",
            "event_id": _id(rollback_id, "requested"),
            "run_id": run_id,
            "tenant": tenant,
            "occurred_at": at,
            "actor": requested_by,
            "data": {
                "reason": reason,
                "scope": "step" if steps else "run",
                "rollback_id": rollback_id,
                "steps": tuple(steps),
                "requested_by": requested_by,
            },
        }
    )


def plan(steps: Sequence[StepEvent], asked: RollbackRequested) -> RollbackPlan:
    """The reverse events and standing steps that answer `asked` over a run's `steps`."""
    rollback_id = rollback_id_of(asked)
    proposals: dict[str, ActionProposed] = {}
    executions: dict[str, ActionExecuted] = {}
    undone: set[str] = set()
    for step in steps:
        match step:
            case ActionProposed() if step.step_id is not None:
                proposals.setdefault(step.step_id, step)
            case ActionExecuted() if step.step_id is not None:
                executions.pop(step.step_id, None)  # the latest execution counts, in its place
                executions[step.step_id] = step
            case ActionReverted() if step.step_id is not None:
                undone.add(step.step_id)
            case RecordCorrected(data=d) if d.rollback_id is not None:
                # A correction the rollback tooling made settles its step; a person's
                # correction of a text does not undo what was executed.
                undone.add(d.corrects)
            case _:
                pass
    wanted = _wanted(asked)
    known = set(proposals) | set(executions)
    skipped = [Skipped(step_id=s, why="not in the run") for s in wanted or () if s not in known]
    skipped += [
        Skipped(step_id=s, why="not executed")
        for s in proposals
        if s not in executions and (wanted is None or s in wanted)
    ]
    reverse: list[ReverseEvent] = []
    stands: list[RollbackStands] = []
    for step_id, execution in reversed(executions.items()):
        if wanted is not None and step_id not in wanted:
            continue
        if step_id in undone:
            skipped.append(Skipped(step_id=step_id, why="already reverted"))
            continue
        proposal = proposals.get(step_id)
        link = proposal.data.rollback if proposal else None
        if proposal is None or link is None or link.method == "none":
            stands.append(_stands(asked, rollback_id, execution, proposal))
            continue
        action = proposal.data.action
        reverse.append(
            ReverseEvent(
                reverse_id=_id(rollback_id, execution.event_id),
                rollback_id=rollback_id,
                tenant=asked.tenant,
                run_id=asked.run_id,
                step_id=step_id,
                executed_event_id=execution.event_id,
                method=link.method,
                verb=action.verb,
                target=action.target,
                ref=link.ref,
                external_ref=execution.data.external_ref,
                prior_version=link.prior_version,
                runbook=link.runbook,
                reason=asked.data.reason,
                requested_by=asked.data.requested_by or asked.actor,
                requested_at=asked.occurred_at,
                position=len(reverse),
            )
        )
    return RollbackPlan(
        rollback_id=rollback_id,
        tenant=asked.tenant,
        run_id=asked.run_id,
        reverse=tuple(reverse),
        stands=tuple(stands),
        skipped=tuple(skipped),
    )


def _wanted(asked: RollbackRequested) -> set[str] | None:
    """The steps asked for; None: every executed step of the run."""
    if asked.data.steps:
        return set(asked.data.steps)
    if asked.data.scope == "step" and asked.step_id is not None:
        return {asked.step_id}  # a v1 request for one step
    return None


def _stands(
    asked: RollbackRequested, rollback_id: str, execution: ActionExecuted, proposal: ActionProposed | None
) -> RollbackStands:
    link = proposal.data.rollback if proposal else None
    what = f"{proposal.data.action.verb} on {proposal.data.action.target.key}" if proposal else "the action"
    if link is not None and link.runbook:
        runbook = link.runbook
    elif link is not None:
        runbook = f"{what} was recorded as irreversible (method none) and no runbook: a person must undo it"
    else:
        runbook = f"{what} has no rollback link: a person must find out how to undo it"
    return RollbackStands.model_validate(
        {
            "type": "rollback.stands",
            "event_id": _id(rollback_id, execution.event_id, "stands"),
            "run_id": asked.run_id,
            "tenant": asked.tenant,
            "occurred_at": asked.occurred_at,
            "actor": SERVICE,
            "step_id": execution.step_id,
            "data": {"runbook": runbook, "rollback_id": rollback_id, "method": link.method if link else None},
        }
    )


# --- what became of a reverse event: step events for the run ----------------------------------


_E = TypeVar("_E", bound=StepEvent)


def _outcome(
    cls: type[_E], reverse: ReverseEvent, event_id: str, data: Mapping[str, object], at: datetime
) -> _E:
    return cls.model_validate(
        {
            "type": cls.model_fields["type"].annotation.__args__[0],  # type: ignore[union-attr]
            "event_id": event_id,
            "run_id": reverse.run_id,
            "tenant": reverse.tenant,
            "occurred_at": at,
            "actor": SERVICE,
            "step_id": reverse.step_id,
            "data": {"rollback_id": reverse.rollback_id, "reverse_id": reverse.reverse_id, **data},
        }
    )


def reverted(
    reverse: ReverseEvent, *, reverse_ref: str | None, verified: bool, at: datetime, note: str | None = None
) -> ActionReverted:
    """One id a reverse event: a repeated success (a redelivery) is the same fact."""
    data = {"method": reverse.method, "reverse_ref": reverse_ref, "verified": verified, "note": note}
    return _outcome(ActionReverted, reverse, _id(reverse.reverse_id, "reverted"), data, at)


def failed(reverse: ReverseEvent, *, error: str, retryable: bool, at: datetime) -> RollbackFailed:
    """One id per reverse event and error: the same failure again is one fact, another is news."""
    data = {"error": error, "retryable": retryable}
    return _outcome(RollbackFailed, reverse, _id(reverse.reverse_id, "failed", error), data, at)


def corrected(reverse: ReverseEvent, *, correction: str, at: datetime) -> RecordCorrected:
    """What cannot be undone is corrected: the step's state becomes `corrected`, never `reverted`."""
    data = {"corrects": reverse.step_id, "correction": correction, "reason": reverse.reason}
    return _outcome(RecordCorrected, reverse, _id(reverse.reverse_id, "corrected"), data, at)
