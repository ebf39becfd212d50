"""Findings exact on imported history: consent in place of approval where a lane's contract
accepts it, parts of a source, formats without approvals, and one finding per repeated gap."""

from __future__ import annotations

import pytest

from domain.evidence import Finding
from domain.policy import Contract, PolicyError, load_policy
from domain.receipt import render
from domain.steps import StepEvent
from tests.unit import factories as f

ACCEPTS = Contract(accepts_consent=True)
IMPORTED = {"format": "openai-chat", "approvals_recorded": False}


def _findings(*steps: StepEvent, contract: Contract | None = None) -> list[Finding]:
    return list(render(f.entries(*steps), contract).findings)


def _found(code: str, *steps: StepEvent, contract: Contract | None = None) -> list[Finding]:
    return [x for x in _findings(*steps, contract=contract) if x.code == code]


def _write(step_id: str, minute: int, *, consent_at: int | None, executed: bool = True) -> list[StepEvent]:
    """A write in a review lane, with the customer's consent at `consent_at` (None: no consent)."""
    said = [] if consent_at is None else [f.consent(step_id, at=f.at(consent_at), event_id=f"c-{step_id}")]
    outcome = f.executed(step_id, at=f.at(minute + 2)) if executed else f.failed(step_id, at=f.at(minute + 2))
    return [
        f.proposed(step_id, at=f.at(minute)),
        f.policy(step_id, "review", at=f.at(minute + 1)),
        *said,
        outcome,
    ]


# --- consent in place of a reviewer's approval -----------------------------------------------------


def test_on_a_lane_that_accepts_consent_a_consented_execution_needs_no_approval() -> None:
    run = [f.started(), *_write("s-1", 2, consent_at=1)]
    assert _found("executed_without_approval", *run, contract=ACCEPTS) == []


def test_on_a_lane_that_does_not_accept_consent_the_finding_stays_and_names_the_consent() -> None:
    run = [f.started(), *_write("s-1", 2, consent_at=1)]
    for contract in (None, Contract()):
        (finding,) = _found("executed_without_approval", *run, contract=contract)
        assert finding.event_ids == (run[-1].event_id, "c-s-1")
        assert 'the customer consented ("yes, go ahead" at 2025-03-03T09:01:00+00:00)' in finding.message
        assert "does not accept consent" in finding.message


def test_a_consent_given_after_the_execution_does_not_cover_it() -> None:
    run = [f.started(), *_write("s-1", 2, consent_at=9)]
    (finding,) = _found("executed_without_approval", *run, contract=ACCEPTS)
    assert finding.event_ids == (run[-1].event_id,)  # the execution only: the late consent covers nothing


def test_an_execution_may_name_the_consent_it_relied_on_where_consent_is_accepted() -> None:
    said = f.consent(at=f.at(1), event_id="c-1")
    run = [
        f.started(),
        said,
        f.proposed(at=f.at(2)),
        f.policy(at=f.at(3)),
        f.executed(authorization="c-1", at=f.at(4)),
    ]
    assert [x.code for x in _findings(*run, contract=ACCEPTS) if x.code.startswith("authorization")] == []
    (mismatch,) = _found("authorization_mismatch", *run, contract=Contract())
    assert "does not accept for approval" in mismatch.message and mismatch.event_ids == (
        "c-1",
        run[-1].event_id,
    )


def test_a_failed_write_covered_by_an_accepted_consent_is_not_an_attempt_without_approval() -> None:
    run = [f.started(), *_write("s-1", 2, consent_at=1, executed=False)]
    assert _found("attempted_without_approval", *run, contract=ACCEPTS) == []
    (attempt,) = _found("attempted_without_approval", *run)
    assert attempt.event_ids == (run[-1].event_id,)


def test_a_failed_write_with_no_rule_and_no_approval_is_an_attempt_without_approval() -> None:
    failure = f.failed(at=f.at(3))
    (attempt,) = _found("attempted_without_approval", f.started(), f.proposed(at=f.at(2)), failure)
    assert (attempt.message, attempt.event_ids) == (
        "attempted with no recorded approval (no policy rule), and it failed",
        (failure.event_id,),
    )


# --- ids that are part of a source the run read ----------------------------------------------------


