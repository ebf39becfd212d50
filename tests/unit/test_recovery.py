"""The receipt shows the recovery: who asked and why, each reverse action, what stands, the state."""

from __future__ import annotations

from api.render import receipt_text
from domain import rollback
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.rollback import plan
from domain.steps import RollbackRequested, StepEvent
from tests.unit import factories as f
from tests.unit.test_rollback_plan import MAIL, _ask, _step, _three_executed


def _receipt(*steps: StepEvent) -> Receipt:
    return render(f.entries(*steps))


def _asked_and_planned(
    steps: list[StepEvent], asked: RollbackRequested | None = None
) -> tuple[RollbackRequested, rollback.RollbackPlan]:
    asked = asked or _ask()
    return asked, plan(steps, asked)


def test_a_requested_rollback_shows_who_asked_why_and_what_is_pending() -> None:
    steps = _three_executed()
    asked, _ = _asked_and_planned(steps)
    (recovery,) = _receipt(*steps, asked).recovery
    assert (recovery.rollback_id, recovery.requested_by, recovery.reason) == (
        "rb-1",
        f.REVIEWER,
        "the price was wrong",
    )
    assert recovery.state == "requested"
    assert [(a.step_id, a.outcome) for a in recovery.actions] == [
        ("s-mail", "pending"),
        ("s-crm", "pending"),
        ("s-site", "pending"),
    ]


def test_each_reverse_action_shows_its_outcome_and_reference_and_the_state_follows() -> None:
    steps = _three_executed()
    asked, planned = _asked_and_planned(steps)
    mail, crm, site = planned.reverse
    done = [
        rollback.corrected(mail, correction="the price is 45 EUR", at=f.at(40)),
        rollback.reverted(crm, reverse_ref="n-7@v5", verified=True, at=f.at(41)),
    ]
    running = _receipt(*steps, asked, *done).recovery[0]
    assert running.state == "running"
    last = rollback.reverted(site, reverse_ref="c0ffee1", verified=True, at=f.at(42))
    receipt = _receipt(*steps, asked, *done, last)
    recovery = receipt.recovery[0]
    assert recovery.state == "corrected"  # the email could only be corrected
    actions = {a.step_id: a for a in recovery.actions}
    assert (actions["s-site"].outcome, actions["s-site"].reverse_ref, actions["s-site"].verified) == (
        "reverted",
        "c0ffee1",
        True,
    )
    assert actions["s-mail"].outcome == "corrected" and actions["s-mail"].correction == "the price is 45 EUR"
    # Each step's own state: the email is corrected, never reverted.
    states = {s.step_id: s.reversal.state if s.reversal else None for s in receipt.steps}
    assert states == {"s-site": "reverted", "s-crm": "reverted", "s-mail": "corrected"}


def test_everything_reverted_is_reverted() -> None:
    steps = _three_executed()[:5]  # the site and the CRM note only
    asked, planned = _asked_and_planned(steps)
    outcomes = [rollback.reverted(r, reverse_ref="x", verified=True, at=f.at(40)) for r in planned.reverse]
    assert _receipt(*steps, asked, *outcomes).recovery[0].state == "reverted"


def test_what_stands_is_shown_with_its_runbook_and_the_rollback_is_partial() -> None:
    steps = [
        *_three_executed()[:3],
        *_step("s-none", MAIL, {"method": "none", "runbook": "call Ana"}, ref="m", minute=7),
    ]
    asked, planned = _asked_and_planned(steps)
    outcomes = [rollback.reverted(planned.reverse[0], reverse_ref="x", verified=True, at=f.at(40))]
    finished = f.finished("published", at=f.at(20))
    receipt = _receipt(*steps, finished, asked, *planned.stands, *outcomes)
    recovery = receipt.recovery[0]
    assert recovery.state == "partially reverted"
    assert [(s.step_id, s.runbook, s.method) for s in recovery.stands] == [("s-none", "call Ana", "none")]
    (none_step,) = [s for s in receipt.steps if s.step_id == "s-none"]
    assert none_step.reversal is not None and none_step.reversal.state == "stands"
    assert none_step.reversal.stands == "call Ana"
    # Recovery after the run finished is expected, not an oddity.
    assert not [x for x in receipt.findings if x.code == "after_final"]


