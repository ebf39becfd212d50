"""Lane readiness from receipts: counts, rates, findings with examples, and the verdict."""

from __future__ import annotations

from api.readiness_render import readiness_markdown
from domain.readiness import Thresholds, readiness
from domain.receipt import render
from domain.receipt_model import Receipt
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


def _consented_write(n: int, *, failed: bool = False) -> list[StepEvent]:
    """An imported write with the customer's consent and no reviewer (a lane without a rule)."""
    step = f"s-{n}"
    outcome = f.failed(step, at=f.at(3)) if failed else f.executed(step, at=f.at(3))
    return [
        f.started(workflow="order-support", origin={"format": "openai-chat", "approvals_recorded": False}),
        f.consent(step, at=f.at(1)),
        f.proposed(step, sources=[], at=f.at(2)),
        outcome,
        f.finished(at=f.at(4)),
    ]


def test_per_workflow_runs_and_per_lane_consent_rates_and_finding_counts() -> None:
    two_writes = [
        *_consented_write(1)[:-1],
        f.proposed("s-2", sources=[], at=f.at(5)),
        f.executed("s-2", at=f.at(6)),
    ]
    receipts = [
        _run(0, two_writes),
        _run(1, _consented_write(1, failed=True)),
        *(_run(n, f.clean_run()) for n in (2, 3)),
    ]
    report = readiness(receipts)
    assert [(w.workflow, w.runs) for w in report.workflows] == [("lead-followup", 2), ("order-support", 2)]
    (orders,) = report.workflows[1].lanes
    assert (orders.lane, orders.runs, orders.steps) == ("(no rule)", 2, 3)
    assert (orders.consent_rate, orders.failure_rate) == (round(2 / 3, 4), round(1 / 3, 4))
    codes = {c.code: c for c in report.workflows[1].findings}
    # One info finding a run (its count: the steps it names), not a violation per step.
    assert (codes["approvals_not_recorded"].count, codes["approvals_not_recorded"].examples) == (
        3,
        ["r-0", "r-1"],
    )
    assert "executed_without_approval" not in codes
    assert {c.code: c.count for c in orders.findings}["no_source_evidence"] == 3
    assert report.model_dump()["workflows"][1]["findings"][0].keys() == {"code", "count", "examples"}


def test_the_markdown_report_names_the_thresholds_each_lane_and_its_verdict() -> None:
    text = readiness_markdown(readiness([_run(n, f.clean_run()) for n in range(3)], Thresholds(min_runs=2)))
    assert "Thresholds: at least 2 runs; review-gated execution from 80% complete receipts" in text
    assert "### lead-followup: 3 runs, complete receipts 100%" in text
    assert (
        "| review | candidate for auto-execute | 3 runs, 100% complete, rates within the limits | 3 | 3 |"
        in text
    )
    assert readiness_markdown(readiness([])).endswith("No run with a proposed action yet.\n")
