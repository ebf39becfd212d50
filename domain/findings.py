"""Findings: the gaps a receipt exposes, as data.

Each kind of gap is one small function over the run's evidence, so each can be
read and tested on its own. A finding names the events that show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from domain.lanes import agents_own_execution, covering_consents, is_handoff
from domain.policy import Contract
from domain.step_values import Fact, Source
from domain.steps import (
    ActionProposed,
    ConsentGiven,
    RecordCorrected,
    RecordFlagged,
    RunFinished,
    RunStarted,
    SourceUsed,
    StepEvent,
)

if TYPE_CHECKING:
    from domain.receipt_model import Consent, StepReceipt

Severity = Literal["info", "warning", "critical"]

# A source older than this when the action relied on it is reported as stale.
STALE_SOURCE_AGE = timedelta(days=7)
# Step-scoped types: each must name a step that was proposed.
_RUN_SCOPED = {"run.started", "source.used", "run.finished", "record.flagged"}


class Finding(Fact):
    code: str
    severity: Severity
    message: str
    # The one step it is about; None for a run's gap, or one found on several steps.
    step_id: str | None = None
    event_ids: tuple[str, ...] = ()
    # How many times the run shows it (the same gap on many steps is one finding), and
    # every step it was found on (domain/trust.py folds the repeats).
    count: int = 1
    step_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Evidence:
    events: Sequence[StepEvent]
    steps: Sequence[StepReceipt]
    sources: Sequence[Source]
    # The run's lane contract (None: none applies): whether consent stands in for approval.
    contract: Contract | None = None

    @property
    def accepts_consent(self) -> bool:
        return self.contract is not None and self.contract.accepts_consent


Detector = Callable[[Evidence], Iterator[Finding]]


def _proposed(ev: Evidence, step: StepReceipt) -> tuple[str, ...]:
    """The event that shows a step's own gap: its proposal (the first, as the receipt keeps)."""
    for event in ev.events:
        if isinstance(event, ActionProposed) and event.step_id == step.step_id:
            return (event.event_id,)
    return ()


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
                event_ids=_proposed(ev, step),
            )
        else:
            yield Finding(
                code="no_source_evidence",
                severity="warning",
                step_id=step.step_id,
                message=f"'{step.action.verb}' was proposed with no source evidence",
                event_ids=_proposed(ev, step),
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
                event_ids=_proposed(ev, step),
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
                event_ids=_proposed(ev, step),
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


def no_rollback_link(ev: Evidence) -> Iterator[Finding]:
    for step in ev.steps:
        if step.action and step.rollback is None:
            severity: Severity = "warning" if step.execution else "info"
            yield Finding(
                code="no_rollback_link",
                severity=severity,
                step_id=step.step_id,
                message="no rollback link: nobody recorded how to undo this action",
                event_ids=_proposed(ev, step),
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


DETECTORS: tuple[Detector, ...] = (
    no_input_reference,
    no_source_evidence,
    unknown_source,
    stale_source,
    no_policy_rule,
    policy_disagreement,
    missing_account_context,
    executed_outside_lane,
    executed_without_approval,
    executed_differs_from_approved,
    edit_not_captured,
    self_approval,
    no_rollback_link,
    conflicting_finals,
    step_order,
    after_final,
    flagged_delivery,
    malformed_arguments,
)


def detect(
    events: Sequence[StepEvent],
    steps: Sequence[StepReceipt],
    sources: Sequence[Source],
    contract: Contract | None = None,
) -> list[Finding]:
    evidence = Evidence(events, steps, sources, contract)
    return [finding for detector in DETECTORS for finding in detector(evidence)]
