"""Whose doing an execution is, which steps are hand-offs, and which a customer consented to:
what lane findings ask first."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.receipt_model import Consent, StepReceipt

# A step that hands the work to a person (a transfer, an escalation) is not an action on
# the customer's record: executing it needs no approval. Publishers mark one with the
# signal flag `handoff`, or use one of these verbs.
HANDOFF_VERBS = frozenset(
    {"handoff", "hand_off", "transfer_to_human", "transfer_to_human_agents", "escalate"}
)


def is_handoff(step: StepReceipt) -> bool:
    return step.action is not None and (
        step.action.verb in HANDOFF_VERBS or (step.signal is not None and "handoff" in step.signal.flags)
    )


def agents_own_execution(step: StepReceipt) -> bool:
    """Whether the execution is the agent's doing. A step a person proposed (a customer's own
    action, another employee's) or a person carried out is theirs: the agent's lane does not bind it."""
    if step.execution is None:
        return False
    return step.execution.executed_by.kind != "human" and (
        step.proposed_by is None or step.proposed_by.kind != "human"
    )


def covering_consents(step: StepReceipt) -> tuple[Consent, ...]:
    """The customer's consents that can cover the step: those given before it was executed
    (a "yes" after the fact authorizes nothing), or all of them when it was not."""
    executed = step.timestamps.executed
    return tuple(c for c in step.consents if executed is None or c.at <= executed)


def consented(step: StepReceipt, accepts_consent: bool) -> bool:
    """Whether a customer's consent stands in for a reviewer's approval: the step's lane
    contract accepts consent (`accepts_consent`) and one covers the step."""
    return accepts_consent and bool(covering_consents(step))
