"""Findings about what a run worked from: its input, the sources its steps relied on,
and whether those sources were known and fresh when the action used them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from domain.evidence import Evidence, Finding, proposal_ids
from domain.lanes import is_handoff
from domain.steps import ActionProposed, RunStarted, SourceUsed

# A source older than this when the action relied on it is reported as stale.
STALE_SOURCE_AGE = timedelta(days=7)


def no_input_reference(ev: Evidence) -> Iterator[Finding]:
    started = [e for e in ev.events if isinstance(e, RunStarted)]
    if not started:
        yield Finding(
            code="run_not_started",
            severity="warning",
            message="no run.started event: workflow, input, agent and model unknown",
            event_ids=(ev.events[0].event_id,) if ev.events else (),
        )
    elif started[0].data.input is None:
        yield Finding(
            code="no_input_reference",
            severity="warning",
            message="the run does not say what input it worked from",
            event_ids=(started[0].event_id,),
        )


def no_source_evidence(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.action is None or step.source_ids:
            continue
        # A hand-off decides nothing from a source, and a person's own action (a customer
        # toggling a setting on their phone) is not the agent's to justify.
        if is_handoff(step) or (step.proposed_by is not None and step.proposed_by.kind == "human"):
            continue
        if ev.sources:
            yield Finding(
                code="no_source_evidence",
                severity="info",
                step_id=step.step_id,
                message=f"'{step.action.verb}' does not say which of the run's sources it relied on",
                event_ids=proposal_ids(ev, step),
            )
        else:
            yield Finding(
                code="no_source_evidence",
                severity="warning",
                step_id=step.step_id,
                message=f"'{step.action.verb}' was proposed with no source evidence",
                event_ids=proposal_ids(ev, step),
            )


def _names(event: SourceUsed) -> Iterator[str]:
    source = event.data.source
    yield from (source.id, source.key)
    for part in event.data.contains:
        yield from (part.id, part.key)


def _source_names(ev: Evidence) -> dict[str, SourceUsed]:
    """Every name a step may rely on a recorded source by -> the (latest) event that recorded
    it: its id, or system/kind/id (the same record, named in full), and the same for each
    record the source declares it contains (a payment method in a user record)."""
    names: dict[str, SourceUsed] = {}
    for event in ev.events:
        if isinstance(event, SourceUsed):
            for name in _names(event):
                names[name] = event
    return names


def unknown_source(ev: Evidence) -> Iterator[Finding]:
    known = _source_names(ev)
    for step in ev.steps:
        missing = [sid for sid in step.source_ids if sid not in known]
        if missing:
            yield Finding(
                code="unknown_source",
                severity="warning",
                step_id=step.step_id,
                message=f"relies on sources never recorded: {', '.join(missing)}",
                event_ids=proposal_ids(ev, step),
            )


def stale_source(ev: Evidence) -> Iterator[Finding]:
    """Judged against the copy the action saw: the latest fetch recorded before its proposal
    (of the source itself, or of the source a part it relied on is in)."""
    fetched: dict[str, SourceUsed] = {}
    for event in ev.events:
        if isinstance(event, SourceUsed):
            for name in _names(event):
                fetched[name] = event
        elif isinstance(event, ActionProposed):
            for sid in event.data.source_ids:
                source_event = fetched.get(sid)
                retrieved = source_event.data.source.retrieved_at if source_event else None
                if source_event and retrieved and event.occurred_at - retrieved > STALE_SOURCE_AGE:
                    age = (event.occurred_at - retrieved).days
                    yield Finding(
                        code="stale_source",
                        severity="warning",
                        step_id=event.step_id,
                        message=f"source {sid} was {age} days old when the action relied on it",
                        event_ids=(source_event.event_id,),
                    )
