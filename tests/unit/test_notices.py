"""The notices the platform gates on: one per lane or review decision, stable, with the version."""

from __future__ import annotations

from domain.notices import DecisionNotice, notices
from domain.steps import SERVICE, content_hash
from tests.unit import factories as f

EDIT = f.DRAFT + "Best, Maria\n"


def _all(*steps: object) -> list[DecisionNotice]:
    history = f.entries(*steps)  # type: ignore[arg-type]
    return [notice for _, notice in notices(history, history)]


def _service(lane: str, **kw: object) -> object:
    return f.policy(lane=lane, source="service", by=SERVICE, decision_id=f"d-{lane}", **kw)  # type: ignore[arg-type]


def test_a_service_lane_decision_and_each_review_are_notices_with_their_versions() -> None:
    found = _all(
        f.started(),
        f.proposed(at=f.at(1)),
        _service("review", at=f.at(2)),
        f.edited(output=EDIT, at=f.at(3)),
        f.reviewed(output=EDIT, comment="fine", at=f.at(4)),
    )
    assert [(n.kind, n.outcome, n.final, n.version_hash) for n in found] == [
        ("lane", "pending", False, content_hash(f.DRAFT)),
        ("review", "edited", False, content_hash(EDIT)),
        ("review", "approved", True, content_hash(EDIT)),
    ]
    lane, _, approval = found
    assert (lane.lane, lane.rule_id, lane.required_role, lane.decided_by) == (
        "review",
        "R-lead-email",
        "sales-lead",
        SERVICE,
    )
    assert approval.comment == "fine" and approval.decided_by == f.REVIEWER and approval.step_id == f.STEP


def test_lanes_map_to_outcomes_and_only_a_person_s_wait_is_not_final() -> None:
    outcomes = {}
    for lane in ("auto", "review", "escalate", "draft_only", "block"):
        (notice,) = _all(f.started(), f.proposed(), _service(lane))
        outcomes[lane] = (notice.outcome, notice.final)
    assert outcomes == {
        "auto": ("approved", True),
        "review": ("pending", False),
        "escalate": ("pending", False),
        "draft_only": ("draft_only", True),
        "block": ("blocked", True),
    }


def test_a_platform_s_own_decision_and_an_agent_s_edit_are_not_notices() -> None:
    assert _all(f.started(), f.proposed(), f.policy(), f.edited(output=EDIT, by=f.AGENT)) == []


def test_notices_are_those_of_the_new_entries_only_and_the_same_on_replay() -> None:
    history = f.entries(
        f.started(), f.proposed(), _service("review"), f.reviewed(decision="rejected", comment="no")
    )
    later = list(notices(history, history[-1:]))
    assert [(version, n.outcome) for version, n in later] == [(4, "rejected")]
    assert later == list(notices(history, history[-1:]))
    assert later[0][1].decision_id == history[-1].step.event_id


def test_an_expiry_is_a_final_notice_about_the_version_that_waited() -> None:
    found = _all(f.started(), f.proposed(), _service("review"), f.expired(deadline=f.at(30)))
    assert [(n.outcome, n.final, n.version_hash, n.decided_by) for n in found][-1] == (
        "expired",
        True,
        content_hash(f.DRAFT),
        SERVICE,
    )
