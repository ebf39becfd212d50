"""Lane contracts on the real components: runs published to Kafka, routed at ingest by a policy
whose lead-followup contract asks every question, projected, then read over HTTP. A run breaching
one contract field shows exactly that finding, naming its events, in its receipt and in the
findings list; a compliant run, a run no service decision covers and a workflow without a
contract show none."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from domain.steps import StepEvent
from infra.settings import Settings
from infra.store import RunStore
from tests.integration.helpers import client_for, ingest_for, poll_until, publish_steps, running_store
from tests.integration.routing import routed_by
from tests.unit import factories as f

pytestmark = pytest.mark.integration

POLICY = """
[contracts.lead-followup]
inputs = [{ system = "hubspot", kind = "form_submission" }]
sources = [{ system = "cms", kind = "page" }]
actions = [{ verb = "send_email", system = "hubspot", kind = "contact" }]
reviewer_role = "sales-lead"
signals = ["confidence", "reason_code"]
recovery = ["send_email"]
final_states = ["sent", "held"]

[default]
lane = "review"
role = "sales-lead"
reason = "a person reviews every step"
"""
FORM = {"system": "hubspot", "kind": "form_submission", "id": "f-1"}
CONTACT = {"system": "hubspot", "kind": "contact", "id": "c-1"}
LONG = timedelta(days=36500)  # no run is overdue: only what the record says counts


def _run(run_id: str, breach: str | None = None, workflow: str = "lead-followup") -> list[StepEvent]:
    """A run inside the contract, or breaching one field of it (`breach`: the finding's code)."""
    step = f"{run_id}/s1"
    where: dict[str, Any] = {"run_id": run_id}
    signal = {"confidence": 0.9, "reason_code": "lead.question"}
    if breach == "required_signal_missing":
        signal = {"confidence": None, "reason_code": "lead.question"}
    steps = [
        f.started(
            workflow=workflow,
            input={**FORM, "system": "zendesk", "kind": "ticket"}
            if breach == "input_outside_contract"
            else FORM,
            at=f.at(0),
            **where,
        ),
        f.source("pricing", retrieved_at=f.at(-60), at=f.at(1), **where),
        f.proposed(
            step,
            target={**CONTACT, "system": "gmail"} if breach == "action_outside_contract" else CONTACT,
            rollback={"method": "none"} if breach == "recovery_path_missing" else f.ROLLBACK,
            at=f.at(2),
            **signal,
            **where,
        ),
        approval := f.reviewed(step, at=f.at(10), **where),
        f.executed(step, authorization=approval.event_id, at=f.at(11), **where),
        f.finished("published" if breach == "final_state_outside_contract" else "sent", at=f.at(12), **where),
    ]
    if breach == "source_outside_contract":
        steps.insert(2, f.source("sheet-1", system="gsheets", kind="sheet", at=f.at(1), **where))
    return steps


BREACHES = (
    "input_outside_contract",
    "source_outside_contract",
    "action_outside_contract",
    "required_signal_missing",
    "recovery_path_missing",
    "final_state_outside_contract",
)
CONTRACT_CODES = frozenset(BREACHES)


def _undecided(run_id: str) -> list[StepEvent]:
    """Outside the contract (a ticket, a final state it does not list) but with no proposal:
    the service never decided it, so there is no policy version to find a contract in."""
    where: dict[str, Any] = {"run_id": run_id}
    ticket = {**FORM, "system": "zendesk", "kind": "ticket"}
    return [f.started(input=ticket, at=f.at(0), **where), f.finished("published", at=f.at(1), **where)]


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, RunStore]]:
    routed = routed_by(settings, tmp_path, POLICY)
    runs = [
        *(_run(f"breach-{code}", code) for code in BREACHES),
        _run("compliant"),
        # A breach of the lead-followup contract, in a workflow the policy has no contract for.
        _run("no-contract", "action_outside_contract", workflow="billing"),
        _undecided("undecided"),
    ]
    steps = [s for run in runs for s in run]
    publish_steps(settings, steps)
    with running_store(settings) as store:
        with ingest_for(routed, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= len(steps))
        build_projections(settings, store).catch_up()
        with client_for(settings) as http:
            yield http, store


def _contract_findings(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in findings if x["code"] in CONTRACT_CODES]


def test_each_breach_is_a_finding_in_the_receipt_and_the_findings_list(
    client: tuple[TestClient, RunStore],
) -> None:
    http, store = client
    for code in BREACHES:
        run_id = f"breach-{code}"
        receipt = http.get(f"/runs/{run_id}/receipt").json()
        (finding,) = _contract_findings(receipt["findings"])
        assert finding["code"] == code
        # The events that show it are events of this run's receipt.
        assert finding["event_ids"] and set(finding["event_ids"]) <= set(receipt["event_ids"])
        listed = http.get("/findings", params={"code": code}).json()["findings"]
        assert [(x["run_id"], x["finding"]["event_ids"]) for x in listed] == [(run_id, finding["event_ids"])]
        # `receipts show` and receipts as of a time fold from the store: the same finding.
        folded = store.receipt("default", run_id, LONG)
        assert [x.code for x in folded.findings if x.code in CONTRACT_CODES] == [code]
        # The view agrees with a fresh fold of the events, contract included.
        assert http.get(f"/runs/{run_id}/verify").json()["view"] == "same"
    executed = _contract_findings(http.get("/runs/breach-action_outside_contract/receipt").json()["findings"])
    assert executed[0]["severity"] == "critical"  # the action outside the contract was executed


def test_no_contract_finding_without_a_breach_a_decision_or_a_contract(
    client: tuple[TestClient, RunStore],
) -> None:
    http, _ = client
    for run_id in ("compliant", "no-contract", "undecided"):
        receipt = http.get(f"/runs/{run_id}/receipt").json()
        assert _contract_findings(receipt["findings"]) == [], run_id
    assert http.get("/runs/compliant/receipt").json()["findings"] == []
    listed = http.get("/findings", params={"limit": 500}).json()["findings"]
    assert {x["run_id"] for x in listed if x["finding"]["code"] in CONTRACT_CODES} == {
        f"breach-{code}" for code in BREACHES
    }
    assert "compliant" not in {x["run_id"] for x in listed}
