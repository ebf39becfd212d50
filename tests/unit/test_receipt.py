"""The receipt: a pure fold over recorded entries, and the Run aggregate that records them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from domain.receipt import render
from domain.receipt_model import Receipt
from domain.run import Entry, Run, run_uuid
from domain.step_values import InputReference
from domain.steps import StepEvent, content_hash
from schemas.codec import encode_json
from tests.unit import factories as f

TEN_FIELDS = [
    "input_reference",
    "sources",
    "model_and_action",
    "policy_rule",
    "reviewer",
    "timestamps",
    "output",
    "signal",
    "rollback_link",
    "final_state",
]
EDIT = f.DRAFT.replace("40 EUR", "45 EUR") + "Best, Maria\n"
DRAFT_TO_EDIT_DIFF = (
    "--- draft\n"
    "+++ approved\n"
    "@@ -1,3 +1,4 @@\n"
    " Hi Ana,\n"
    " thanks for your interest.\n"
    "-Our plan costs 40 EUR.\n"
    "+Our plan costs 45 EUR.\n"
    "+Best, Maria\n"
)


def _receipt(*steps: StepEvent | list[StepEvent]) -> Receipt:
    return render(f.entries(*steps))


def _codes(receipt: Receipt) -> list[str]:
    return [x.code for x in receipt.findings]


def _as_recorded(run: Run, entries: list[Entry]) -> list[Entry]:
    """The same entries stamped with the run's own recording clock."""
    return [replace(e, recorded_at=r.recorded_at) for e, r in zip(entries, run.entries, strict=True)]


def _edited_run() -> list[StepEvent]:
    """Draft proposed, edited by the reviewer, the edit approved and executed."""
    return [
        f.started(at=f.at(0)),
        f.source(retrieved_at=f.at(-30), at=f.at(1)),
        f.proposed(confidence=0.7, at=f.at(2)),
        f.policy(at=f.at(3)),
        f.edited(output=EDIT, at=f.at(5)),
        f.reviewed(output=EDIT, comment="price fixed", at=f.at(6)),
        f.executed(output=EDIT, at=f.at(7)),
        f.finished("edited", at=f.at(8)),
    ]


# --- the ten fields ------------------------------------------------------------------------------


def test_complete_run_fills_all_ten_fields() -> None:
    receipt = _receipt(f.clean_run())
    fields = receipt.fields()
    assert list(fields) == TEN_FIELDS
    assert receipt.gaps() == []
    assert fields["input_reference"] == InputReference.model_validate(f.INPUT)
    assert [s.id for s in fields["sources"]] == ["pricing"]  # type: ignore[attr-defined]
    model, actions = fields["model_and_action"]  # type: ignore[misc]
    assert (model.name, [a.verb for a in actions]) == ("writer", ["send_email"])
    assert [p.rule_id for p in fields["policy_rule"]] == ["R-lead-email"]  # type: ignore[attr-defined]
    assert [r.reviewer.id for r in fields["reviewer"]] == ["maria"]  # type: ignore[attr-defined]
    assert [o.draft for o in fields["output"]] == [f.DRAFT]  # type: ignore[attr-defined]
    assert [s.confidence for s in fields["signal"]] == [0.92]  # type: ignore[attr-defined]
    assert [r.method for r in fields["rollback_link"]] == ["correct"]  # type: ignore[attr-defined]
    assert fields["final_state"] == "sent"
    assert receipt.findings == ()


def test_bare_run_names_every_field_as_a_gap() -> None:
    receipt = _receipt(f.started(input=None, agent=None, model=None))
    assert receipt.gaps() == TEN_FIELDS
    assert all(value is None for value in receipt.fields().values())
    assert (receipt.workflow, receipt.run_id, receipt.tenant) == ("lead-followup", f.RUN, "default")


def test_lone_proposal_has_output_and_timestamps_but_the_rest_are_gaps() -> None:
    receipt = _receipt(f.proposed(sources=(), rollback=None, at=f.at(2)))
    assert receipt.gaps() == [
        "input_reference",
        "sources",
        "model_and_action",
        "policy_rule",
        "reviewer",
        "signal",
        "rollback_link",
        "final_state",
    ]


def test_model_without_an_action_is_still_a_gap() -> None:
    assert "model_and_action" in _receipt(f.started()).gaps()


