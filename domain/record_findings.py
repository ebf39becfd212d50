"""Findings about the record itself: missing rollback links, contradicting or missing
final states, steps out of order or after the end, flagged deliveries, unreadable calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from domain.evidence import Evidence, Finding, Severity, proposal_ids
from domain.steps import ActionProposed, ConsentGiven, RecordCorrected, RecordFlagged, RunFinished

# Step-scoped types: each must name a step that was proposed.
_RUN_SCOPED = {"run.started", "source.used", "run.finished", "record.flagged"}


def no_rollback_link(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.action and step.rollback is None:
            severity: Severity = "warning" if step.execution else "info"
            yield Finding(
                code="no_rollback_link",
                severity=severity,
                step_id=step.step_id,
                message="no rollback link: nobody recorded how to undo this action",
                event_ids=proposal_ids(ev, step),
            )


def conflicting_finals(ev: Evidence) -> Iterator[Finding]:
    finals = [e for e in ev.events if isinstance(e, RunFinished)]
    if len(finals) > 1:
        states = ", ".join(f.data.final_state for f in finals)
        yield Finding(
            code="conflicting_finals",
            severity="warning",
            message=f"the run finished {len(finals)} times ({states}); the last counts",
            event_ids=tuple(f.event_id for f in finals),
        )


def final_state_unclear(
    final_state: str | None, last_recorded: datetime, now: datetime, after: timedelta
) -> Finding | None:
    """A run still unfinished `after` its last recorded step.

    Not one of the fold's detectors: a run in progress is not a gap, and the fold
    has no clock. Readers call it with theirs (`Receipt.seen_at`)."""
    quiet = now - last_recorded
    if final_state is not None or quiet < after:
        return None
    return Finding(
        code="final_state_unclear",
        severity="warning",
        message=f"no run.finished {_duration(quiet)} after its last step: "
        "the final state of this run is unknown",
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def step_order(ev: Evidence) -> Iterator[Finding]:
    """Step events for a step never proposed (or naming none), or recorded before its proposal."""
    proposed: set[str] = set()
    ever_proposed = {e.step_id for e in ev.events if isinstance(e, ActionProposed) and e.step_id}
    for event in ev.events:
        step_id = event.data.corrects if isinstance(event, RecordCorrected) else event.step_id
        if event.type in _RUN_SCOPED:
            continue
        if step_id is None:
            yield Finding(
                code="unknown_step",
                severity="warning",
                event_ids=(event.event_id,),
                message=f"{event.type} without a step_id",
            )
        elif isinstance(event, ActionProposed):
            proposed.add(step_id)
        elif step_id not in ever_proposed:
            yield Finding(
                code="unknown_step",
                severity="warning",
                step_id=step_id,
                event_ids=(event.event_id,),
                message=f"{event.type} for a step that was never proposed",
            )
        elif step_id not in proposed and not isinstance(event, ConsentGiven):
            # A customer's consent is given in the conversation before the call it covers:
            # recorded ahead of the proposal is its natural order, not an oddity.
            yield Finding(
                code="out_of_order",
                severity="info",
                step_id=step_id,
                event_ids=(event.event_id,),
                message=f"{event.type} was recorded before the step's proposal",
            )


def after_final(ev: Evidence) -> Iterator[Finding]:
    finished = False
    for event in ev.events:
        if isinstance(event, RunFinished):
            finished = True
        elif finished and event.type not in (
            "record.flagged",
            "record.corrected",
            "rollback.requested",
            "action.reverted",
            "rollback.failed",
            "rollback.stands",
        ):
            yield Finding(
                code="after_final",
                severity="info",
                event_ids=(event.event_id,),
                message=f"{event.type} recorded after the run finished",
            )


def flagged_delivery(ev: Evidence) -> Iterator[Finding]:
    """What the service noticed as the run's events arrived: a known event id with
    other content, a Kafka key that is not the run id, a run id under two tenants."""
    for event in ev.events:
        if isinstance(event, RecordFlagged):
            yield Finding(
                code=event.data.code,
                severity="warning",
                step_id=event.step_id,
                message=event.data.message,
                event_ids=(*event.data.event_ids, event.event_id),
            )


# The signal flag an importer sets on a proposal whose tool arguments were not a JSON object:
# the call is kept, its arguments as the text the source held (`params.unparsed_arguments`).
MALFORMED_ARGUMENTS = "malformed_arguments"


def malformed_arguments(ev: Evidence) -> Iterator[Finding]:
    """The source's tool call carried arguments nobody can read back as what was sent."""
    for event in ev.events:
        if isinstance(event, ActionProposed) and MALFORMED_ARGUMENTS in event.data.signal.flags:
            yield Finding(
                code="malformed_arguments",
                severity="warning",
                step_id=event.step_id,
                message=f"'{event.data.action.tool}' was called with arguments that are not a JSON object;"
                " they are kept as the source's text",
                event_ids=(event.event_id,),
            )
