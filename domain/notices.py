"""What the agent platform is told: each lane and review decision, as a notice it can gate on.

Every decision the service records about a step — the lane its policy routed
the step to, and each person's approval, rejection, escalation or edit — becomes
one `DecisionNotice`, published to `agent-steps.decisions` (projections/decisions.py).
A platform waits for the first *final* notice of a step (`Publisher … wait_for_decision`):
approved (with the version to execute), rejected (with the comment), escalated,
expired, or routed to a lane where it must not execute (draft only, blocked).

A customer's consent is a decision too where the run's lane contract accepts it
(`accepts_consent`): the step waits for nobody, and the platform is told `approved`
(`kind: consent`) with the consent event as `decision_id` — the id its execution names
as `authorization_ref`. Once per step, at the first entry where the consent decides it:
the consent itself, or the service's lane decision recorded after it (whose `pending`
it replaces: nothing pends). A consent the contract does not accept tells nothing.

Pure: a notice is a function of the run's recorded steps up to the decision (and of the
recorded policies, which never change), so replaying the log yields the same notices
with the same ids, one per entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from domain.approvals import consent_decision, current_version
from domain.contracts import ContractLookup
from domain.policy import Contract
from domain.receipt import fold_step
from domain.receipt_model import Consent, StepReceipt
from domain.run import Entry
from domain.step_values import Actor, Fact, Lane
from domain.steps import (
    ActionEdited,
    ActionExpired,
    ActionProposed,
    ActionReviewed,
    ConsentGiven,
    PolicyDecided,
    RunStarted,
    StepEvent,
    decision_source,
)

Outcome = Literal[
    "approved", "rejected", "escalated", "expired", "edited", "pending", "draft_only", "blocked"
]
# A platform may stop waiting on these; "pending" (a person must decide) and "edited"
# (a new version, still to be approved) are news, not an answer.
FINAL_OUTCOMES: frozenset[str] = frozenset(
    {"approved", "rejected", "escalated", "expired", "draft_only", "blocked"}
)
_LANE_OUTCOMES: dict[Lane, Outcome] = {
    "auto": "approved",
    "review": "pending",
    "escalate": "pending",
    "draft_only": "draft_only",
    "block": "blocked",
}


class DecisionNotice(Fact):
    decision_id: str  # the id of the recorded decision: stable, so a repeat is recognisable
    tenant: str
    run_id: str
    step_id: str | None
    # lane: the service's policy; review: a person's; consent: the customer's, in their place.
    kind: Literal["lane", "review", "consent"]
    outcome: Outcome
    final: bool
    # The version the outcome is about: the one to execute when approved.
    version_hash: str | None = None
    comment: str | None = None  # a reviewer's comment; for a consent, the customer's words
    lane: Lane | None = None
    rule_id: str | None = None
    policy_version: str | None = None
    required_role: str | None = None
    decided_by: Actor
    occurred_at: datetime


def notices(
    history: Sequence[Entry], new: Iterable[Entry], contracts: ContractLookup | None = None
) -> Iterator[tuple[int, DecisionNotice]]:
    """The notices of the `new` entries of one run, each with its entry's version; `history`
    is every entry of the run up to and including them (in version order). `contracts` finds
    the run's lane contract (None: no consent is a decision)."""
    versions: dict[str | None, str] = {}  # each step's current version as the run goes
    consents = _ConsentDecisions(contracts)
    wanted = {entry.version for entry in new}
    for entry in history:
        step = entry.step
        if isinstance(step, ActionProposed):
            versions.setdefault(step.step_id, step.data.action.output_hash)
        elif isinstance(step, ActionEdited):
            versions[step.step_id] = step.data.output_hash
        notice = consents.after(step) or _notice(step, versions.get(step.step_id))
        if entry.version in wanted and notice is not None:
            yield entry.version, notice


class _ConsentDecisions:
    """The run as it goes, for the consents that decide a step: its lane contract (the
    workflow's, in the policy version the service last decided the run by, as
    `domain.contracts.run_contract` finds it) and each step's events so far."""

    def __init__(self, contracts: ContractLookup | None) -> None:
        self.contracts = contracts
        self.workflow: str | None = None
        self.version: str | None = None
        self.known: dict[tuple[str, str], Contract | None] = {}
        self.steps: dict[str, list[StepEvent]] = {}
        self.decided: set[str] = set()  # steps a consent decided: each is told once

    def after(self, step: StepEvent) -> DecisionNotice | None:
        """The consent notice `step` makes: a consent, or the lane decision after one."""
        if isinstance(step, RunStarted):
            self.workflow = self.workflow or step.data.workflow
        elif isinstance(step, PolicyDecided) and decision_source(step) == "service":
            self.version = step.data.policy_version
        if step.step_id is None:
            return None
        self.steps.setdefault(step.step_id, []).append(step)
        if not isinstance(step, ConsentGiven | PolicyDecided) or step.step_id in self.decided:
            return None
        contract = self._contract()
        if contract is None or not contract.accepts_consent:
            return None
        receipt = fold_step(step.step_id, self.steps[step.step_id])
        consent = consent_decision(receipt, accepts_consent=True)
        if consent is None:
            return None
        self.decided.add(step.step_id)
        return _consented(step, receipt, consent)

    def _contract(self) -> Contract | None:
        if self.contracts is None or self.workflow is None or self.version is None:
            return None
        key = (self.version, self.workflow)
        if key not in self.known:
            self.known[key] = self.contracts(*key)
        return self.known[key]


def _consented(step: StepEvent, receipt: StepReceipt, consent: Consent) -> DecisionNotice:
    policy = receipt.policy
    assert policy is not None  # a consent decides only a step whose lane needs a person
    return DecisionNotice(
        decision_id=consent.event_id,
        tenant=step.tenant,
        run_id=step.run_id,
        step_id=receipt.step_id,
        kind="consent",
        outcome="approved",
        final=True,
        version_hash=current_version(receipt),
        comment=consent.text,
        lane=policy.lane,
        rule_id=policy.rule_id,
        policy_version=policy.policy_version,
        required_role=policy.required_role,
        decided_by=consent.given_by,
        occurred_at=consent.at,
    )


def _notice(step: StepEvent, current: str | None) -> DecisionNotice | None:
    if isinstance(step, PolicyDecided):
        if decision_source(step) != "service":
            return None  # the platform's own decision: it knows it already
        d = step.data
        outcome = _LANE_OUTCOMES[d.lane]
        return _about(
            step,
            kind="lane",
            outcome=outcome,
            final=outcome in FINAL_OUTCOMES,
            version_hash=current,
            lane=d.lane,
            rule_id=d.rule_id,
            policy_version=d.policy_version,
            required_role=d.required_role,
        )
    if isinstance(step, ActionReviewed):
        review = step.data
        return _about(
            step,
            kind="review",
            outcome=review.decision,
            final=True,
            version_hash=review.reviewed_hash,
            comment=review.comment,
        )
    if isinstance(step, ActionExpired):
        return _about(step, kind="review", outcome="expired", final=True, version_hash=current)
    if isinstance(step, ActionEdited) and step.actor.kind == "human":
        return _about(step, kind="review", outcome="edited", final=False, version_hash=step.data.output_hash)
    return None


def _about(step: StepEvent, **decision: Any) -> DecisionNotice:
    return DecisionNotice(
        decision_id=step.event_id,
        tenant=step.tenant,
        run_id=step.run_id,
        step_id=step.step_id,
        decided_by=step.actor,
        occurred_at=step.occurred_at,
        **decision,
    )
