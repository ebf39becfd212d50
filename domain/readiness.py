"""Lane readiness: is a workflow's lane ready for more autonomy, judged from its receipts.

"Those failures are valuable. They show where the workflow is not ready for more
autonomy." Per workflow (its runs, complete receipts and findings) and per lane within it
(the lane the policy routed each step to): how many runs, how many of their receipts are
complete (no gap), each finding code with its count and example runs, and the rates a
reviewer weighs — customer consent, reviewer edits, failures, hand-offs, reverts — then a
verdict: stay in draft, ready for review-gated execution, or a candidate for
auto-execution, with the thresholds it used (the policy's `[readiness]` section, or its
defaults).

A finding counts as often as the run shows it (`Finding.count`). In a lane, a finding on
steps counts once for each of its steps in that lane; a finding on the whole run (no step)
counts once in each lane the run has a step in.

Pure: a fold over receipts (projections/readiness.py reads them from the view).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from domain.evidence import Finding
from domain.lanes import covering_consents, is_handoff
from domain.policy import ReadinessThresholds as Thresholds
from domain.receipt_model import Receipt, StepReceipt

Verdict = Literal["stay in draft", "ready for review-gated execution", "candidate for auto-execute"]
EXAMPLES = 3
NO_RULE = "(no rule)"


class FindingCount(BaseModel):
    code: str
    count: int = Field(description="how many times the runs show it")
    examples: list[str] = Field(description="run ids that show it")


class LaneReadiness(BaseModel):
    workflow: str
    lane: str
    runs: int
    steps: int
    complete_receipts: float = Field(description="share of its runs whose receipt has no gap")
    findings: list[FindingCount]
    consent_rate: float = Field(description="share of its steps a customer's consent covers")
    edit_rate: float = Field(description="share of its steps a reviewer edited")
    failure_rate: float
    handoff_rate: float
    revert_rate: float
    verdict: Verdict
    why: str


class WorkflowReadiness(BaseModel):
    workflow: str
    runs: int
    complete_receipts: float = Field(description="share of its runs whose receipt has no gap")
    findings: list[FindingCount]
    lanes: list[LaneReadiness]


class Readiness(BaseModel):
    thresholds: Thresholds
    workflows: list[WorkflowReadiness]

    @property
    def lanes(self) -> list[LaneReadiness]:
        return [lane for workflow in self.workflows for lane in workflow.lanes]


class _Codes:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, code: str, count: int, run_id: str) -> None:
        self.counts[code] += count
        shown = self.examples[code]
        if len(shown) < EXAMPLES and run_id not in shown:
            shown.append(run_id)

    def listed(self) -> list[FindingCount]:
        return [
            FindingCount(code=c, count=n, examples=self.examples[c]) for c, n in self.counts.most_common()
        ]


class _Tally:
    def __init__(self) -> None:
        self.runs: set[str] = set()
        self.complete: set[str] = set()
        self.steps = self.consented = self.edited = self.failed = self.handoffs = self.reverted = 0
        self.codes = _Codes()

    def add_run(self, receipt: Receipt, complete: bool) -> None:
        self.runs.add(receipt.run_id)
        if complete:
            self.complete.add(receipt.run_id)

    def add_step(self, step: StepReceipt) -> None:
        self.steps += 1
        self.consented += bool(covering_consents(step))
        self.edited += bool(step.output.edits)
        self.failed += bool(step.failures)
        self.handoffs += is_handoff(step)
        self.reverted += step.reversal is not None and step.reversal.reverted_method is not None


def readiness(receipts: Iterable[Receipt], thresholds: Thresholds | None = None) -> Readiness:
    limits = thresholds or Thresholds()
    workflows: dict[str, _Tally] = defaultdict(_Tally)
    lanes: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for receipt in receipts:
        workflow = receipt.workflow or "(unknown)"
        complete = not receipt.gaps()
        lane_of = {s.step_id: s.policy.lane if s.policy else NO_RULE for s in receipt.steps if s.action}
        if not lane_of:
            continue  # no proposed action: nothing a lane did
        workflows[workflow].add_run(receipt, complete)
        for step in receipt.steps:
            if step.action is not None:
                tally = lanes[(workflow, lane_of[step.step_id])]
                tally.add_run(receipt, complete)
                tally.add_step(step)
        for finding in receipt.findings:
            workflows[workflow].codes.add(finding.code, finding.count, receipt.run_id)
            for lane, count in _per_lane(finding, lane_of).items():
                lanes[(workflow, lane)].codes.add(finding.code, count, receipt.run_id)
    return Readiness(
        thresholds=limits,
        workflows=[
            WorkflowReadiness(
                workflow=workflow,
                runs=len(tally.runs),
                complete_receipts=round(len(tally.complete) / max(len(tally.runs), 1), 4),
                findings=tally.codes.listed(),
                lanes=[
                    _lane(workflow, lane, t, limits)
                    for (w, lane), t in sorted(lanes.items())
                    if w == workflow
                ],
            )
            for workflow, tally in sorted(workflows.items())
        ],
    )


def _per_lane(finding: Finding, lane_of: dict[str, str]) -> Counter[str]:
    """How many times a finding counts in each lane of its run."""
    steps = finding.step_ids or ((finding.step_id,) if finding.step_id else ())
    if not steps:
        return Counter(set(lane_of.values()))
    return Counter(lane_of[s] for s in steps if s in lane_of)


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
        findings=t.codes.listed(),
        consent_rate=round(t.consented / steps, 4),
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
