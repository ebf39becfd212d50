"""Lane readiness: is a workflow's lane ready for more autonomy, judged from its receipts.

"Those failures are valuable. They show where the workflow is not ready for more
autonomy." Per workflow and lane (the lane the policy routed each step to): how many
runs, how many of their receipts are complete (no gap), each finding code with its count
and example runs, and the rates a reviewer weighs — reviewer edits, failures, hand-offs,
reverts — then a verdict: stay in draft, ready for review-gated execution, or a
candidate for auto-execution, with the thresholds it used (the policy's
`[readiness]` section, or its defaults).

Pure: a fold over receipts (projections/readiness.py reads them from the view).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from domain.lanes import is_handoff
from domain.policy import ReadinessThresholds as Thresholds
from domain.receipt import Receipt

Verdict = Literal["stay in draft", "ready for review-gated execution", "candidate for auto-execute"]
EXAMPLES = 3


class FindingCount(BaseModel):
    code: str
    count: int
    examples: list[str] = Field(description="run ids that show it")


class LaneReadiness(BaseModel):
    workflow: str
    lane: str
    runs: int
    steps: int
    complete_receipts: float = Field(description="share of its runs whose receipt has no gap")
    findings: list[FindingCount]
    edit_rate: float = Field(description="share of its steps a reviewer edited")
    failure_rate: float
    handoff_rate: float
    revert_rate: float
    verdict: Verdict
    why: str


class Readiness(BaseModel):
    thresholds: Thresholds
    lanes: list[LaneReadiness]


class _Tally:
    def __init__(self) -> None:
        self.runs: set[str] = set()
        self.complete: set[str] = set()
        self.steps = self.edited = self.failed = self.handoffs = self.reverted = 0
        self.codes: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)


def readiness(receipts: Iterable[Receipt], thresholds: Thresholds | None = None) -> Readiness:
    limits = thresholds or Thresholds()
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for receipt in receipts:
        workflow = receipt.workflow or "(unknown)"
        complete = not receipt.gaps()
        for step in receipt.steps:
            if step.action is None:
                continue
            tally = tallies[(workflow, step.policy.lane if step.policy else "(no rule)")]
            tally.runs.add(receipt.run_id)
            if complete:
                tally.complete.add(receipt.run_id)
            tally.steps += 1
            tally.edited += bool(step.output.edits)
            tally.failed += bool(step.failures)
            tally.handoffs += is_handoff(step)
            tally.reverted += step.reversal is not None and step.reversal.reverted_method is not None
            for finding in receipt.findings:
                if finding.step_id in (None, step.step_id):
                    tally.codes[finding.code] += 1
                    shown = tally.examples[finding.code]
                    if len(shown) < EXAMPLES and receipt.run_id not in shown:
                        shown.append(receipt.run_id)
    lanes = [_lane(workflow, lane, tally, limits) for (workflow, lane), tally in sorted(tallies.items())]
    return Readiness(thresholds=limits, lanes=lanes)


def _lane(workflow: str, lane: str, t: _Tally, limits: Thresholds) -> LaneReadiness:
    runs, steps = len(t.runs), max(t.steps, 1)
    complete = len(t.complete) / max(runs, 1)
    rates = {"edit": t.edited / steps, "failure": t.failed / steps, "revert": t.reverted / steps}
    verdict, why = _verdict(runs, complete, rates, limits)
    return LaneReadiness(
        workflow=workflow,
        lane=lane,
        runs=runs,
        steps=t.steps,
        complete_receipts=round(complete, 4),
        findings=[FindingCount(code=c, count=n, examples=t.examples[c]) for c, n in t.codes.most_common()],
        edit_rate=round(rates["edit"], 4),
        failure_rate=round(rates["failure"], 4),
        handoff_rate=round(t.handoffs / steps, 4),
        revert_rate=round(rates["revert"], 4),
        verdict=verdict,
        why=why,
    )


def _verdict(runs: int, complete: float, rates: dict[str, float], limits: Thresholds) -> tuple[Verdict, str]:
    if runs < limits.min_runs:
        return "stay in draft", f"{runs} runs: fewer than {limits.min_runs}, too little evidence"
    if complete < limits.review_gated_complete:
        return "stay in draft", f"{complete:.0%} complete receipts, under {limits.review_gated_complete:.0%}"
    blocking = [
        f"{name} rate {rate:.1%} over {limit:.1%}"
        for name, rate, limit in (
            ("edit", rates["edit"], limits.auto_max_edit_rate),
            ("failure", rates["failure"], limits.auto_max_failure_rate),
            ("revert", rates["revert"], limits.auto_max_revert_rate),
        )
        if rate > limit
    ]
    if complete < limits.auto_complete:
        blocking.insert(0, f"{complete:.0%} complete receipts, under {limits.auto_complete:.0%}")
    if blocking:
        return "ready for review-gated execution", "; ".join(blocking)
    return "candidate for auto-execute", f"{runs} runs, {complete:.0%} complete, rates within the limits"