def test_render_needs_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one recorded step"):
        render([])


# --- output versions and diffs -------------------------------------------------------------------


def test_edited_and_approved_version_is_what_was_executed() -> None:
    step = _receipt(_edited_run()).steps[0]
    out = step.output
    assert (out.draft, out.draft_hash) == (f.DRAFT, content_hash(f.DRAFT))
    assert [(e.output, e.base_hash, e.editor.id) for e in out.edits] == [
        (EDIT, content_hash(f.DRAFT), "maria")
    ]
    assert (out.approved, out.approved_hash) == (EDIT, content_hash(EDIT))
    assert (out.executed, out.executed_hash) == (EDIT, content_hash(EDIT))
    assert out.draft_to_approved_diff == DRAFT_TO_EDIT_DIFF
    assert out.approved_to_executed_diff is None
    assert step.reviews[0].reviewed_version == "edit 1"
    assert step.reviews[0].comment == "price fixed"


def test_draft_approved_as_is_has_no_diffs() -> None:
    out = _receipt(f.clean_run()).steps[0].output
    assert out.approved == out.executed == f.DRAFT
    assert out.edits == ()
    assert (out.draft_to_approved_diff, out.approved_to_executed_diff) == (None, None)


def test_executing_an_edit_after_approving_the_draft_shows_the_diff() -> None:
    out = _receipt(f.proposed(), f.reviewed(), f.edited(output=EDIT), f.executed(output=EDIT)).steps[0].output
    assert (out.approved, out.executed) == (f.DRAFT, EDIT)
    assert out.draft_to_approved_diff is None
    expected = DRAFT_TO_EDIT_DIFF.replace("--- draft\n+++ approved\n", "--- approved\n+++ executed\n")
    assert out.approved_to_executed_diff == expected


def test_executed_version_the_record_never_captured_has_a_hash_but_no_text() -> None:
    out = _receipt(f.proposed(), f.reviewed(), f.executed(output="something else")).steps[0].output
    assert out.executed is None
    assert out.executed_hash == content_hash("something else")
    assert out.approved_to_executed_diff is None


def test_rejection_after_approval_leaves_nothing_approved() -> None:
    step = _receipt(f.proposed(), f.reviewed(), f.reviewed(decision="rejected")).steps[0]
    assert step.approval is None
    assert (step.output.approved, step.output.approved_hash) == (None, None)
    assert [r.decision for r in step.reviews] == ["approved", "rejected"]


def test_reviewed_version_labels_draft_edits_and_uncaptured() -> None:
    second = EDIT + "P.S. call me\n"
    step = _receipt(
        f.proposed(),
        f.reviewed(decision="rejected"),
        f.edited(output=EDIT),
        f.reviewed(decision="escalated", output=EDIT),
        f.edited(output=second, base=EDIT),
        f.reviewed(output=second),
        f.reviewed(reviewed_hash="sha256:" + "0" * 64),
    ).steps[0]
    assert [r.reviewed_version for r in step.reviews] == ["draft", "edit 1", "edit 2", "uncaptured version"]


# --- timestamps ----------------------------------------------------------------------------------


def test_step_and_run_timestamps() -> None:
    receipt = _receipt(_edited_run())
    assert receipt.steps[0].timestamps.model_dump() == {
        "proposed": f.at(2),
        "consented": None,
        "reviewed": f.at(6),
        "executed": f.at(7),
    }
    assert receipt.timestamps.model_dump() == {
        "started": f.at(0),
        "first_proposed": f.at(2),
        "last_reviewed": f.at(6),
        "last_executed": f.at(7),
        "finished": f.at(8),
        "last_recorded": f.at(8),
    }


def test_an_unfinished_run_reads_as_unclear_only_after_the_grace_period() -> None:
    receipt = _receipt(_edited_run()[:-1])
    quiet = timedelta(hours=1)
    assert receipt.seen_at(f.at(7) + timedelta(minutes=5), quiet) == receipt
    late = receipt.seen_at(f.at(7) + timedelta(hours=2), quiet)
    assert [x.code for x in late.findings] == [*_codes(receipt), "final_state_unclear"]
    finished = _receipt(_edited_run())
    assert finished.seen_at(f.at(8) + timedelta(days=9), quiet) == finished


