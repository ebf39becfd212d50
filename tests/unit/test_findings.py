"""Findings: each detector fires on the gap it names and stays quiet on a clean run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from domain.evidence import Finding
from domain.findings import DETECTORS
from domain.receipt import render
from domain.record_findings import final_state_unclear
from domain.source_findings import STALE_SOURCE_AGE
from domain.step_values import Actor
from domain.steps import StepEvent, content_hash, flag
from tests.unit import factories as f

EDIT = f.DRAFT + "Best, Maria\n"


def findings(*steps: StepEvent | list[StepEvent]) -> list[Finding]:
    return list(render(f.entries(*steps)).findings)


def found(code: str, *steps: StepEvent | list[StepEvent]) -> list[Finding]:
    return [x for x in findings(*steps) if x.code == code]


def clean_with(
    *replacements: tuple[int, StepEvent | None], extra: Sequence[StepEvent] = ()
) -> list[StepEvent]:
    """The clean run with step `i` replaced (or dropped with None), then `extra` before the final."""
    steps: list[StepEvent | None] = list(f.clean_run())
    for index, step in replacements:
        steps[index] = step
    kept = [s for s in steps if s is not None]
    return kept[:-1] + list(extra) + kept[-1:]


STARTED, SOURCE, PROPOSED, POLICY, REVIEWED, EXECUTED, FINISHED = range(7)


def test_detectors_are_the_ones_tested_here() -> None:
    assert [d.__name__ for d in DETECTORS] == [
        "no_input_reference",
        "no_source_evidence",
        "unknown_source",
        "stale_source",
        "no_policy_rule",
        "policy_disagreement",
        "missing_account_context",
        "executed_outside_lane",
        "executed_without_approval",
        "executed_differs_from_approved",
        "edit_not_captured",
        "self_approval",
        "no_rollback_link",
        "conflicting_finals",
        "step_order",
        "after_final",
        "flagged_delivery",
        "malformed_arguments",
    ]


def test_clean_run_has_no_findings() -> None:
    assert findings(f.clean_run()) == []


# --- input reference -----------------------------------------------------------------------------


def test_run_not_started_fires_without_run_started() -> None:
    (finding,) = found("run_not_started", clean_with((STARTED, None)))
    assert (finding.severity, finding.step_id) == ("warning", None)
    assert found("no_input_reference", clean_with((STARTED, None))) == []


def test_no_input_reference_fires_when_the_run_names_no_input() -> None:
    start = f.started(input=None, at=f.at(0))
    (finding,) = found("no_input_reference", clean_with((STARTED, start)))
    assert (finding.severity, finding.event_ids) == ("warning", (start.event_id,))


def test_input_reference_quiet_on_a_clean_run() -> None:
    assert found("no_input_reference", f.clean_run()) == found("run_not_started", f.clean_run()) == []


# --- sources -------------------------------------------------------------------------------------


def test_no_source_evidence_fires_for_a_proposal_without_sources() -> None:
    steps = clean_with((SOURCE, None), (PROPOSED, f.proposed(sources=(), confidence=0.9, at=f.at(2))))
    (finding,) = found("no_source_evidence", steps)
    assert (finding.severity, finding.step_id) == ("warning", f.STEP)
    assert finding.message == "'send_email' was proposed with no source evidence"


def test_no_source_evidence_quiet_when_the_proposal_cites_a_recorded_source() -> None:
    assert found("no_source_evidence", f.clean_run()) == []


def test_no_source_evidence_is_info_when_the_run_has_sources_the_step_does_not_cite() -> None:
    steps = clean_with((PROPOSED, f.proposed(sources=(), at=f.at(2))))
    (finding,) = found("no_source_evidence", steps)
    assert (finding.severity, finding.step_id) == ("info", f.STEP)
    assert "does not say which of the run's sources" in finding.message


def test_unknown_source_fires_for_a_cited_source_never_recorded() -> None:
    steps = clean_with((PROPOSED, f.proposed(sources=("pricing", "faq", "terms"), at=f.at(2))))
    (finding,) = found("unknown_source", steps)
    assert finding.step_id == f.STEP
    assert finding.message == "relies on sources never recorded: faq, terms"


def test_unknown_source_quiet_when_every_cited_source_is_recorded() -> None:
    assert found("unknown_source", f.clean_run()) == []


def test_stale_source_fires_when_retrieved_more_than_seven_days_before_the_proposal() -> None:
    old = f.source(retrieved_at=f.at(2) - timedelta(days=8, hours=1), at=f.at(1))
    (finding,) = found("stale_source", clean_with((SOURCE, old)))
    assert (finding.severity, finding.step_id, finding.event_ids) == ("warning", f.STEP, (old.event_id,))
    assert finding.message == "source pricing was 8 days old when the action relied on it"


@pytest.mark.parametrize("age", [STALE_SOURCE_AGE, timedelta(days=6), timedelta(0), -timedelta(hours=1)])
def test_stale_source_quiet_up_to_seven_days(age: timedelta) -> None:
    fresh = f.source(retrieved_at=f.at(2) - age, at=f.at(1))
    assert found("stale_source", clean_with((SOURCE, fresh))) == []


def test_stale_source_quiet_when_retrieval_time_is_unknown() -> None:
    assert found("stale_source", clean_with((SOURCE, f.source(retrieved_at=None, at=f.at(1))))) == []


def test_stale_source_not_hidden_by_a_refresh_recorded_after_the_proposal() -> None:
    old = f.source(retrieved_at=f.at(2) - timedelta(days=10), at=f.at(1))
    refreshed_later = f.source(retrieved_at=f.at(20), at=f.at(20))
    steps = clean_with((SOURCE, old), extra=[refreshed_later])
    assert [x.event_ids for x in found("stale_source", steps)] == [(old.event_id,)]


# --- policy --------------------------------------------------------------------------------------


def test_no_policy_rule_is_a_warning_when_the_agent_gave_a_confidence() -> None:
    (finding,) = found("no_policy_rule", f.proposed(confidence=0.95))
    assert (finding.severity, finding.step_id) == ("warning", f.STEP)
    assert finding.message == "routed on the agent's own signal with no policy rule"


def test_no_policy_rule_is_info_without_a_confidence() -> None:
    (finding,) = found("no_policy_rule", f.proposed(confidence=None, reason_code="pricing"))
    assert finding.severity == "info"
    assert finding.message == "no policy rule recorded for this step"


def test_no_policy_rule_quiet_when_a_rule_routed_the_step() -> None:
    assert found("no_policy_rule", f.clean_run()) == []


# --- approval ------------------------------------------------------------------------------------


def test_executed_without_approval_fires_in_the_review_lane() -> None:
    steps = clean_with((REVIEWED, None))
    (finding,) = found("executed_without_approval", steps)
    assert (finding.severity, finding.event_ids) == ("critical", (steps[EXECUTED - 1].event_id,))
    assert finding.message == "executed with no recorded approval (lane 'review')"


def test_executed_without_approval_fires_without_any_policy_rule() -> None:
    (finding,) = found("executed_without_approval", clean_with((POLICY, None), (REVIEWED, None)))
    assert finding.message == "executed with no recorded approval (no policy rule allowed auto-execution)"


def test_executed_without_approval_fires_when_the_last_review_rejected() -> None:
    clean = f.clean_run()
    run = [*clean[:EXECUTED], f.reviewed(decision="rejected", at=f.at(10.5)), *clean[EXECUTED:]]
    (finding,) = found("executed_without_approval", run)
    assert finding.event_ids == (clean[EXECUTED].event_id,)


def test_executed_without_approval_quiet_when_approved() -> None:
    assert found("executed_without_approval", f.clean_run()) == []


def test_auto_lane_needs_no_approval() -> None:
    auto = f.policy(lane="auto", at=f.at(3))
    # The execution names the lane decision it relied on: no approval is needed.
    steps = clean_with(
        (POLICY, auto), (REVIEWED, None), (EXECUTED, f.executed(authorization=auto.event_id, at=f.at(11)))
    )
    assert [x.code for x in findings(steps)] == []


@pytest.mark.parametrize(
    ("lane", "code"), [("block", "blocked_action_executed"), ("draft_only", "executed_in_draft_only")]
)
def test_executed_outside_its_lane_fires_even_with_an_approval(lane: str, code: str) -> None:
    steps = clean_with((POLICY, f.policy(lane=lane, at=f.at(3))))
    (finding,) = found(code, steps)
    assert (finding.severity, finding.step_id) == ("critical", f.STEP)
    assert finding.message == f"executed although policy routed it to '{lane}'"
    assert finding.event_ids == (steps[POLICY].event_id, steps[EXECUTED].event_id)
    assert found("executed_without_approval", steps) == []


@pytest.mark.parametrize(
    ("lane", "code"), [("block", "blocked_action_executed"), ("draft_only", "executed_in_draft_only")]
)
def test_executed_outside_its_lane_quiet_while_not_executed(lane: str, code: str) -> None:
    steps = clean_with((POLICY, f.policy(lane=lane, at=f.at(3))), (EXECUTED, None))
    assert found(code, steps) == []


def test_executed_differs_from_approved_fires() -> None:
    review = f.reviewed(at=f.at(10))
    run = clean_with(
        (REVIEWED, review),
        (EXECUTED, None),
        extra=[
            f.edited(output=EDIT, at=f.at(10.5)),
            execution := f.executed(output=EDIT, at=f.at(11)),
        ],
    )
    (finding,) = found("executed_differs_from_approved", run)
    assert (finding.severity, finding.event_ids) == ("critical", (review.event_id, execution.event_id))
    assert found("edit_not_captured", run) == []  # the executed version was captured, just not approved


def test_executed_differs_from_approved_quiet_when_the_approved_edit_is_executed() -> None:
    run = clean_with(
        (REVIEWED, None),
        (EXECUTED, None),
        extra=[
            f.edited(output=EDIT, at=f.at(9)),
            approval := f.reviewed(output=EDIT, at=f.at(10)),
            f.executed(output=EDIT, authorization=approval.event_id, at=f.at(11)),
        ],
    )
    assert findings(run) == []


# --- edits ---------------------------------------------------------------------------------------


def test_edit_not_captured_fires_for_a_reviewed_version_nobody_recorded() -> None:
    review = f.reviewed(output="a version nobody recorded", at=f.at(10))
    execution = f.executed(output="a version nobody recorded", at=f.at(11))
    (finding,) = found("edit_not_captured", clean_with((REVIEWED, review), (EXECUTED, execution)))
    assert (finding.severity, finding.event_ids) == ("warning", (review.event_id, execution.event_id))


def test_edit_not_captured_fires_for_an_edit_of_an_unknown_base() -> None:
    edit = f.edited(output=EDIT, base="an earlier edit never recorded", at=f.at(9))
    run = clean_with(
        (REVIEWED, f.reviewed(output=EDIT, at=f.at(10))),
        (EXECUTED, f.executed(output=EDIT, at=f.at(11))),
        extra=[edit],
    )
    assert [x.event_ids for x in found("edit_not_captured", run)] == [(edit.event_id,)]


def test_edit_not_captured_quiet_when_every_version_was_recorded() -> None:
    run = clean_with(
        (REVIEWED, None),
        (EXECUTED, None),
        extra=[
            f.edited(output=EDIT, at=f.at(9)),
            f.reviewed(output=EDIT, at=f.at(10)),
            f.executed(output=EDIT, at=f.at(11)),
        ],
    )
    assert found("edit_not_captured", run) == []


# --- reviewer independence -----------------------------------------------------------------------


def test_self_approval_fires_when_the_proposer_approves() -> None:
    human = Actor(kind="human", id="maria")
    review = f.reviewed(by=human, at=f.at(10))
    run = clean_with((PROPOSED, f.proposed(by=human, at=f.at(2))), (REVIEWED, review))
    (finding,) = found("self_approval", run)
    assert (finding.severity, finding.event_ids) == ("critical", (review.event_id,))
    assert finding.message == "approved by human 'maria', not by an independent human reviewer"


def test_self_approval_fires_for_any_agent_approver() -> None:
    other_agent = Actor(kind="agent", id="checker-bot")
    (finding,) = found("self_approval", clean_with((REVIEWED, f.reviewed(by=other_agent, at=f.at(10)))))
    assert finding.message == "approved by agent 'checker-bot', not by an independent human reviewer"


def test_self_approval_quiet_for_an_independent_human_or_a_rejection() -> None:
    assert found("self_approval", f.clean_run()) == []
    rejection = f.reviewed(decision="rejected", by=f.AGENT, at=f.at(10))
    assert found("self_approval", clean_with((REVIEWED, rejection), (EXECUTED, None))) == []


# --- rollback ------------------------------------------------------------------------------------


def test_no_rollback_link_is_a_warning_once_executed() -> None:
    (finding,) = found("no_rollback_link", clean_with((PROPOSED, f.proposed(rollback=None, at=f.at(2)))))
    assert (finding.severity, finding.step_id) == ("warning", f.STEP)


def test_no_rollback_link_is_info_before_execution() -> None:
    (finding,) = found("no_rollback_link", f.proposed(rollback=None))
    assert finding.severity == "info"


def test_rollback_method_none_is_not_a_gap() -> None:
    run = clean_with((PROPOSED, f.proposed(rollback={"method": "none"}, at=f.at(2))))
    assert found("no_rollback_link", run) == []


# --- final state ---------------------------------------------------------------------------------


def test_final_state_unclear_waits_for_the_grace_period() -> None:
    last = f.at(10)
    assert final_state_unclear(None, last, last + timedelta(minutes=59), timedelta(hours=1)) is None
    finding = final_state_unclear(None, last, last + timedelta(hours=3), timedelta(hours=1))
    assert finding is not None
    assert (finding.code, finding.severity) == ("final_state_unclear", "warning")
    assert "no run.finished 3 h after its last step" in finding.message


def test_final_state_unclear_never_for_a_finished_run() -> None:
    last = f.at(10)
    assert final_state_unclear("sent", last, last + timedelta(days=30), timedelta(hours=1)) is None


def test_an_unfinished_run_is_not_a_gap_of_the_fold() -> None:
    assert findings(f.clean_run()[:-1]) == []


def test_final_state_quiet_with_one_final() -> None:
    run = f.clean_run()
    assert found("conflicting_finals", run) == []


def test_conflicting_finals_fires_for_two_finals() -> None:
    second = f.finished("reverted", at=f.at(30))
    run = [*f.clean_run(), second]
    (finding,) = found("conflicting_finals", run)
    assert finding.event_ids == (run[-2].event_id, second.event_id)
    assert finding.message == "the run finished 2 times (sent, reverted); the last counts"


# --- order ---------------------------------------------------------------------------------------


def test_unknown_step_fires_for_an_event_about_a_step_never_proposed() -> None:
    stray = f.executed("never-proposed", at=f.at(11))
    (finding,) = found("unknown_step", clean_with(extra=[stray]))
    assert (finding.step_id, finding.event_ids) == ("never-proposed", (stray.event_id,))
    assert finding.message == "action.executed for a step that was never proposed"


def test_unknown_step_fires_for_a_proposal_without_step_id() -> None:
    proposal = f.proposed(step_id=None)
    (finding,) = found("unknown_step", proposal)
    assert (finding.event_ids, finding.message) == ((proposal.event_id,), "action.proposed without a step_id")


def test_unknown_step_fires_for_a_step_event_without_step_id() -> None:
    policy = f.policy(step_id=None)
    (finding,) = found("unknown_step", f.started(), policy)
    assert (finding.step_id, finding.event_ids) == (None, (policy.event_id,))


def test_step_event_without_step_id_after_a_proposal_without_one_is_unknown_not_out_of_order() -> None:
    policy = f.policy(step_id=None)
    run = [f.started(), f.proposed(step_id=None), policy]
    assert found("out_of_order", run) == []
    # Both the proposal and the policy name no step: one finding, with both events and a count.
    (unknown,) = found("unknown_step", run)
    assert (unknown.count, unknown.event_ids[-1]) == (2, policy.event_id)


def test_out_of_order_fires_for_an_event_before_its_proposal() -> None:
    early = f.policy(at=f.at(1))
    run = [f.started(at=f.at(0)), early, f.proposed(at=f.at(2))]
    (finding,) = found("out_of_order", run)
    assert (finding.severity, finding.step_id, finding.event_ids) == ("info", f.STEP, (early.event_id,))
    assert found("unknown_step", run) == []


def test_order_quiet_on_a_clean_run_and_for_run_scoped_events() -> None:
    run = clean_with(extra=[f.corrected(at=f.at(11.5))])
    assert found("unknown_step", run) == found("out_of_order", run) == []


def test_after_final_fires_for_a_step_event_after_the_run_finished() -> None:
    late = f.executed(at=f.at(20))
    run = [*clean_with((EXECUTED, None)), late]
    (finding,) = found("after_final", run)
    assert (finding.severity, finding.event_ids) == ("info", (late.event_id,))
    assert finding.message == "action.executed recorded after the run finished"


def test_after_final_quiet_for_corrections_and_rollbacks() -> None:
    run = [
        *f.clean_run(),
        f.corrected(at=f.at(20)),
        f.rollback_requested(at=f.at(21)),
        f.rollback_failed(at=f.at(22)),
        f.reverted(at=f.at(23)),
    ]
    assert found("after_final", run) == []
    assert findings(run) == []


def test_factories_name_versions_by_content_hash() -> None:
    """The factories name versions with content_hash, as the publisher does."""
    assert f.proposed().data.action.output_hash == content_hash(f.DRAFT)  # type: ignore[attr-defined]


def test_a_correction_of_a_step_never_proposed_is_an_unknown_step() -> None:
    correction = f.corrected(corrects="step-that-never-was")
    (finding,) = found("unknown_step", clean_with(extra=[correction]))
    assert (finding.step_id, finding.event_ids) == ("step-that-never-was", (correction.event_id,))


# --- delivery flags ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["conflicting_duplicate", "key_mismatch", "tenant_changed"])
def test_a_service_flag_is_a_warning_naming_the_flagged_event(code: str) -> None:
    run = f.clean_run()
    note = flag(run[EXECUTED], code, "arrived oddly")  # type: ignore[arg-type]
    (finding,) = found(code, [*run, note])
    assert (finding.severity, finding.step_id) == ("warning", run[EXECUTED].step_id)
    assert finding.event_ids == (run[EXECUTED].event_id, note.event_id)
    assert finding.message == "arrived oddly"


def test_a_flag_after_the_final_is_no_order_finding() -> None:
    run = f.clean_run()
    note = flag(run[STARTED], "key_mismatch", "keyed otherwise")
    assert [x.code for x in findings([*run, note])] == ["key_mismatch"]


def test_every_finding_names_the_events_that_show_it() -> None:
    """A gap is shown by the step that has it: each finding names at least one event."""
    bare = f.proposed(sources=("nowhere",), rollback=None, at=f.at(2))
    runs = [
        [bare, f.executed(at=f.at(3))],  # no run.started, no rule, no rollback link, unknown source
        [f.started(at=f.at(0)), f.proposed(sources=(), at=f.at(1))],  # no source evidence
        clean_with(extra=[f.proposed("run-1/step-2", sources=(), rollback=None, at=f.at(4))]),
    ]
    seen = set()
    for run in runs:
        for finding in findings(run):
            assert finding.event_ids, finding
            seen.add(finding.code)
    assert {
        "run_not_started",
        "no_policy_rule",
        "no_rollback_link",
        "unknown_source",
        "no_source_evidence",
    } <= seen


def test_a_source_named_by_system_kind_and_id_is_the_recorded_one() -> None:
    run = clean_with(extra=[f.proposed("run-1/step-2", sources=("cms/page/pricing",), at=f.at(4))])
    assert "unknown_source" not in [x.code for x in findings(run)]


def test_malformed_arguments_fires_for_a_proposal_an_importer_flagged() -> None:
    bad = f.proposed(flags=["malformed_arguments"], params={"unparsed_arguments": '{"to": '})
    [finding] = found("malformed_arguments", clean_with((PROPOSED, bad)))
    assert (finding.severity, finding.step_id, finding.event_ids) == ("warning", f.STEP, (bad.event_id,))
    assert "gmail.send" in finding.message


def test_malformed_arguments_quiet_on_a_clean_run() -> None:
    assert found("malformed_arguments", f.clean_run()) == []
