"""The receipt: a pure fold over a run's recorded steps.

`render(entries)` has no clock, no I/O and no randomness, so the receipt as it
stood after any prefix of the record ("what did the reviewer see?") is the same
function over that prefix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from domain.authorizations import check_authorizations
from domain.chain import Integrity, StoredLink
from domain.contracts import ContractLookup, check_contract, run_contract
from domain.findings import Finding, detect, final_state_unclear
from domain.policy import Contract
from domain.recovery import Recovery, recoveries, unhandled_failures
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
from domain.steps import (
    ActionEdited,
    ActionExecuted,
    ActionExpired,
    ActionFailed,
    ActionHeld,
    ActionProposed,
    ActionReverted,
    ActionReviewed,
    ConsentGiven,
    DecisionRefused,
    PolicyDecided,
    RecordCorrected,
    RecordFlagged,
    RollbackFailed,
    RollbackRequested,
    RollbackStands,
    RunFinished,
    RunStarted,
    SourceUsed,
    StepEvent,
    decision_source,
)
from domain.trust import trusted

if TYPE_CHECKING:
    from domain.run import Entry


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


class _StepFold:
    """Mutable scratch state for one step while folding; frozen at the end."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id
        self.proposal: ActionProposed | None = None
        self.service_policy: PolicyRule | None = None
        self.platform_policy: PolicyRule | None = None
        self.edits: list[Edit] = []
        self.reviews: list[Review] = []
        self.consents: list[Consent] = []
        self.execution: ActionExecuted | None = None
        self.held: list[str] = []
        self.failures: list[str] = []
        self.reversal: dict[str, object] = {}
        self.corrections: list[Correction] = []
        self.refused: list[RefusedDecision] = []
        self.expired_at: datetime | None = None

    def versions(self) -> dict[str, tuple[str, str]]:
        """hash -> (label, text) of every version of the output the record holds."""
        known: dict[str, tuple[str, str]] = {}
        if self.proposal:
            action = self.proposal.data.action
            known[action.output_hash] = ("draft", action.output)
        for number, edit in enumerate(self.edits, start=1):
            known[edit.output_hash] = (f"edit {number}", edit.output)
        return known

    def freeze(self) -> StepReceipt:
        versions = self.versions()
        proposal = self.proposal
        draft = proposal.data.action if proposal else None
        approval = standing_approval(self.reviews)
        approved = versions.get(approval.reviewed_hash) if approval else None
        executed_hash = self.execution.data.executed_hash if self.execution else None
        executed = versions.get(executed_hash) if executed_hash else None
        draft_text = draft.output if draft else None
        return StepReceipt(
            step_id=self.step_id,
            proposed_by=proposal.actor if proposal else None,
            action=draft,
            signal=proposal.data.signal if proposal else None,
            source_ids=proposal.data.source_ids if proposal else (),
            policy=self.service_policy or self.platform_policy,
            platform_policy=self.platform_policy,
            reviews=tuple(self.reviews),
            consents=tuple(sorted(self.consents, key=lambda c: c.at)),
            output=Output(
                draft=draft_text,
                draft_hash=draft.output_hash if draft else None,
                edits=tuple(self.edits),
                approved=approved[1] if approved else None,
                approved_hash=approval.reviewed_hash if approval else None,
                executed=executed[1] if executed else None,
                executed_hash=executed_hash,
                draft_to_approved_diff=_diff(
                    draft_text, approved[1] if approved else None, "draft", "approved"
                ),
                approved_to_executed_diff=_diff(
                    approved[1] if approved else None,
                    executed[1] if executed else None,
                    "approved",
                    "executed",
                ),
            ),
            timestamps=StepTimestamps(
                proposed=proposal.occurred_at if proposal else None,
                consented=min((c.at for c in self.consents), default=None),
                reviewed=self.reviews[-1].at if self.reviews else None,
                executed=self.execution.occurred_at if self.execution else None,
            ),
            execution=Execution(
                state=self.execution.data.state,
                external_ref=self.execution.data.external_ref,
                url=self.execution.data.url,
                executed_by=self.execution.actor,
                event_id=self.execution.event_id,
                authorization_ref=self.execution.data.authorization_ref,
            )
            if self.execution
            else None,
            refused=tuple(self.refused),
            expired_at=self.expired_at,
            held=tuple(self.held),
            failures=tuple(self.failures),
            rollback=proposal.data.rollback if proposal else None,
            reversal=Reversal.model_validate(self.reversal) if self.reversal else None,
            corrections=tuple(self.corrections),
        )


