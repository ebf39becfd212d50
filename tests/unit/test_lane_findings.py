"""The service's decision in the receipt, and the lane findings: exact where they fire, silent elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from domain.evidence import Finding
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.step_values import Actor
from domain.steps import SERVICE, StepEvent, flag, reserved_for_service
from tests.unit import factories as f

CUSTOMER = Actor(kind="human", id="customer-77")


def _service(lane: str = "review", **kw: Any) -> StepEvent:
    kw.setdefault("decision_id", f"dec-{lane}")
    return f.policy(
        lane=lane, source="service", by=SERVICE, rule_id=f"svc-{lane}", policy_version="sha256:p1", **kw
    )


def _run(*middle: StepEvent, proposal: StepEvent | None = None, execute: bool = True) -> list[StepEvent]:
    """Started, a source, a proposal, then `middle`, then (if asked) the execution and the final."""
    steps = [
        f.started(at=f.at(0)),
        f.source("pricing", retrieved_at=f.at(-60), at=f.at(1)),
        proposal or f.proposed(confidence=0.92, reason_code="pricing-question", at=f.at(2)),
        *middle,
    ]
    if execute:
        steps += [f.executed(at=f.at(11)), f.finished("sent", at=f.at(12))]
    return steps


def _receipt(steps: list[StepEvent]) -> Receipt:
    return render(f.entries(steps))


def _codes(steps: list[StepEvent]) -> list[str]:
    return [x.code for x in _receipt(steps).findings]


def _found(code: str, steps: list[StepEvent]) -> list[Finding]:
    return [x for x in _receipt(steps).findings if x.code == code]


# --- the decision in the receipt ----------------------------------------------------------------


def test_the_services_decision_governs_and_the_platforms_is_kept_beside_it() -> None:
    platform, service = (
        f.policy(lane="review", at=f.at(3)),
        _service("review", matched_rules=["svc-review", "x"]),
    )
    step = _receipt(_run(platform, service, f.reviewed(at=f.at(10)))).steps[0]
    assert step.policy is not None and step.platform_policy is not None
    assert (step.policy.source, step.policy.event_id, step.policy.matched_rules) == (
        "service",
        service.event_id,
        ("svc-review", "x"),
    )
    assert (step.platform_policy.source, step.platform_policy.event_id) == ("platform", platform.event_id)


def test_the_receipt_json_carries_the_policy_fields_of_the_contract() -> None:
    policy = _receipt(_run(_service("review"), f.reviewed(at=f.at(10)))).model_dump(mode="json")["steps"][0][
        "policy"
    ]
    assert {
        "decision_id",
        "rule_id",
        "policy_version",
        "lane",
        "required_role",
        "reasons",
        "missing_fields",
        "source",
    } <= set(policy)
    assert (policy["decision_id"], policy["source"]) == ("dec-review", "service")


def test_without_a_service_decision_the_platforms_governs() -> None:
    platform = f.policy(lane="review", at=f.at(3))
    step = _receipt(_run(platform, f.reviewed(at=f.at(10)))).steps[0]
    assert (
        step.policy == step.platform_policy and step.policy is not None and step.policy.source == "platform"
    )


def test_a_decision_that_calls_itself_the_services_but_is_not_written_by_it_is_the_platforms() -> None:
    forged = f.policy(lane="auto", source="service", at=f.at(3))  # by the platform's actor
    step = _receipt(_run(forged)).steps[0]
    assert step.policy is not None and step.policy.source == "platform"


def test_a_later_service_decision_on_an_edit_replaces_the_earlier_one() -> None:
    first, again = _service("auto", at=f.at(3)), _service("review", at=f.at(6))
    step = _receipt(_run(first, f.edited(at=f.at(5)), again, execute=False)).steps[0]
    assert step.policy is not None and step.policy.event_id == again.event_id


# --- a platform that disagrees ------------------------------------------------------------------


def test_policy_disagreement_names_the_platforms_and_the_services_decision() -> None:
    platform, service = f.policy(lane="auto", at=f.at(3)), _service("review", at=f.at(3))
    (finding,) = _found("policy_disagreement", _run(platform, service, f.reviewed(at=f.at(10))))
    assert (finding.severity, finding.step_id) == ("warning", f.STEP)
    assert finding.event_ids == (platform.event_id, service.event_id)
    assert (
        "the platform routed it to 'auto' (R-lead-email), the service's policy to 'review'" in finding.message
    )


def test_no_disagreement_when_the_lanes_agree_or_only_one_side_decided() -> None:
    approved = f.reviewed(at=f.at(10))
    # (the execution names no approval: the one finding that is not about the lanes)
    codes = _codes(_run(f.policy(lane="review", at=f.at(3)), _service("review"), approved))
    assert codes == ["execution_not_bound"]
    assert _found("policy_disagreement", _run(_service("review"), approved)) == []
    assert _found("policy_disagreement", _run(f.policy(lane="auto", at=f.at(3)))) == []


def test_the_services_lane_is_what_approval_is_judged_by() -> None:
    platform_auto, service_review = f.policy(lane="auto", at=f.at(3)), _service("review")
    assert "executed_without_approval" in _codes(_run(platform_auto, service_review))
    platform_review, service_auto = f.policy(lane="review", at=f.at(3)), _service("auto")
    assert "executed_without_approval" not in _codes(_run(platform_review, service_auto))


# --- missing account context --------------------------------------------------------------------


def test_missing_account_context_names_the_fields_and_the_decision() -> None:
    decision = _service("draft_only", missing_fields=["source:cms/page/pricing", "action.params.owner"])
    (finding,) = _found("missing_account_context", _run(decision, execute=False))
    assert (finding.severity, finding.event_ids) == ("info", (decision.event_id,))
    assert finding.message == "missing account context: source:cms/page/pricing, action.params.owner"
    (executed,) = _found(
        "missing_account_context", _run(_service("review", missing_fields=["x"]), f.reviewed())
    )
    assert executed.severity == "warning"


def test_missing_account_context_quiet_when_nothing_is_missing() -> None:
    assert _found("missing_account_context", _run(_service("review"), f.reviewed(at=f.at(10)))) == []


# --- executions outside the lane ----------------------------------------------------------------


@pytest.mark.parametrize("lane", ["review", "escalate"])
def test_executed_without_approval_fires_where_the_lane_needs_a_person(lane: str) -> None:
    steps = _run(_service(lane))
    (finding,) = _found("executed_without_approval", steps)
    assert finding.event_ids == (steps[-2].event_id,)
    assert finding.message == f"executed with no recorded approval (lane '{lane}')"


def test_an_auto_lane_needs_no_approval() -> None:
    assert _codes(_run(_service("auto"))) == []


@pytest.mark.parametrize(
    "proposal",
    [
        f.proposed(verb="transfer_to_human_agents", confidence=0.9, reason_code="r", at=f.at(2)),
        f.proposed(verb="route_ticket", flags=["handoff"], confidence=0.9, reason_code="r", at=f.at(2)),
    ],
    ids=["handoff-verb", "handoff-flag"],
)
def test_a_hand_off_is_not_an_execution_that_needs_approval(proposal: StepEvent) -> None:
    assert _found("executed_without_approval", _run(_service("review"), proposal=proposal)) == []


def test_a_customers_own_action_is_not_the_agents() -> None:
    own = f.proposed(by=CUSTOMER, confidence=0.9, reason_code="r", at=f.at(2))
    steps = [*_run(_service("review"), proposal=own, execute=False), f.executed(by=CUSTOMER, at=f.at(11))]
    codes = _codes(steps)
    assert "executed_without_approval" not in codes and "blocked_action_executed" not in codes


@pytest.mark.parametrize("lane", ["review", "draft_only", "block"])
def test_a_step_a_person_carried_out_is_not_the_agents_execution(lane: str) -> None:
    steps = [*_run(_service(lane), execute=False), f.executed(by=f.REVIEWER, at=f.at(11))]
    assert {"executed_without_approval", "executed_in_draft_only", "blocked_action_executed"}.isdisjoint(
        _codes(steps)
    )


@pytest.mark.parametrize(
    ("lane", "code"), [("draft_only", "executed_in_draft_only"), ("block", "blocked_action_executed")]
)
def test_the_agent_executing_a_draft_only_or_blocked_step_names_the_decision_and_the_execution(
    lane: str, code: str
) -> None:
    steps = _run(decision := _service(lane))
    (finding,) = _found(code, steps)
    assert finding.event_ids == (decision.event_id, steps[-2].event_id)
    assert "executed_without_approval" not in _codes(steps)


def test_a_wire_step_claiming_to_be_the_services_decision_is_reserved() -> None:
    assert reserved_for_service(f.policy(source="service")) is not None
    assert reserved_for_service(f.policy(by=SERVICE)) is not None
    assert (
        reserved_for_service(flag(f.started(), "key_mismatch", "x"))
        == "record.flagged is written by the service only"
    )
    assert reserved_for_service(f.policy()) is None
    assert reserved_for_service(f.policy(source="platform")) is None
    assert reserved_for_service(f.proposed()) is None
