"""Lane readiness from receipts: counts, rates, findings with examples, and the verdict."""

from __future__ import annotations

from domain.readiness import Thresholds, readiness
from domain.receipt import Receipt, render
from domain.steps import StepEvent
from tests.unit import factories as f

EDIT = f.DRAFT + "Best, Maria\n"


def _run(n: int, steps: list[StepEvent]) -> Receipt:
    return render(f.entries(*(s.model_copy(update={"run_id": f"r-{n}"}) for s in steps)))


def _edited() -> list[StepEvent]:
    run = f.clean_run()
    proposal_at = 3  # after the policy decision: an edit, then the approval of it
    edit = f.edited(output=EDIT, at=f.at(5))
    approval = f.reviewed(output=EDIT, at=f.at(10))
    executed = f.executed(output=EDIT, authorization=approval.event_id, at=f.at(11))
    return [*run[: proposal_at + 1], edit, approval, executed, run[-1]]


def test_a_clean_lane_with_enough_runs_is_a_candidate_for_auto_execution() -> None:
    report = readiness([_run(n, f.clean_run()) for n in range(25)])
    (lane,) = report.lanes
    assert (lane.workflow, lane.lane, lane.runs, lane.steps) == ("lead-followup", "review", 25, 25)
    assert (lane.complete_receipts, lane.edit_rate, lane.failure_rate, lane.findings) == (1.0, 0.0, 0.0, [])
    assert lane.verdict == "candidate for auto-execute"


def test_reviewer_edits_keep_a_lane_review_gated_and_say_why() -> None:
    receipts = [_run(n, f.clean_run()) for n in range(22)] + [_run(100 + n, _edited()) for n in range(3)]
    (lane,) = readiness(receipts).lanes
    assert lane.edit_rate == round(3 / 25, 4)
    assert lane.verdict == "ready for review-gated execution" and "edit rate 12.0% over 5.0%" in lane.why


def test_few_runs_or_gaps_stay_in_draft_and_findings_carry_examples() -> None:
    (few,) = readiness([_run(n, f.clean_run()) for n in range(5)]).lanes
    assert few.verdict == "stay in draft" and "fewer than 20" in few.why
    gappy = [s for s in f.clean_run() if s.type != "source.used"]  # no source evidence
    (lane,) = readiness([_run(n, gappy) for n in range(30)], Thresholds(min_runs=10)).lanes
    assert lane.complete_receipts == 0.0 and lane.verdict == "stay in draft"
    codes = {c.code: c for c in lane.findings}
    assert codes["unknown_source"].count == 30 and codes["unknown_source"].examples == ["r-0", "r-1", "r-2"]
