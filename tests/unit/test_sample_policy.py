"""The sample policy routes the demo's runs as a person would, and `decide` is what ingest records.

The demo runs are published to a fake producer of our own and decoded back, so the
proposals are exactly the ones `receipts demo` sends."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest

from api.demo import publish_demo
from domain.contracts import check_contract
from domain.policy import sample_policy
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.routing import Router, decide
from domain.steps import SERVICE, ActionEdited, ActionProposed, PolicyDecided, StepEvent
from infra.publisher import Publisher
from schemas import Codec
from tests.fakes import FakeProducer
from tests.unit import factories as f

POLICY = sample_policy()
ROUTER = Router(POLICY)


def _demo_runs() -> dict[str, list[StepEvent]]:
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer, encoding="json"), now=datetime(2026, 11, 30, 12, tzinfo=UTC))
    codec, runs = Codec(), defaultdict(list)
    for _, _, value in producer.sent:
        step = codec.decode(value)
        runs[step.run_id.removeprefix("demo-")].append(step)
    return dict(runs)


RUNS = _demo_runs()


def ingested(steps: list[StepEvent]) -> list[StepEvent]:
    """The run as ingest would record it with the sample policy: each step, then its decision."""
    recorded: list[StepEvent] = []
    for step in steps:
        decision = decide(ROUTER, recorded, step)
        recorded += [step, decision] if decision else [step]
    return recorded


def _service_decisions(steps: list[StepEvent]) -> list[PolicyDecided]:
    return [s for s in ingested(steps) if isinstance(s, PolicyDecided) and s.actor == SERVICE]


@pytest.mark.parametrize(
    ("run", "rule", "lane", "role"),
    [
        ("lead-followup", "external-email-review", "review", "sales-lead"),
        ("support-triage", "cancellation-escalates", "escalate", "support-lead"),
        ("pricing-update", "public-website-review", "review", "web-approver"),
        ("crm-note", "crm-commitment-review", "review", "account-owner"),
        ("boring-failures", "lead-needs-context", "draft_only", None),
    ],
)
def test_each_demo_proposal_is_routed_by_the_sample_as_a_person_would(
    run: str, rule: str, lane: str, role: str | None
) -> None:
    proposal = next(s for s in RUNS[run] if isinstance(s, ActionProposed))
    first = _service_decisions(RUNS[run])[0].data
    assert (first.rule_id, first.lane, first.required_role) == (rule, lane, role)
    assert first.policy_version == POLICY.version and first.source == "service"
    assert first.decision_id == f"{_service_decisions(RUNS[run])[0].event_id}"
    assert proposal.step_id == _service_decisions(RUNS[run])[0].step_id


def test_every_matching_rule_is_recorded_not_only_the_first() -> None:
    lead = _service_decisions(RUNS["lead-followup"])[0].data
    # Its rollback method is "none" (a correction email is a runbook, not an undo).
    assert lead.matched_rules == ("external-email-review", "pricing-claims-review", "no-recovery-draft-only")
    pricing = _service_decisions(RUNS["pricing-update"])[0].data
    assert pricing.matched_rules == ("public-website-review", "pricing-claims-review")


def test_the_boring_failures_lead_is_missing_its_form_and_the_pricing_page() -> None:
    decision = _service_decisions(RUNS["boring-failures"])[0].data
    assert decision.missing_fields == ("source:hubspot/form_submission", "source:cms/page/pricing")


def test_edits_are_routed_again_on_the_text_the_reviewer_wrote() -> None:
    decisions = _service_decisions(RUNS["crm-note"])
    edits = [s for s in RUNS["crm-note"] if isinstance(s, ActionEdited)]
    assert len(decisions) == 1 + len(edits) == 2
    # "Customer said ... may be ready next week (no commitment)." states no commitment any more.
    assert (decisions[1].data.rule_id, decisions[1].data.lane) == ("default-review", "review")
    assert decisions[1].data.required_role == "account-owner"  # the contract's reviewer role
    assert decisions[1].event_id != decisions[0].event_id


def test_deciding_again_on_a_redelivered_step_makes_the_same_event() -> None:
    steps = RUNS["lead-followup"]
    first, again = ingested(steps), ingested(steps)
    assert [s.event_id for s in first] == [s.event_id for s in again]


def test_decide_records_nothing_for_other_steps_or_an_edit_of_an_unknown_step() -> None:
    assert decide(ROUTER, [], f.started()) is None
    assert decide(ROUTER, [], f.edited("never-proposed")) is None


def _receipt(run: str) -> Receipt:
    steps = ingested(RUNS[run])
    workflow = steps[0].data.workflow  # type: ignore[attr-defined]
    return render(f.entries(steps), POLICY.contract_for(workflow))


@pytest.mark.parametrize("run", ["lead-followup", "support-triage", "pricing-update", "crm-note"])
def test_the_well_behaved_demo_runs_stay_inside_their_contracts_and_lanes(run: str) -> None:
    steps = ingested(RUNS[run])
    workflow = steps[0].data.workflow  # type: ignore[attr-defined]
    contract = POLICY.contract_for(workflow)
    assert contract is not None
    assert check_contract(steps, contract) == []
    lane_codes = {
        "policy_disagreement",
        "executed_without_approval",
        "executed_in_draft_only",
        "blocked_action_executed",
        "missing_account_context",
    }
    assert lane_codes.isdisjoint(x.code for x in _receipt(run).findings)


def test_the_boring_failures_run_shows_its_lane_and_contract_gaps() -> None:
    codes = [x.code for x in _receipt("boring-failures").findings]
    assert {"executed_in_draft_only", "missing_account_context", "required_signal_missing"} <= set(codes)
    assert "executed_without_approval" not in codes  # it was never the agent's to send: draft only