def test_run_timestamps_span_several_steps() -> None:
    receipt = _receipt(
        f.proposed("a", at=f.at(5)),
        f.proposed("b", at=f.at(3)),
        f.reviewed("a", at=f.at(9)),
        f.reviewed("b", at=f.at(7)),
        f.executed("b", at=f.at(8)),
        f.executed("a", at=f.at(10)),
    )
    assert (receipt.timestamps.first_proposed, receipt.timestamps.last_reviewed) == (f.at(3), f.at(9))
    assert receipt.timestamps.last_executed == f.at(10)
    assert [s.step_id for s in receipt.steps] == ["a", "b"]


def test_step_reviewed_timestamp_is_the_last_review() -> None:
    receipt = _receipt(f.proposed(), f.reviewed(decision="rejected", at=f.at(4)), f.reviewed(at=f.at(9)))
    step = receipt.steps[0]
    assert step.timestamps.reviewed == f.at(9)


# --- final state ---------------------------------------------------------------------------------


def test_final_state_is_the_last_of_several_finals() -> None:
    receipt = _receipt(
        f.started(),
        f.finished("sent", at=f.at(1)),
        f.finished("reverted", at=f.at(2)),
        f.finished("corrected", at=f.at(3)),
    )
    assert receipt.final_state == "corrected"
    assert receipt.timestamps.finished == f.at(3)
    (finding,) = [x for x in receipt.findings if x.code == "conflicting_finals"]
    assert "finished 3 times (sent, reverted, corrected)" in finding.message


# --- impossible orders are recorded, and named ---------------------------------------------------


def test_review_for_a_never_proposed_step_is_recorded_and_found() -> None:
    review = f.reviewed("ghost")
    receipt = _receipt(f.clean_run(), review)
    ghost = next(s for s in receipt.steps if s.step_id == "ghost")
    assert ghost.action is None
    assert [r.event_id for r in ghost.reviews] == [review.event_id]
    assert [r.reviewed_version for r in ghost.reviews] == ["uncaptured version"]
    (finding,) = [x for x in receipt.findings if x.code == "unknown_step"]
    assert (finding.step_id, finding.event_ids) == ("ghost", (review.event_id,))


def test_review_before_its_proposal_is_recorded_and_found() -> None:
    review = f.reviewed(at=f.at(1))
    receipt = _receipt(f.started(), review, f.proposed(at=f.at(2)))
    step = receipt.steps[0]
    assert step.action is not None and step.action.output == f.DRAFT
    assert step.reviews[0].reviewed_version == "uncaptured version"  # nothing was known when it was recorded
    assert step.approval is not None and step.output.approved == f.DRAFT
    (finding,) = [x for x in receipt.findings if x.code == "out_of_order"]
    assert finding.event_ids == (review.event_id,)
    assert "action.reviewed was recorded before the step's proposal" in finding.message


def test_two_finals_are_both_recorded_and_found() -> None:
    first, second = f.finished("sent"), f.finished("failed")
    receipt = _receipt(f.clean_run()[:-1], first, second)
    assert receipt.event_ids[-2:] == (first.event_id, second.event_id)
    assert receipt.final_state == "failed"
    assert [x.event_ids for x in receipt.findings if x.code == "conflicting_finals"] == [
        (first.event_id, second.event_id)
    ]


def test_second_proposal_for_the_same_step_does_not_replace_the_first() -> None:
    step = _receipt(f.proposed(output="first"), f.proposed(output="second")).steps[0]
    assert step.output.draft == "first"


# --- the rest of a step's story ------------------------------------------------------------------


def test_execution_holds_failures_reversal_and_corrections_are_kept() -> None:
    correction = f.corrected(correction="price was 45 EUR")
    step = _receipt(
        f.proposed(),
        f.held(reason="no owner"),
        f.reviewed(),
        f.failed(error="SMTP 421"),
        f.executed(url="https://mail.example/1", by=f.POLICY),
        f.rollback_requested(reason="wrong price"),
        f.rollback_failed(error="mailbox gone"),
        f.reverted(method="correct", reverse_ref="msg-124"),
        correction,
    ).steps[0]
    assert step.held == ("no owner",)
    assert step.failures == ("SMTP 421",)
    assert step.execution is not None
    assert (step.execution.state, step.execution.external_ref, step.execution.url) == (
        "sent",
        "msg-123",
        "https://mail.example/1",
    )
    assert step.execution.executed_by == f.POLICY
    assert step.reversal is not None
    assert (
        step.reversal.requested_reason,
        step.reversal.failed_error,
        step.reversal.reverted_method,
        step.reversal.reverse_ref,
    ) == ("wrong price", "mailbox gone", "correct", "msg-124")
    assert [(c.correction, c.event_id) for c in step.corrections] == [
        ("price was 45 EUR", correction.event_id)
    ]
    assert step.action is not None  # the original stays visible


