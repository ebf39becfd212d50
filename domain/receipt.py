"""The receipt: a pure fold over a run's recorded steps.

`render(entries)` has no clock, no I/O and no randomness, so the receipt as it
stood after any prefix of the record ("what did the reviewer see?") is the same
function over that prefix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from domain.authorizations import check_authorizations
from domain.chain import Integrity, StoredLink
from domain.contracts import ContractLookup, check_contract, run_contract
from domain.findings import detect
from domain.policy import Contract
from domain.receipt_model import (
    Consent,
    Correction,
    Edit,
    Execution,
    Output,
    PolicyRule,
    Receipt,
    RefusedDecision,
    Reversal,
    Review,
    RunTimestamps,
    StepReceipt,
    StepTimestamps,
    Vouched,
    standing_approval,
)
from domain.recovery import recoveries, unhandled_failures
from domain.step_values import Source
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
