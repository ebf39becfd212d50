"""Lane contracts checked against a run: each breach a finding naming its events.

A contract (`domain.policy.Contract`) is what a workflow's lane may do. These
checks take it as an argument, so the receipt stays a pure fold: the caller
finds the contract with `run_contract(events, lookup)` — the run's workflow in
the policy version the service last decided the run by, read through a lookup
the caller supplies (infra reads its table) — and passes it to
`render(entries, contract)`. A run the service never decided, or a workflow its
policy has no contract for, is checked against nothing: no contract, no breach.
A list the contract leaves empty is not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from domain.evidence import Finding
from domain.policy import Contract
from domain.steps import (
    ActionProposed,
    PolicyDecided,
    RunFinished,
    RunStarted,
    SourceUsed,
    StepEvent,
    decision_source,
)

if TYPE_CHECKING:
    from domain.receipt_model import Receipt

ContractCheck = Callable[[Sequence[StepEvent], Contract], Iterator[Finding]]
# (policy version, workflow) -> that version's contract for the workflow, None if it has none
# (or the version is not known): how the caller lets the domain read recorded policies.
ContractLookup = Callable[[str, str], Contract | None]


def input_outside_contract(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    for event in events:
        if isinstance(event, RunStarted) and contract.inputs and event.data.input:
            ref = event.data.input
            if not any(p.covers(ref.system, ref.kind) for p in contract.inputs):
                yield Finding(
                    code="input_outside_contract",
                    severity="warning",
                    message=f"the run started from a {ref.system}/{ref.kind}: its contract does not list one",
                    event_ids=(event.event_id,),
                )


def source_outside_contract(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    for event in events:
        if isinstance(event, SourceUsed) and contract.sources:
            src = event.data.source
            if not any(p.covers(src.system, src.kind) for p in contract.sources):
                yield Finding(
                    code="source_outside_contract",
                    severity="warning",
                    message=f"relied on {src.key}: its contract lets it rely on no {src.system}/{src.kind}",
                    event_ids=(event.event_id,),
                )


def action_outside_contract(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    executed = {e.step_id: e.event_id for e in events if e.type == "action.executed"}
    for event in events:
        if isinstance(event, ActionProposed) and contract.actions:
            action = event.data.action
            target = action.target
            if not any(p.covers(action.verb, target.system, target.kind) for p in contract.actions):
                done = executed.get(event.step_id)
                yield Finding(
                    code="action_outside_contract",
                    severity="critical" if done else "warning",
                    step_id=event.step_id,
                    message=f"'{action.verb}' on a {target.system}/{target.kind} is not an action its "
                    f"contract allows{' (and it was executed)' if done else ''}",
                    event_ids=(event.event_id, *((done,) if done else ())),
                )


def required_signal_missing(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    for event in events:
        if isinstance(event, ActionProposed) and contract.signals:
            signal = event.data.signal
            reported = {
                "confidence": signal.confidence is not None,
                "reason_code": bool(signal.reason_code),
                "flags": bool(signal.flags),
            }
            missing = [name for name in contract.signals if not reported[name]]
            if missing:
                yield Finding(
                    code="required_signal_missing",
                    severity="warning",
                    step_id=event.step_id,
                    message=f"the proposal does not report {', '.join(missing)}, which its contract requires",
                    event_ids=(event.event_id,),
                )


def recovery_path_missing(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    for event in events:
        if isinstance(event, ActionProposed) and contract.needs_recovery(event.data.action.verb):
            rollback = event.data.rollback
            if rollback is None or rollback.method == "none":
                yield Finding(
                    code="recovery_path_missing",
                    severity="warning",
                    step_id=event.step_id,
                    message=f"'{event.data.action.verb}' must carry a recovery path (a rollback method "
                    f"other than none) and has {'none' if rollback else 'no rollback link'}",
                    event_ids=(event.event_id,),
                )


def final_state_outside_contract(events: Sequence[StepEvent], contract: Contract) -> Iterator[Finding]:
    finals = [e for e in events if isinstance(e, RunFinished)]
    if finals and contract.final_states and finals[-1].data.final_state not in contract.final_states:
        last = finals[-1]
        yield Finding(
            code="final_state_outside_contract",
            severity="warning",
            message=f"the run stopped in '{last.data.final_state}', not one of the final states its "
            f"contract expects ({', '.join(contract.final_states)})",
            event_ids=(last.event_id,),
        )


CONTRACT_CHECKS: tuple[ContractCheck, ...] = (
    input_outside_contract,
    source_outside_contract,
    action_outside_contract,
    required_signal_missing,
    recovery_path_missing,
    final_state_outside_contract,
)


def check_contract(events: Sequence[StepEvent], contract: Contract) -> list[Finding]:
    return [finding for check in CONTRACT_CHECKS for finding in check(events, contract)]


def service_policy_versions(receipt: Receipt) -> tuple[str, ...]:
    """The policy versions the service decided this run's steps by, oldest first: where the
    caller finds the contract to check the run against (the latest one, usually)."""
    seen: dict[str, None] = {}
    for step in receipt.steps:
        if step.policy and step.policy.source == "service":
            seen[step.policy.policy_version] = None
    return tuple(seen)


def decided_by(events: Iterable[StepEvent]) -> str | None:
    """The policy version the service decided the run's latest decision by (None: none yet)."""
    version = None
    for event in events:
        if isinstance(event, PolicyDecided) and decision_source(event) == "service":
            version = event.data.policy_version
    return version


def run_contract(events: Sequence[StepEvent], lookup: ContractLookup) -> Contract | None:
    """The contract to check the run against: its workflow's, in the policy version the service
    last decided it by. A platform's own decision names no policy the service holds: it counts
    for nothing here, so a run only a platform decided has no contract (and no breach)."""
    workflow = next((e.data.workflow for e in events if isinstance(e, RunStarted)), None)
    version = decided_by(events)
    if workflow is None or version is None:
        return None
    return lookup(version, workflow)
