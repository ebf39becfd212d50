"""The approval queue's rules: which steps wait for a person, and whether a decision stands.

Pure: given a step's receipt (what the record says so far), who is deciding, and
when, say whether the step is waiting, until when, which version a decision
must name, and — for a decision — the rule it breaks, if any. The service
records every refusal as well as every decision (issue "The approval queue"),
so a refusal is a value here, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from domain.lanes import consented, covering_consents
from domain.receipt_model import Consent, StepReceipt

# Lanes whose steps wait for a person before they may be executed.
NEEDS_A_PERSON = frozenset({"review", "escalate"})

Verdict = Literal["approve", "reject", "edit", "escalate"]
Rule = Literal[
    "not_waiting",
    "role_required",
    "four_eyes",
    "second_eyes_after_edit",
    "stale_version",
    "already_decided",
    "comment_required",
    "output_required",
    "expired",
]


@dataclass(frozen=True, slots=True)
class Decider:
    """Who is deciding: a principal's id and the roles it holds."""

    id: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A decision that does not stand: the rule it breaks, in words a person can act on."""

    rule: Rule
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    version_hash: str
    comment: str | None = None
    output: str | None = None  # the new text, for an edit


def current_version(step: StepReceipt) -> str | None:
    """The hash of the text a decision must name: the last edit, else the draft."""
    if step.output.edits:
        return step.output.edits[-1].output_hash
    return step.output.draft_hash


def final_decision(step: StepReceipt) -> str | None:
    """'approved' (of the current version), 'rejected' or 'expired': what closes the step.
    An edit after an approval supersedes it, so an approval of an older version is not one."""
    if step.expired_at is not None:
        return "expired"
    if not step.reviews:
        return None
    last = step.reviews[-1]
    if last.decision == "rejected":
        return "rejected"
    if last.decision == "approved" and last.reviewed_hash == current_version(step):
        return "approved"
    return None


def waiting(step: StepReceipt, accepts_consent: bool = False) -> bool:
    """True while the step's lane needs a person and nothing has closed it: no final
    decision, and no execution (an execution ends the wait, approved or not: that is a
    finding, not a queue item). Whether it has expired is `expires_at`'s to say.

    `accepts_consent`: the run's lane contract takes a customer's consent for an approval,
    so a step a customer consented to waits for nobody (`consent_decision`). Refusals ask
    without it: a reviewer's decision is judged by the rules it always was."""
    return _open(step) and not consented(step, accepts_consent)


def consent_decision(step: StepReceipt, accepts_consent: bool) -> Consent | None:
    """The customer's consent that decides `step` in place of a reviewer's approval: the
    earliest one, when the lane contract accepts consent and the step would otherwise wait
    for a person (its lane needs one, nobody has decided it, it has not been executed)."""
    if not (_open(step) and consented(step, accepts_consent)):
        return None
    return covering_consents(step)[0]


def _open(step: StepReceipt) -> bool:
    policy = step.policy
    return (
        policy is not None
        and policy.lane in NEEDS_A_PERSON
        and step.action is not None
        and step.execution is None
        and final_decision(step) is None
    )


def escalated(step: StepReceipt) -> bool:
    """The last review handed the step on: it waits for the escalation role now."""
    return bool(step.reviews) and step.reviews[-1].decision == "escalated"


def deciding_role(step: StepReceipt, escalation_role: str | None = None) -> str | None:
    """The role a decision on `step` needs: the contract's escalation role once a reviewer
    escalated it (when the contract names one), else the role its lane requires."""
    if escalation_role and escalated(step):
        return escalation_role
    return step.policy.required_role if step.policy else None


def expires_at(step: StepReceipt, deadline: timedelta | None) -> datetime | None:
    """When a waiting step expires: its lane's deadline after it was proposed (or last edited)."""
    if deadline is None:
        return None
    since = step.output.edits[-1].at if step.output.edits else step.timestamps.proposed
    return since + deadline if since else None


def refusal(
    step: StepReceipt,
    decider: Decider,
    decision: Decision,
    now: datetime,
    deadline: timedelta | None = None,
    second_eyes_after_edit: bool = False,
    escalation_role: str | None = None,
    accepts_consent: bool = False,
) -> Refusal | None:
    """The rule `decision` by `decider` breaks on `step` at `now`, or None if it stands."""
    overdue = (at := expires_at(step, deadline)) is not None and now >= at and waiting(step)
    if step.expired_at is not None or overdue:
        return Refusal("expired", f"step {step.step_id} waited past its lane's deadline and expired")
    if final_decision(step) is not None:
        return Refusal(
            "already_decided",
            f"step {step.step_id} is already {final_decision(step)}; it cannot be decided again",
        )
    # The platform was told "approved" when the consent arrived: a second final word would contradict it.
    if (consent := consent_decision(step, accepts_consent)) is not None:
        return Refusal(
            "already_decided",
            f"step {step.step_id} is already approved by the customer's consent {consent.event_id}",
        )
    if not waiting(step):
        return Refusal("not_waiting", f"step {step.step_id} is not waiting for a person's decision")
    role = deciding_role(step, escalation_role)
    if role and role not in decider.roles:
        return Refusal("role_required", f"deciding step {step.step_id} needs the role {role!r}")
    current = current_version(step)
    if decision.version_hash != current:
        return Refusal(
            "stale_version",
            f"the decision names version {decision.version_hash}, but the current version is {current}: "
            "read the step again and decide on what it says now",
        )
    if decision.verdict == "reject" and not (decision.comment or "").strip():
        return Refusal("comment_required", "a rejection needs a comment saying why")
    if decision.verdict == "edit" and decision.output is None:
        return Refusal("output_required", "an edit needs the new output")
    if decision.verdict == "approve":
        return _four_eyes(step, decider, second_eyes_after_edit)
    return None


def _four_eyes(step: StepReceipt, decider: Decider, second_eyes_after_edit: bool) -> Refusal | None:
    # A reviewer who edits a draft may approve the edit (the brief's lead follow-up),
    # unless the lane asks for a second pair of eyes; whoever proposed it never may.
    if step.proposed_by is not None and step.proposed_by.id == decider.id:
        return Refusal("four_eyes", f"{decider.id} proposed step {step.step_id} and cannot approve it")
    last_edit = step.output.edits[-1] if step.output.edits else None
    if last_edit is not None and last_edit.editor.id == decider.id and second_eyes_after_edit:
        return Refusal(
            "second_eyes_after_edit",
            f"{decider.id} edited step {step.step_id}; this lane asks another person to approve an edit",
        )
    return None
