"""The approval queue's rules, on receipts folded from hand-made runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.approvals import (
    Decider,
    Decision,
    current_version,
    deciding_role,
    escalated,
    expires_at,
    final_decision,
    refusal,
    waiting,
)
from domain.receipt import render
from domain.receipt_model import StepReceipt
from domain.steps import StepEvent, content_hash
from tests.unit import factories as f

EDIT = f.DRAFT + "Best, Maria\n"
MARIA = Decider("maria", frozenset({"sales-lead"}))
KIM = Decider("kim", frozenset({"sales-lead"}))
NOBODY = Decider("dana", frozenset({"support-lead"}))
NOW = f.at(20)


def _step(*steps: StepEvent) -> StepReceipt:
    return render(f.entries(f.started(at=f.at(0)), *steps)).steps[0]


def _proposed(lane: str = "review", **kw: object) -> list[StepEvent]:
    return [f.proposed(at=f.at(2)), f.policy(lane=lane, at=f.at(3), **kw)]  # type: ignore[arg-type]


def _approve(version: str = f.DRAFT) -> Decision:
    return Decision("approve", content_hash(version))


def test_a_step_in_a_review_lane_waits_until_a_final_decision() -> None:
    step = _step(*_proposed())
    assert waiting(step) and final_decision(step) is None and current_version(step) == content_hash(f.DRAFT)
    assert refusal(step, MARIA, _approve(), NOW) is None
    approved = _step(*_proposed(), f.reviewed(at=f.at(5)))
    assert not waiting(approved) and final_decision(approved) == "approved"
    rejected = _step(*_proposed(), f.reviewed(decision="rejected", comment="no", at=f.at(5)))
    assert final_decision(rejected) == "rejected"


@pytest.mark.parametrize("lane", ["auto", "draft_only", "block"])
def test_lanes_that_need_nobody_do_not_wait(lane: str) -> None:
    step = _step(*_proposed(lane))
    assert not waiting(step)
    assert refusal(step, MARIA, _approve(), NOW).rule == "not_waiting"  # type: ignore[union-attr]


def test_an_executed_step_waits_no_more() -> None:
    assert not waiting(_step(*_proposed(), f.executed(at=f.at(4))))


def test_an_edit_after_an_approval_supersedes_it() -> None:
    step = _step(*_proposed(), f.reviewed(at=f.at(5)), f.edited(output=EDIT, at=f.at(6)))
    assert waiting(step) and current_version(step) == content_hash(EDIT)
    assert refusal(step, KIM, _approve(EDIT), NOW) is None


def test_the_required_role_is_needed() -> None:
    found = refusal(_step(*_proposed()), NOBODY, _approve(), NOW)
    assert found is not None and found.rule == "role_required" and "sales-lead" in found.detail


def test_nobody_approves_a_step_they_proposed() -> None:
    bot = Decider(f.AGENT.id, frozenset({"sales-lead"}))
    found = refusal(_step(*_proposed()), bot, _approve(), NOW)
    assert found is not None and found.rule == "four_eyes"
    # ... not even after editing it themselves
    found = refusal(
        _step(*_proposed(), f.edited(output=EDIT, by=f.AGENT, at=f.at(4))), bot, _approve(EDIT), NOW
    )
    assert found is not None and found.rule == "four_eyes"


def test_a_reviewer_who_edits_may_approve_the_edit_unless_the_lane_asks_for_second_eyes() -> None:
    step = _step(*_proposed(), f.edited(output=EDIT, at=f.at(4)))  # edited by maria
    assert refusal(step, MARIA, _approve(EDIT), NOW) is None
    found = refusal(step, MARIA, _approve(EDIT), NOW, second_eyes_after_edit=True)
    assert found is not None and found.rule == "second_eyes_after_edit"
    assert refusal(step, KIM, _approve(EDIT), NOW, second_eyes_after_edit=True) is None


def test_a_stale_version_is_refused() -> None:
    step = _step(*_proposed(), f.edited(output=EDIT, at=f.at(4)))
    found = refusal(step, KIM, _approve(f.DRAFT), NOW)
    assert found is not None and found.rule == "stale_version" and content_hash(EDIT) in found.detail


def test_a_decided_step_cannot_be_decided_again() -> None:
    step = _step(*_proposed(), f.reviewed(decision="rejected", comment="wrong price", at=f.at(5)))
    found = refusal(step, KIM, _approve(), NOW)
    assert found is not None and found.rule == "already_decided" and "rejected" in found.detail


def test_a_rejection_needs_a_comment_and_an_edit_its_output() -> None:
    step = _step(*_proposed())
    found = refusal(step, KIM, Decision("reject", content_hash(f.DRAFT), comment="  "), NOW)
    assert found is not None and found.rule == "comment_required"
    assert refusal(step, KIM, Decision("reject", content_hash(f.DRAFT), comment="price"), NOW) is None
    found = refusal(step, KIM, Decision("edit", content_hash(f.DRAFT)), NOW)
    assert found is not None and found.rule == "output_required"
    assert refusal(step, KIM, Decision("edit", content_hash(f.DRAFT), output=EDIT), NOW) is None


def test_a_step_waiting_past_its_deadline_has_expired() -> None:
    step = _step(*_proposed())
    deadline = timedelta(minutes=30)
    assert expires_at(step, deadline) == f.at(2) + deadline
    assert expires_at(step, None) is None
    assert refusal(step, KIM, _approve(), f.at(31)) is None
    found = refusal(step, KIM, _approve(), f.at(32), deadline)
    assert found is not None and found.rule == "expired"
    # an edit restarts the clock
    edited = _step(*_proposed(), f.edited(output=EDIT, at=f.at(30)))
    assert expires_at(edited, deadline) == f.at(60)


def test_an_expiry_the_service_recorded_closes_the_step_and_a_refusal_stays_on_record() -> None:
    step = _step(*_proposed(), f.refused(at=f.at(4)), f.expired(deadline=f.at(30), at=f.at(30)))
    assert step.expired_at == f.at(30) and final_decision(step) == "expired" and not waiting(step)
    assert [(r.rule, r.tried_by.id) for r in step.refused] == [("four_eyes", f.AGENT.id)]
    found = refusal(step, KIM, _approve(), f.at(31))
    assert found is not None and found.rule == "expired"


def test_an_escalated_step_waits_for_the_contract_s_escalation_role() -> None:
    step = _step(*_proposed(), f.reviewed(decision="escalated", comment="over my head", at=f.at(5)))
    assert waiting(step) and escalated(step)
    assert deciding_role(step) == "sales-lead"  # the contract names none: the lane's role
    assert deciding_role(step, "head-of-sales") == "head-of-sales"
    found = refusal(step, KIM, _approve(), NOW, escalation_role="head-of-sales")
    assert found is not None and found.rule == "role_required" and "head-of-sales" in found.detail
    boss = Decider("lee", frozenset({"head-of-sales"}))
    assert refusal(step, boss, _approve(), NOW, escalation_role="head-of-sales") is None
