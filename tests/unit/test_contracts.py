"""Lane contracts against a run: each breach fires on a run built for it, names its events, and is
silent on a run inside the contract (and when the contract leaves that question open)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from domain.contracts import (
    CONTRACT_CHECKS,
    check_contract,
    decided_by,
    run_contract,
    service_policy_versions,
)
from domain.evidence import Finding
from domain.policy import Contract
from domain.receipt import render, render_checked
from domain.steps import SERVICE, StepEvent
from tests.unit import factories as f

CONTRACT = Contract.model_validate(
    {
        "inputs": [{"system": "hubspot", "kind": "form"}],
        "sources": [{"system": "cms"}],
        "actions": [{"verb": "send_email", "system": "gmail", "kind": "contact"}],
        "reviewer_role": "sales-lead",
        "signals": ["confidence", "reason_code"],
        "recovery": ["send_email"],
        "final_states": ["sent", "held"],
    }
)
OPEN = Contract()


def _inside() -> list[StepEvent]:
    return (
        f.clean_run()
    )  # hubspot form, a cms source, send_email to gmail/contact, both signals, a rollback, sent


def _with(index: int, step: StepEvent) -> list[StepEvent]:
    steps = _inside()
    steps[index] = step
    return steps


def _found(
    check: Callable[[Sequence[StepEvent], Contract], Iterator[Finding]], steps: list[StepEvent]
) -> list[Finding]:
    return list(check(steps, CONTRACT))


def test_the_checks_are_the_ones_tested_here() -> None:
    assert [c.__name__ for c in CONTRACT_CHECKS] == [
        "input_outside_contract",
        "source_outside_contract",
        "action_outside_contract",
        "required_signal_missing",
        "recovery_path_missing",
        "final_state_outside_contract",
    ]


def test_a_run_inside_its_contract_has_no_finding() -> None:
    assert check_contract(_inside(), CONTRACT) == []


def test_an_open_contract_checks_nothing_but_recovery_it_does_not_ask_for() -> None:
    breaking = [
        f.started(input={"system": "x", "kind": "y", "id": "1"}),
        f.source(),
        f.proposed(verb="delete", rollback=None),
        f.finished("abandoned"),
    ]
    assert check_contract(breaking, OPEN) == []


def test_input_outside_contract() -> None:
    start = f.started(input={"system": "zendesk", "kind": "ticket", "id": "T-1"})
    (finding,) = _found(CONTRACT_CHECKS[0], _with(0, start))
    assert (finding.code, finding.event_ids) == ("input_outside_contract", (start.event_id,))
    assert finding.message == "the run started from a zendesk/ticket: its contract does not list one"


def test_source_outside_contract_names_the_source_event() -> None:
    extra = f.source("pricing", at=f.at(1))
    outside = extra.model_copy(
        update={
            "data": extra.data.model_copy(
                update={"source": extra.data.source.model_copy(update={"system": "gdrive"})}
            )
        }
    )  # type: ignore[attr-defined]
    (finding,) = _found(CONTRACT_CHECKS[1], _with(1, outside))
    assert (finding.code, finding.severity, finding.event_ids) == (
        "source_outside_contract",
        "warning",
        (outside.event_id,),
    )
    assert finding.message == "relied on gdrive/page/pricing: its contract lets it rely on no gdrive/page"


def test_action_outside_contract_is_critical_once_executed_and_names_both_events() -> None:
    steps = _with(2, proposal := f.proposed(verb="send_sms", confidence=0.9, reason_code="r", at=f.at(2)))
    (finding,) = _found(CONTRACT_CHECKS[2], steps)
    assert (finding.code, finding.severity, finding.step_id) == (
        "action_outside_contract",
        "critical",
        f.STEP,
    )
    assert finding.event_ids == (proposal.event_id, steps[5].event_id)
    assert (
        finding.message
        == "'send_sms' on a gmail/contact is not an action its contract allows (and it was executed)"
    )
    (unexecuted,) = _found(CONTRACT_CHECKS[2], steps[:5])
    assert (unexecuted.severity, unexecuted.event_ids) == ("warning", (proposal.event_id,))


def test_action_on_a_target_kind_outside_the_contract() -> None:
    target = {"system": "gmail", "kind": "mailing_list", "id": "all"}
    steps = _with(2, f.proposed(target=target, confidence=0.9, reason_code="r", at=f.at(2)))
    assert [x.code for x in _found(CONTRACT_CHECKS[2], steps)] == ["action_outside_contract"]


def test_required_signal_missing_names_what_is_missing() -> None:
    steps = _with(2, proposal := f.proposed(confidence=None, reason_code=None, at=f.at(2)))
    (finding,) = _found(CONTRACT_CHECKS[3], steps)
    assert (finding.code, finding.event_ids) == ("required_signal_missing", (proposal.event_id,))
    assert (
        finding.message == "the proposal does not report confidence, reason_code, which its contract requires"
    )


@pytest.mark.parametrize("rollback", [None, {"method": "none"}])
def test_recovery_path_missing(rollback: object) -> None:
    steps = _with(2, proposal := f.proposed(rollback=rollback, confidence=0.9, reason_code="r", at=f.at(2)))
    (finding,) = _found(CONTRACT_CHECKS[4], steps)
    assert (finding.code, finding.event_ids) == ("recovery_path_missing", (proposal.event_id,))


def test_final_state_outside_contract_judges_the_last_final() -> None:
    steps = [*_inside(), last := f.finished("abandoned", at=f.at(20))]
    (finding,) = _found(CONTRACT_CHECKS[5], steps)
    assert (finding.code, finding.event_ids) == ("final_state_outside_contract", (last.event_id,))
    assert (
        "stopped in 'abandoned', not one of the final states its contract expects (sent, held)"
        in finding.message
    )
    assert _found(CONTRACT_CHECKS[5], [*_inside(), f.finished("held", at=f.at(20))]) == []


def test_render_with_the_contract_adds_its_findings_and_without_it_does_not() -> None:
    steps = _with(2, f.proposed(verb="send_sms", confidence=0.9, reason_code="r", at=f.at(2)))
    assert [x.code for x in render(f.entries(steps), CONTRACT).findings] == ["action_outside_contract"]
    assert render(f.entries(steps)).findings == ()


def test_service_policy_versions_are_the_ones_the_service_decided_by() -> None:
    service = f.policy(source="service", by=SERVICE, policy_version="sha256:a", decision_id="d")
    other = f.policy("other", source="service", by=SERVICE, policy_version="sha256:b", decision_id="e")
    steps = [*f.clean_run(), service, f.proposed("other"), other]
    assert service_policy_versions(render(f.entries(steps))) == ("sha256:a", "sha256:b")
    assert service_policy_versions(render(f.entries(f.clean_run()))) == ()


def _lookups() -> tuple[list[tuple[str, str]], Callable[[str, str], Contract | None]]:
    """A contract lookup that knows version sha256:b's lead-followup contract, and the calls it got."""
    asked: list[tuple[str, str]] = []

    def lookup(version: str, workflow: str) -> Contract | None:
        asked.append((version, workflow))
        return CONTRACT if (version, workflow) == ("sha256:b", "lead-followup") else None

    return asked, lookup


