"""Planning a rollback: one reverse event per executed step, newest first, stable ids."""

from __future__ import annotations

from typing import Any

from domain import rollback
from domain.rollback import RollbackPlan, plan
from domain.steps import RollbackRequested, StepEvent
from tests.unit import factories as f

SITE = {"system": "github", "kind": "file", "id": "site/pricing.html"}
CRM = {"system": "hubspot", "kind": "note", "id": "n-7"}
MAIL = {"system": "gmail", "kind": "contact", "id": "ana@example.com"}


def _ask(steps: tuple[str, ...] = (), rollback_id: str = "rb-1") -> RollbackRequested:
    return rollback.request(
        tenant="default",
        run_id=f.RUN,
        rollback_id=rollback_id,
        reason="the price was wrong",
        steps=steps,
        requested_by=f.REVIEWER,
        at=f.at(30),
    )


def _step(
    step_id: str, target: dict[str, Any], link: dict[str, Any] | None, *, ref: str, minute: int
) -> list[StepEvent]:
    return [
        f.proposed(step_id, target=target, rollback=link, at=f.at(minute)),
        f.executed(step_id, external_ref=ref, at=f.at(minute + 1)),
    ]


def _three_executed() -> list[StepEvent]:
    return [
        f.started(at=f.at(0)),
        *_step("s-site", SITE, {"method": "revert"}, ref="abc123", minute=1),
        *_step("s-crm", CRM, {"method": "amend", "prior_version": "note v3"}, ref="n-7@v4", minute=3),
        *_step("s-mail", MAIL, {"method": "correct", "runbook": "send a correction"}, ref="msg-1", minute=5),
    ]


def test_three_executed_steps_are_reversed_newest_first() -> None:
    planned = plan(_three_executed(), _ask())
    assert [r.step_id for r in planned.reverse] == ["s-mail", "s-crm", "s-site"]
    assert [r.position for r in planned.reverse] == [0, 1, 2]
    site = planned.reverse[2]
    assert (site.method, site.external_ref, site.target.system) == ("revert", "abc123", "github")
    assert planned.reverse[1].prior_version == "note v3"
    assert not planned.partial and planned.stands == ()
    assert all(r.reason == "the price was wrong" and r.requested_by == f.REVIEWER for r in planned.reverse)


def test_reverse_ids_are_stable_across_re_planning_and_distinct_per_rollback() -> None:
    steps = _three_executed()
    first, again = plan(steps, _ask()), plan(steps, _ask())
    assert [r.reverse_id for r in first.reverse] == [r.reverse_id for r in again.reverse]
    assert len({r.reverse_id for r in first.reverse}) == 3
    other = plan(steps, _ask(rollback_id="rb-2"))
    assert not {r.reverse_id for r in other.reverse} & {r.reverse_id for r in first.reverse}


def test_only_proposed_and_rejected_steps_are_never_reversed() -> None:
    steps = [
        *_three_executed(),
        f.proposed("s-draft", target=CRM, rollback={"method": "delete"}, at=f.at(10)),
        f.proposed("s-rejected", target=CRM, rollback={"method": "delete"}, at=f.at(11)),
        f.reviewed("s-rejected", "rejected", at=f.at(12)),
    ]
    planned = plan(steps, _ask())
    assert {r.step_id for r in planned.reverse} == {"s-site", "s-crm", "s-mail"}
    assert {(s.step_id, s.why) for s in planned.skipped} == {
        ("s-draft", "not executed"),
        ("s-rejected", "not executed"),
    }


def test_an_already_reverted_or_corrected_step_is_not_reversed_again() -> None:
    steps = _three_executed()
    first = plan(steps, _ask())
    mail, crm = first.reverse[0], first.reverse[1]
    done = [
        rollback.corrected(mail, correction="the price is 45 EUR", at=f.at(40)),
        rollback.reverted(crm, reverse_ref="n-7@v5", verified=True, at=f.at(41)),
    ]
    again = plan([*steps, *done], _ask())
    assert [r.step_id for r in again.reverse] == ["s-site"]
    assert {(s.step_id, s.why) for s in again.skipped} == {
        ("s-mail", "already reverted"),
        ("s-crm", "already reverted"),
    }