def _diff(before: str | None, after: str | None, a: str, b: str) -> str | None:
    if before is None or after is None or before == after:
        return None
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), a, b, lineterm=""
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _fold_step(fold: _StepFold, step: StepEvent) -> None:
    match step:
        case ActionProposed():
            if fold.proposal is None:
                fold.proposal = step
        case PolicyDecided(data=d):
            rule = PolicyRule(
                decision_id=d.decision_id,
                rule_id=d.rule_id,
                matched_rules=d.matched_rules,
                policy_version=d.policy_version,
                lane=d.lane,
                reasons=d.reasons,
                missing_fields=d.missing_fields,
                required_role=d.required_role,
                source=decision_source(step),
                decided_by=step.actor,
                event_id=step.event_id,
            )
            # The latest of each counts: an edit re-evaluated is a newer decision.
            if rule.source == "service":
                fold.service_policy = rule
            else:
                fold.platform_policy = rule
        case ActionEdited(data=d):
            fold.edits.append(
                Edit(
                    editor=step.actor,
                    output=d.output,
                    output_hash=d.output_hash,
                    base_hash=d.base_hash,
                    at=step.occurred_at,
                    event_id=step.event_id,
                )
            )
        case ActionReviewed(data=d):
            label = fold.versions().get(d.reviewed_hash, ("uncaptured version", ""))[0]
            fold.reviews.append(
                Review(
                    reviewer=step.actor,
                    decision=d.decision,
                    reviewed_hash=d.reviewed_hash,
                    reviewed_version=label,
                    comment=d.comment,
                    at=step.occurred_at,
                    event_id=step.event_id,
                )
            )
        case ConsentGiven(data=d):
            fold.consents.append(
                Consent(
                    given_by=step.actor,
                    text=d.text,
                    pattern=d.pattern,
                    at=step.occurred_at,
                    event_id=step.event_id,
                )
            )
        case ActionExecuted():
            fold.execution = step
        case ActionHeld(data=d):
            fold.held.append(d.reason)
        case DecisionRefused(data=d):
            fold.refused.append(
                RefusedDecision(
                    tried_by=d.tried_by,
                    decision=d.decision,
                    version_hash=d.version_hash,
                    rule=d.rule,
                    detail=d.detail,
                    at=step.occurred_at,
                    event_id=step.event_id,
                )
            )
        case ActionExpired(data=d):
            fold.expired_at = fold.expired_at or d.deadline
        case ActionFailed(data=d):
            fold.failures.append(d.error)
        case RollbackRequested(data=d):
            fold.reversal.update(requested_reason=d.reason, requested_by=step.actor)
        case ActionReverted(data=d):
            fold.reversal.update(
                reverted_method=d.method,
                reverse_ref=d.reverse_ref,
                note=d.note,
                verified=d.verified,
                state="reverted",
            )
        case RollbackFailed(data=d):
            fold.reversal.update(failed_error=d.error, retryable=d.retryable, state="failed")
        case RollbackStands(data=d):
            fold.reversal.update(stands=d.runbook, state="stands")
        case _:
            pass


def fold_step(step_id: str, events: Iterable[StepEvent]) -> StepReceipt:
    """One step as `events` (the run's so far) leave it: what a decision taken as the run
    goes (a notice to the platform) reads, without rendering the whole receipt."""
    fold = _StepFold(step_id)
    for event in events:
        if event.step_id == step_id and not isinstance(event, RecordCorrected):
            _fold_step(fold, event)
    return fold.freeze()


