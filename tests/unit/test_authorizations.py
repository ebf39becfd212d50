"""One approval authorizes exactly one execution: each finding, and where none is due."""

from __future__ import annotations

from domain.authorizations import check_authorizations
from domain.evidence import Finding
from domain.receipt import render
from domain.step_values import Actor
from domain.steps import StepEvent
from tests.unit import factories as f

EDIT = f.DRAFT + "Best, Maria\n"
S2 = "run-1/step-2"


def _found(*steps: StepEvent) -> list[Finding]:
    entries = f.entries(f.started(at=f.at(0)), *steps)
    return check_authorizations(render(entries).steps, [e.step for e in entries])


def _reviewed_step(step_id: str = f.STEP, lane: str = "review") -> tuple[list[StepEvent], StepEvent]:
    approval = f.reviewed(step_id, at=f.at(5))
    return [f.proposed(step_id, at=f.at(2)), f.policy(step_id, lane, at=f.at(3)), approval], approval


def test_an_execution_bound_to_its_approval_is_silent() -> None:
    steps, approval = _reviewed_step()
    assert _found(*steps, f.executed(authorization=approval.event_id, at=f.at(6))) == []


def test_an_execution_that_names_no_approval_in_a_review_lane_is_not_bound() -> None:
    steps, approval = _reviewed_step()
    execution = f.executed(at=f.at(6))
    (finding,) = _found(*steps, execution)
    assert (finding.code, finding.severity) == ("execution_not_bound", "warning")
    assert finding.event_ids == (approval.event_id, execution.event_id)


def test_a_second_execution_on_the_same_approval_is_reused() -> None:
    steps, approval = _reviewed_step()
    first = f.executed(authorization=approval.event_id, at=f.at(6))
    again = f.executed(S2, authorization=approval.event_id, at=f.at(7))
    other = [f.proposed(S2, at=f.at(2)), f.policy(S2, "review", at=f.at(3))]
    (finding,) = _found(*steps, *other, first, again)
    assert (finding.code, finding.severity, finding.step_id) == ("authorization_reused", "critical", S2)
    assert finding.event_ids == (approval.event_id, first.event_id, again.event_id)


def test_an_approval_of_another_version_a_rejection_or_another_step_is_a_mismatch() -> None:
    steps, approval = _reviewed_step()
    other_version = f.executed(output=EDIT, authorization=approval.event_id, at=f.at(6))
    assert [x.code for x in _found(*steps, f.edited(output=EDIT, at=f.at(4)), other_version)] == [
        "authorization_mismatch"
    ]
    rejected = f.reviewed(decision="rejected", comment="no", at=f.at(5))
    base = [f.proposed(at=f.at(2)), f.policy(at=f.at(3))]
    (finding,) = _found(*base, rejected, f.executed(authorization=rejected.event_id, at=f.at(6)))
    assert finding.code == "authorization_mismatch" and "a rejected decision" in finding.message
    theirs, approved_other = _reviewed_step(S2)
    execution = f.executed(authorization=approved_other.event_id, at=f.at(6))
    codes = [x.code for x in _found(*base, *theirs, execution)]
    assert codes == ["authorization_mismatch"]


def test_a_decision_the_run_does_not_record_is_unknown() -> None:
    steps, _ = _reviewed_step()
    (finding,) = _found(*steps, f.executed(authorization="evt-nowhere", at=f.at(6)))
    assert (finding.code, finding.severity) == ("authorization_unknown", "critical")


def test_an_auto_lane_execution_may_name_its_lane_decision_and_hand_offs_bind_nobody() -> None:
    auto = f.policy(lane="auto", at=f.at(3))
    assert _found(f.proposed(at=f.at(2)), auto, f.executed(authorization=auto.event_id, at=f.at(6))) == []
    steps, _ = _reviewed_step()
    customer = Actor(kind="human", id="ana")
    assert _found(*steps, f.executed(by=customer, at=f.at(6))) == []


def test_a_failed_attempt_with_no_approval_in_a_review_lane_is_named_not_skipped() -> None:
    attempt = f.failed(at=f.at(4))
    (finding,) = _found(f.proposed(at=f.at(2)), f.policy(at=f.at(3)), attempt)
    assert (finding.code, finding.severity, finding.event_ids) == (
        "attempted_without_approval",
        "warning",
        (attempt.event_id,),
    )
    # Approved first, or in an auto lane: a failure is only a failure.
    steps, _ = _reviewed_step()
    assert _found(*steps, f.failed(at=f.at(6))) == []
    assert _found(f.proposed(at=f.at(2)), f.policy(lane="auto", at=f.at(3)), f.failed(at=f.at(4))) == []