def test_a_failure_is_shown_until_a_later_outcome_replaces_it() -> None:
    steps = _three_executed()[:3]
    asked, planned = _asked_and_planned(steps)
    (site,) = planned.reverse
    failure = rollback.failed(site, error="conflicts in pricing.html", retryable=False, at=f.at(40))
    recovery = _receipt(*steps, asked, failure).recovery[0]
    assert recovery.state == "failed"
    assert (recovery.actions[0].error, recovery.actions[0].retryable) == ("conflicts in pricing.html", False)
    fixed = rollback.reverted(site, reverse_ref="c0ffee1", verified=True, at=f.at(50))
    assert _receipt(*steps, asked, failure, fixed).recovery[0].state == "reverted"


def test_outcomes_of_another_rollback_do_not_count() -> None:
    steps = _three_executed()[:3]
    asked, _ = _asked_and_planned(steps)
    other = plan(steps, _ask(rollback_id="rb-2")).reverse[0]
    outcome = rollback.reverted(other, reverse_ref="x", verified=True, at=f.at(40))
    assert _receipt(*steps, asked, outcome).recovery[0].state == "requested"


def test_a_run_never_rolled_back_has_no_recovery() -> None:
    assert _receipt(*f.clean_run()).recovery == ()


def test_the_text_receipt_shows_the_recovery() -> None:
    steps = [
        *_three_executed()[:5],
        *_step("s-none", MAIL, {"method": "none", "runbook": "call Ana"}, ref="m", minute=7),
    ]
    asked, planned = _asked_and_planned(steps)
    crm, site = planned.reverse
    outcomes = [
        rollback.reverted(site, reverse_ref="c0ffee1", verified=True, at=f.at(40)),
        rollback.failed(crm, error="hubspot answered 422: locked", retryable=False, at=f.at(41)),
    ]
    text = receipt_text(_receipt(*steps, asked, *planned.stands, *outcomes))
    assert "Recovery rb-1: FAILED — asked by maria (sales-lead)" in text and "the price was wrong" in text
    assert "s-site: revert github/file/site/pricing.html -> reverted, ref c0ffee1, verified" in text
    assert "s-crm: amend hubspot/note/n-7 -> failed, hubspot answered 422: locked (a person must act)" in text
    assert "s-none: STANDS, a person must act: call Ana" in text


def test_a_failure_neither_retried_nor_handed_over_is_a_finding_until_it_is() -> None:
    steps = _three_executed()[:3]
    asked, planned = _asked_and_planned(steps)
    (site,) = planned.reverse
    failure = rollback.failed(site, error="conflicts in pricing.html", retryable=False, at=f.at(40))
    (finding,) = [x for x in _receipt(*steps, asked, failure).findings if x.code == "rollback_failed"]
    assert finding.step_id == "s-site" and finding.event_ids == (failure.event_id,)
    assert "conflicts in pricing.html" in finding.message and "a person must act" in finding.message
    # Retried to an outcome: no finding.
    fixed = rollback.reverted(site, reverse_ref="c0ffee1", verified=True, at=f.at(50))
    assert not [x for x in _receipt(*steps, asked, failure, fixed).findings if x.code == "rollback_failed"]
    # Handed to a person: it stands, the rollback is partial, no finding.
    handed = f.rollback_stands(
        "s-site",
        "resolve the conflict by hand",
        extra={"rollback_id": "rb-1", "method": "revert"},
        at=f.at(50),
    )
    receipt = _receipt(*steps, asked, failure, handed)
    assert not [x for x in receipt.findings if x.code == "rollback_failed"]
    recovery = receipt.recovery[0]
    assert recovery.state == "partially reverted" and recovery.actions == ()
    assert [(s.step_id, s.runbook) for s in recovery.stands] == [("s-site", "resolve the conflict by hand")]