def render(entries: Sequence[Entry], contract: Contract | None = None) -> Receipt:
    """The receipt of `entries`; with the lane `contract` of the run's workflow (from the
    policy version the service decided by: the caller looks it up, the fold stays pure),
    breaches of it are findings too."""
    if not entries:
        raise ValueError("a receipt needs at least one recorded step")
    first = entries[0].step
    events = [e.step for e in entries]
    started: RunStarted | None = None
    sources: list[Source] = []
    finished: list[RunFinished] = []
    steps: dict[str, _StepFold] = {}
    for entry in entries:
        step = entry.step
        match step:
            case RunStarted():
                started = started or step
            case SourceUsed():
                sources.append(step.data.source)
            case RunFinished():
                finished.append(step)
            case RecordFlagged():
                pass  # a note on delivery, not part of any step: findings report it
            case RecordCorrected(data=d):
                corrected = steps.setdefault(d.corrects, _StepFold(d.corrects))
                if d.reverse_id is not None:  # the rollback tooling's correction settles the step
                    corrected.reversal.update(state="corrected")
                corrected.corrections.append(
                    Correction(
                        correction=d.correction,
                        reason=d.reason,
                        by=step.actor,
                        at=step.occurred_at,
                        event_id=step.event_id,
                    )
                )
            case _ if step.step_id is not None:
                _fold_step(steps.setdefault(step.step_id, _StepFold(step.step_id)), step)
    step_receipts = tuple(fold.freeze() for fold in steps.values())
    recovery = recoveries(events)
    last_final = finished[-1] if finished else None
    return Receipt(
        run_id=first.run_id,
        tenant=first.tenant,
        workflow=started.data.workflow if started else None,
        input=started.data.input if started else None,
        agent=started.data.agent if started else None,
        model=started.data.model if started else None,
        sources=tuple(sources),
        steps=step_receipts,
        timestamps=RunTimestamps(
            started=started.occurred_at if started else None,
            first_proposed=min(
                (s.timestamps.proposed for s in step_receipts if s.timestamps.proposed), default=None
            ),
            last_reviewed=max(
                (s.timestamps.reviewed for s in step_receipts if s.timestamps.reviewed), default=None
            ),
            last_executed=max(
                (s.timestamps.executed for s in step_receipts if s.timestamps.executed), default=None
            ),
            finished=last_final.occurred_at if last_final else None,
            last_recorded=entries[-1].recorded_at,
        ),
        final_state=last_final.data.final_state if last_final else None,
        findings=tuple(
            trusted(
                detect(events, step_receipts, sources, contract)
                + check_authorizations(step_receipts, events, bool(contract and contract.accepts_consent))
                + (check_contract(events, contract) if contract else [])
                + unhandled_failures(recovery),
                events,
            )
        ),
        integrity=Integrity.of([StoredLink(e.version, e.wire, e.digest, e.step.event_id) for e in entries]),
        event_ids=tuple(e.step.event_id for e in entries),
        recovery=recovery,
        vouched=tuple(
            Vouched(
                event_id=e.step.event_id, type=e.step.type, publisher=e.vouch.publisher if e.vouch else None
            )
            for e in entries
        ),
    )


def render_checked(entries: Sequence[Entry], contracts: ContractLookup | None) -> Receipt:
    """`render`, checked against the run's lane contract when `contracts` (None: no lookup) finds
    one: the receipt every reader is served, the one a view stores and `verify` refolds."""
    return checked(entries, contracts)[0]


def checked(entries: Sequence[Entry], contracts: ContractLookup | None) -> tuple[Receipt, Contract | None]:
    """`render_checked`, and the contract it checked against (the queue reads its deadlines)."""
    contract = run_contract([e.step for e in entries], contracts) if contracts else None
    return render(entries, contract), contract