# --- integrity -----------------------------------------------------------------------------------


def test_integrity_verifies_an_intact_record() -> None:
    recorded = f.entries(f.clean_run())
    integrity = render(recorded).integrity
    assert integrity.verified is True
    assert (integrity.head, integrity.events) == (recorded[-1].digest.hex(), 7)
    assert (integrity.first_bad_version, integrity.first_bad_event_id, integrity.reason) == (None, None, None)


def test_integrity_names_the_tampered_entry() -> None:
    recorded = f.entries(f.clean_run())
    recorded[3] = replace(recorded[3], wire=recorded[3].wire.replace(b'"review"', b'"auto"'))
    integrity = render(recorded).integrity
    assert integrity.verified is False
    assert (integrity.first_bad_version, integrity.first_bad_event_id) == (4, recorded[3].step.event_id)
    assert integrity.reason is not None and integrity.reason.startswith("digest mismatch")


# --- time travel and the Run aggregate -----------------------------------------------------------


def _run(steps: list[StepEvent]) -> Run:
    run = Run.open(steps[0], encode_json(steps[0]))
    for step in steps[1:]:
        run.record(step, encode_json(step))
    return run


def test_receipt_of_a_prefix_is_the_receipt_as_it_stood_then() -> None:
    steps = _edited_run()
    recorded = f.entries(steps)
    run = Run.open(steps[0], encode_json(steps[0]))
    assert run.receipt() == render(_as_recorded(run, recorded[:1]))
    for k, step in enumerate(steps[1:], start=2):
        assert run.record(step, encode_json(step)) is True
        assert run.receipt() == render(_as_recorded(run, recorded[:k]))


def test_prefix_at_review_time_shows_the_approval_but_no_execution() -> None:
    receipt = render(f.entries(_edited_run())[:6])
    step = receipt.steps[0]
    assert step.output.approved == EDIT
    assert step.execution is None
    assert receipt.final_state is None
    assert "final_state_unclear" not in _codes(receipt)  # in progress, not yet a gap
    assert "executed_without_approval" not in _codes(receipt)


def test_run_receipt_matches_render_of_the_same_entries() -> None:
    steps = f.clean_run()
    run = _run(steps)
    assert run.receipt() == render(_as_recorded(run, f.entries(steps)))
    assert [(e.version, e.wire, e.digest) for e in run.entries] == [
        (e.version, e.wire, e.digest) for e in f.entries(steps)
    ]
    assert run.id == run_uuid("default", f.RUN)


def test_run_ignores_a_duplicate_event_id() -> None:
    steps = f.clean_run()
    run = _run(steps)
    head, version = run.head, run.version
    assert run.record(steps[4], encode_json(steps[4])) is False
    same_id = f.reviewed(decision="rejected", event_id=steps[4].event_id)
    assert run.record(same_id, encode_json(same_id)) is False
    assert (run.head, run.version, len(run.entries)) == (head, version, 7)
    assert run.receipt() == render(_as_recorded(run, f.entries(steps)))


def test_run_rebuilt_from_its_events_has_the_same_receipt() -> None:
    run = _run(f.clean_run())
    rebuilt = None
    for event in run.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Run)
    assert rebuilt.receipt() == run.receipt()
    assert rebuilt.links() == run.links()


def test_runs_are_keyed_by_tenant_and_run_id() -> None:
    assert run_uuid("acme", "r1") == run_uuid("acme", "r1")
    assert len({run_uuid("acme", "r1"), run_uuid("other", "r1"), run_uuid("acme", "r2")}) == 3


def test_each_entry_carries_its_own_events_recorded_time() -> None:
    run = _run(f.clean_run())
    events = run.collect_events()
    assert len({e.timestamp for e in events}) == len(events)  # distinct, so the check can fail
    assert [e.recorded_at for e in run.entries] == [e.timestamp for e in events]