def _decided(*versions: str) -> list[StepEvent]:
    return [
        f.policy(source="service", by=SERVICE, policy_version=v, decision_id=f"d-{v}", at=f.at(3))
        for v in versions
    ]


def test_the_contract_is_the_workflows_in_the_version_the_service_last_decided_by() -> None:
    asked, lookup = _lookups()
    steps = [*f.clean_run()[:-1], *_decided("sha256:a", "sha256:b")]
    assert decided_by(steps) == "sha256:b"
    assert run_contract(steps, lookup) is CONTRACT
    assert asked == [("sha256:b", "lead-followup")]


def test_no_service_decision_no_workflow_or_no_contract_means_nothing_to_check() -> None:
    asked, lookup = _lookups()
    # clean_run's decision is the platform's: it names no policy the service holds.
    assert run_contract(f.clean_run(), lookup) is None
    platform_only = [*f.clean_run(), f.policy(policy_version="sha256:b", source="service")]
    assert run_contract(platform_only, lookup) is None  # claims to be the service's; is not
    assert run_contract([*f.clean_run(), *_decided("sha256:a")], lookup) is None  # no such contract
    assert run_contract(f.clean_run()[1:] + _decided("sha256:b"), lookup) is None  # no run.started
    assert asked == [("sha256:a", "lead-followup")]


def test_render_checked_adds_the_breaches_of_the_looked_up_contract() -> None:
    _, lookup = _lookups()
    breaking = _with(2, f.proposed(verb="send_sms", confidence=0.9, reason_code="r", at=f.at(2)))
    decided = f.entries([*breaking[:-1], *_decided("sha256:b"), breaking[-1]])
    assert [x.code for x in render_checked(decided, lookup).findings] == ["action_outside_contract"]
    assert render_checked(decided, None).findings == ()
    assert render_checked(f.entries(breaking), lookup).findings == ()  # the service never decided it