def test_a_failed_reverse_is_planned_again_with_the_same_id() -> None:
    steps = _three_executed()
    first = plan(steps, _ask())
    failure = rollback.failed(first.reverse[0], error="smtp down", retryable=True, at=f.at(40))
    again = plan([*steps, failure], _ask())
    assert again.reverse == first.reverse


def test_a_step_with_method_none_or_no_link_stands_and_the_rollback_is_partial() -> None:
    steps = [
        *_three_executed(),
        *_step("s-none", MAIL, {"method": "none", "runbook": "call Ana"}, ref="msg-2", minute=7),
        *_step("s-bare", MAIL, None, ref="msg-3", minute=9),
        *_step("s-none-bare", MAIL, {"method": "none"}, ref="msg-4", minute=11),
    ]
    planned = plan(steps, _ask())
    assert planned.partial
    assert [r.step_id for r in planned.reverse] == ["s-mail", "s-crm", "s-site"]
    stands = {s.step_id: s for s in planned.stands}
    assert stands["s-none"].data.runbook == "call Ana"
    assert stands["s-none"].data.method == "none"
    assert "no rollback link" in stands["s-bare"].data.runbook and stands["s-bare"].data.method is None
    assert "irreversible" in stands["s-none-bare"].data.runbook
    assert all(s.data.rollback_id == "rb-1" for s in planned.stands)
    # Stable too: a re-plan records the same facts once.
    assert plan(steps, _ask()).stands == planned.stands


def test_a_request_naming_steps_plans_only_those_and_names_unknown_ones() -> None:
    planned = plan(_three_executed(), _ask(steps=("s-site", "s-ghost")))
    assert [r.step_id for r in planned.reverse] == ["s-site"]
    assert [(s.step_id, s.why) for s in planned.skipped] == [("s-ghost", "not in the run")]


def test_a_v1_request_for_one_step_plans_that_step() -> None:
    v1 = f.rollback_requested("s-crm", scope="step", at=f.at(30))
    assert isinstance(v1, RollbackRequested)
    planned = plan(_three_executed(), v1)
    assert [r.step_id for r in planned.reverse] == ["s-crm"]
    assert planned.rollback_id == v1.event_id


def test_a_step_executed_twice_is_undone_once_in_the_place_of_its_last_execution() -> None:
    steps = [*_three_executed(), f.executed("s-site", external_ref="def456", at=f.at(20))]
    planned = plan(steps, _ask())
    assert [r.step_id for r in planned.reverse] == ["s-site", "s-mail", "s-crm"]
    assert planned.reverse[0].external_ref == "def456"


def test_outcome_ids_are_stable_per_reverse_event() -> None:
    reverse = plan(_three_executed(), _ask()).reverse[0]
    assert (
        rollback.reverted(reverse, reverse_ref="x", verified=True, at=f.at(40)).event_id
        == rollback.reverted(reverse, reverse_ref="x", verified=True, at=f.at(50)).event_id
    )
    one = rollback.failed(reverse, error="a", retryable=True, at=f.at(40))
    assert one.event_id == rollback.failed(reverse, error="a", retryable=True, at=f.at(41)).event_id
    assert one.event_id != rollback.failed(reverse, error="b", retryable=True, at=f.at(41)).event_id
    assert (one.data.rollback_id, one.data.reverse_id, one.step_id) == ("rb-1", reverse.reverse_id, "s-mail")


def test_the_request_is_one_event_per_rollback_id() -> None:
    assert _ask().event_id == _ask().event_id != _ask(rollback_id="rb-2").event_id
    assert _ask(steps=("s-1",)).data.scope == "step" and _ask().data.scope == "run"


def test_an_empty_run_plans_nothing() -> None:
    planned: RollbackPlan = plan([f.started()], _ask())
    assert (planned.reverse, planned.stands, planned.skipped, planned.partial) == ((), (), (), False)