def test_an_id_contained_in_a_source_is_not_unknown_by_id_or_by_system_kind_and_id() -> None:
    user = f.source(
        "user-42",
        system="airline",
        kind="user",
        contains=[{"system": "airline", "kind": "payment_method", "id": "credit_card_7"}],
    )
    for named in ("credit_card_7", "airline/payment_method/credit_card_7", "airline/user/user-42"):
        assert _found("unknown_source", f.started(), user, f.proposed(sources=[named])) == [], named
    (unknown,) = _found("unknown_source", f.started(), user, f.proposed(sources=["gift_card_9"]))
    assert "gift_card_9" in unknown.message


# --- formats that carry no approvals ---------------------------------------------------------------


def test_an_imported_run_without_recorded_approvals_has_one_info_finding_naming_every_step() -> None:
    writes = [_write(f"s-{n}", 10 * n, consent_at=None, executed=n != 3) for n in (1, 2, 3)]
    run = [f.started(origin=IMPORTED), *(s for w in writes for s in w)]
    findings = _findings(*run)
    codes = [x.code for x in findings]
    assert "executed_without_approval" not in codes and "attempted_without_approval" not in codes
    (summary,) = [x for x in findings if x.code == "approvals_not_recorded"]
    assert (summary.severity, summary.count, summary.step_ids) == ("info", 3, ("s-1", "s-2", "s-3"))
    assert summary.event_ids == tuple(w[-1].event_id for w in writes)
    assert "imported from openai-chat, which does not record approvals: 3 step(s)" in summary.message


def test_a_run_whose_format_records_approvals_keeps_its_violations() -> None:
    run = [f.started(origin={**IMPORTED, "approvals_recorded": True}), *_write("s-1", 2, consent_at=None)]
    assert [x.code for x in _findings(*run) if "approval" in x.code] == ["executed_without_approval"]


# --- one finding per gap, with a count ------------------------------------------------------------


def test_the_same_gap_on_many_steps_is_one_finding_with_a_count_and_every_evidence_event() -> None:
    writes = [_write(f"s-{n}", 10 * n, consent_at=None) for n in (1, 2, 3, 4)]
    run = [f.started(), *(s for w in writes for s in w)]
    (finding,) = _found("executed_without_approval", *run)
    assert (finding.count, finding.step_id, finding.step_ids) == (4, None, ("s-1", "s-2", "s-3", "s-4"))
    assert finding.event_ids == tuple(w[-1].event_id for w in writes)
    assert finding.message.startswith("4 times (on 4 steps); first: executed with no recorded approval")
    # Every finding names its evidence; a gap found once keeps its step.
    findings = _findings(*run)
    assert all(x.event_ids for x in findings)
    assert len({(x.code, x.severity) for x in findings}) == len(findings)
    (started,) = [x for x in _findings(f.started(), *writes[0]) if x.code == "executed_without_approval"]
    assert (started.count, started.step_id, started.step_ids) == (1, "s-1", ("s-1",))


def test_a_policy_file_says_which_lane_contracts_accept_consent() -> None:
    policy = load_policy(
        "[contracts.order-support]\naccepts_consent = true\n\n[contracts.crm-notes]\n\n"
        '[default]\nlane = "review"\nreason = "a person decides"\n'
    )
    assert [(w, c.accepts_consent) for w, c in policy.contracts.items()] == [
        ("order-support", True),
        ("crm-notes", False),
    ]
    with pytest.raises(PolicyError, match="accepts_consent"):
        load_policy(
            '[contracts.x]\naccepts_consent = "yes please"\n[default]\nlane = "review"\nreason = "r"\n'
        )


@pytest.mark.parametrize(
    "step",
    [
        f.proposed(sources=(), verb="transfer_to_human_agents"),
        f.proposed(sources=(), flags=("handoff",)),
        f.proposed(sources=(), by={"kind": "human", "id": "cust-5", "role": "customer"}),
    ],
    ids=["hand-off verb", "hand-off flag", "the customer's own action"],
)
def test_a_hand_off_and_a_person_s_own_action_owe_no_source_evidence(step: StepEvent) -> None:
    findings = _findings(f.started(), f.source(), step)
    assert "no_source_evidence" not in {x.code for x in findings}


def test_the_agent_s_own_step_without_sources_still_owes_them() -> None:
    findings = _findings(f.started(), f.source(), f.proposed(sources=()))
    assert [x.code for x in findings if x.code == "no_source_evidence"] == ["no_source_evidence"]
