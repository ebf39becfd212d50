"""The dry run of a candidate policy: what it compares, and what it counts."""

from __future__ import annotations

from domain.policy import load_policy
from domain.routing import Router
from domain.steps import SERVICE, StepEvent
from domain.trial import trial
from tests.unit import factories as f

CANDIDATE = Router(
    load_policy(
        '[[rules]]\nid = "prices"\nlane = "escalate"\nreason = "prices"\n'
        'when = { words = ["price*"], words_in = ["output"] }\n'
        '[default]\nid = "fallback"\nlane = "review"\nreason = "default"\n'
    )
)


def test_the_candidate_judges_the_last_version_of_a_step() -> None:
    events = [
        f.started(),
        f.proposed(output="Hello"),
        f.policy(lane="review"),
        f.edited(output="Our price is 40 EUR", base="Hello"),
    ]
    result = trial(CANDIDATE, events)
    assert (result.proposed, result.compared, result.changed) == (1, 1, 1)
    assert result.transitions == (("review", "escalate", 1),)
    (change,) = result.examples
    assert (change.step_id, change.rule_id, change.recorded_by, change.reasons) == (
        f.STEP,
        "prices",
        "platform",
        ("prices",),
    )


def test_the_services_recorded_decision_is_compared_before_the_platforms() -> None:
    events = [
        f.started(),
        f.proposed(output="Hello"),
        f.policy(lane="escalate"),
        f.policy(lane="review", source="service", by=SERVICE, decision_id="d-1"),
    ]
    result = trial(CANDIDATE, events)
    assert (result.changed, result.unchanged) == (0, 1)


def test_runs_are_kept_apart_by_tenant_and_run_id_and_undecided_steps_counted() -> None:
    events = [
        f.started(run_id="a"),
        f.proposed(run_id="a", output="a price"),
        f.policy(run_id="a", lane="review"),
        f.started(run_id="a", tenant="other"),
        f.proposed(run_id="a", tenant="other", output="no words"),
        f.proposed("second", run_id="a", tenant="other", output="a price"),
        f.policy("second", run_id="a", tenant="other", lane="escalate"),
    ]
    result = trial(CANDIDATE, events)
    assert (result.runs, result.proposed, result.compared, result.changed, result.undecided) == (
        2,
        3,
        2,
        1,
        1,
    )
    assert [(c.tenant, c.run_id) for c in result.examples] == [("default", "a")]


def test_an_edit_of_a_step_never_proposed_and_a_decision_alone_count_nothing() -> None:
    result = trial(CANDIDATE, [f.edited("ghost"), f.policy("ghost")])
    assert (result.proposed, result.compared, result.changed, result.undecided) == (0, 0, 0, 0)


def test_since_counts_only_steps_proposed_or_edited_since_then_with_their_whole_context() -> None:
    def run(run_id: str, minutes: float, edit_at: float | None = None) -> list[StepEvent]:
        where = {"run_id": run_id, "step_id": f"{run_id}/s"}
        steps = [
            f.started(run_id, at=f.at(minutes - 1)),
            f.proposed(output="Our price is 40 EUR", at=f.at(minutes), **where),
            f.policy(lane="review", at=f.at(minutes), **where),
        ]
        if edit_at is not None:
            steps.append(f.edited(output="Hello", base="Our price is 40 EUR", at=f.at(edit_at), **where))
        return steps

    events = [*run("old", 0), *run("new", 60), *run("old-edited-late", 0, edit_at=90)]
    everything = trial(CANDIDATE, events)
    assert (everything.runs, everything.proposed, everything.changed) == (3, 3, 2)
    recent = trial(CANDIDATE, events, since=f.at(30))
    # "old" is left out; the late edit brings its step in, judged on its last version (no price).
    assert (recent.runs, recent.proposed, recent.compared, recent.changed) == (2, 2, 2, 1)
    assert [c.run_id for c in recent.examples] == ["new"] and recent.since == f.at(30)
