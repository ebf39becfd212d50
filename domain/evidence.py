"""What a finding is and what the detectors read: a `Finding` is data (code, severity, the
event ids that show it); `Evidence` is one run's steps, folded steps, sources and contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from domain.policy import Contract
from domain.step_values import Fact, Source
from domain.steps import ActionProposed, StepEvent

if TYPE_CHECKING:
    from domain.receipt_model import StepReceipt

Severity = Literal["info", "warning", "critical"]


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


def proposal_ids(ev: Evidence, step: StepReceipt) -> tuple[str, ...]:
    """The event that shows a step's own gap: its proposal (the first, as the receipt keeps)."""
    for event in ev.events:
        if isinstance(event, ActionProposed) and event.step_id == step.step_id:
            return (event.event_id,)
    return ()
