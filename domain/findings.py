"""Findings: the gaps a receipt exposes, as data.

Each kind of gap is one small function over the run's evidence, so each can be
read and tested on its own. A finding names the events that show it.

`Finding` and the `Evidence` detectors read are in evidence.py; the detectors, by
theme, in source_findings.py, approval_findings.py and record_findings.py. This
module runs them all, in the order a receipt lists their findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from domain.approval_findings import (
    edit_not_captured,
    executed_differs_from_approved,
    executed_outside_lane,
    executed_without_approval,
    missing_account_context,
    no_policy_rule,
    policy_disagreement,
    self_approval,
)
from domain.evidence import Detector, Evidence, Finding
from domain.policy import Contract
from domain.record_findings import (
    after_final,
    conflicting_finals,
    flagged_delivery,
    malformed_arguments,
    no_rollback_link,
    step_order,
)
from domain.source_findings import no_input_reference, no_source_evidence, stale_source, unknown_source
from domain.step_values import Source
from domain.steps import StepEvent

if TYPE_CHECKING:
    from domain.receipt_model import StepReceipt


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
