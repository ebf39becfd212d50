"""Imported history on the real components, through the wire (Avro v4 on Kafka, ingest routing
by a policy, projections, HTTP and the CLI): a customer's consent kept with its words and real
time and accepted in place of an approval only where the lane contract says so; ids inside a
read source known; a format without approvals one info finding with a count; the readiness
report's figures exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from api.cli import main
from domain.steps import StepEvent
from infra.settings import Settings
from schemas import Codec
from tests.integration.helpers import (
    cli_env,
    client_for,
    ingest_for,
    poll_until,
    publish_steps,
    running_store,
)
from tests.integration.routing import CONSENT_POLICY, routed_by
from tests.unit import factories as f

pytestmark = pytest.mark.integration

USER = {"system": "airline", "kind": "user", "id": "mia-42"}
CARD = {"system": "airline", "kind": "payment_method", "id": "credit_card_7"}
IMPORTED = {"format": "openai-chat", "approvals_recorded": False}


def _consented(run_id: str, workflow: str) -> list[StepEvent]:
    """The agent read the user (its card inside), proposed a booking paid with the card, the
    customer's "yes" (said at minute 1) arrives after the proposal, then the booking."""
    where: dict[str, Any] = {"run_id": run_id}
    step = f"{run_id}/book"
    return [
        f.started(workflow=workflow, at=f.at(0), **where),
        f.source(USER["id"], system="airline", kind="user", contains=[CARD], retrieved_at=f.at(0), **where),
        f.proposed(step, sources=["airline/payment_method/credit_card_7"], at=f.at(2), **where),
        f.consent(step, "Yes, book it with my card", at=f.at(1), event_id=f"{run_id}-yes", **where),
        f.executed(step, at=f.at(3), **where),
        f.finished(at=f.at(4), **where),
    ]


def _imported(run_id: str) -> list[StepEvent]:
    """Three writes from a transcript that records no approvals: two done, one failed."""
    where: dict[str, Any] = {"run_id": run_id}
    steps = [f.started(workflow="order-support", origin=IMPORTED, at=f.at(0), **where)]
    for n in (1, 2, 3):
        step = f"{run_id}/w{n}"
        outcome = f.failed if n == 3 else f.executed
        steps += [f.proposed(step, at=f.at(n), **where), outcome(step, at=f.at(n), **where)]
    return [*steps, f.finished(at=f.at(5), **where)]


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    routed = routed_by(settings, tmp_path, CONSENT_POLICY)
    steps = [
        *_consented("accepted", "order-support"),
        *_consented("refused", "crm-notes"),
        *_imported("imported"),
    ]
    publish_steps(settings, steps, Codec().encode)
    with running_store(settings) as store:
        with ingest_for(routed, store) as ingest:
            poll_until(ingest, lambda: ingest.totals.recorded >= len(steps))
        build_projections(settings, store).catch_up()
        with client_for(settings) as http:
            yield http


def _codes(receipt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["code"]: x for x in receipt["findings"]}


def test_a_consent_is_kept_and_stands_in_for_approval_only_where_the_contract_accepts_it(
    client: TestClient,
) -> None:
    accepted = client.get("/runs/accepted/receipt").json()
    (step,) = accepted["steps"]
    (consent,) = step["consents"]
    assert (consent["text"], consent["at"], consent["event_id"]) == (
        "Yes, book it with my card",
        "2025-03-03T09:01:00Z",
        "accepted-yes",
    )
    assert (consent["given_by"]["kind"], consent["given_by"]["role"]) == ("human", "customer")
    assert step["policy"]["lane"] == "review"  # the service routed it: a person, or a consent
    codes = _codes(accepted)
    for absent in ("executed_without_approval", "unknown_source", "out_of_order"):
        assert absent not in codes, absent
    refused = _codes(client.get("/runs/refused/receipt").json())["executed_without_approval"]
    assert "refused-yes" in refused["event_ids"] and "does not accept consent" in refused["message"]
    assert client.get("/runs/accepted/verify").json()["view"] == "same"


def test_a_format_without_approvals_is_one_info_finding_with_a_count_in_the_receipt_and_the_list(
    client: TestClient,
) -> None:
    receipt = client.get("/runs/imported/receipt").json()
    codes = _codes(receipt)
    assert "executed_without_approval" not in codes and "attempted_without_approval" not in codes
    summary = codes["approvals_not_recorded"]
    assert (summary["severity"], summary["count"]) == ("info", 3)
    assert summary["step_ids"] == ["imported/w1", "imported/w2", "imported/w3"]
    (listed,) = client.get("/findings", params={"code": "approvals_not_recorded"}).json()["findings"]
    assert listed["run_id"] == "imported"
    assert {k: listed["finding"][k] for k in ("count", "step_ids", "event_ids")} == {
        k: summary[k] for k in ("count", "step_ids", "event_ids")
    }
    markdown = client.get("/runs/imported/receipt", headers={"Accept": "text/markdown"}).text
    assert "`approvals_not_recorded` (x3 on imported/w1, imported/w2, imported/w3)" in markdown


def test_the_readiness_report_counts_runs_findings_and_consent_per_workflow_and_lane(
    client: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = client.get("/readiness").json()
    workflows = {w["workflow"]: w for w in body["workflows"]}
    assert {w: x["runs"] for w, x in workflows.items()} == {"crm-notes": 1, "order-support": 2}
    (orders,) = workflows["order-support"]["lanes"]
    assert (orders["lane"], orders["runs"], orders["steps"]) == ("review", 2, 4)
    assert (orders["consent_rate"], orders["failure_rate"]) == (0.25, 0.25)
    counts = {c["code"]: c["count"] for c in workflows["order-support"]["findings"]}
    assert counts["approvals_not_recorded"] == 3 and "executed_without_approval" not in counts
    assert {c["code"]: c["count"] for c in workflows["crm-notes"]["findings"]}[
        "executed_without_approval"
    ] == 1
    markdown = client.get("/readiness", headers={"Accept": "text/markdown"}).text
    assert "### order-support: 2 runs" in markdown and "| review | stay in draft |" in markdown
    cli_env(monkeypatch, settings)
    assert main(["readiness", "--json", "--workflow", "crm-notes"]) == 0
    assert [w["runs"] for w in json.loads(capsys.readouterr().out)["workflows"]] == [1]
    assert main(["readiness", "--markdown", "--since", "2025-03-03T09:00:00Z"]) == 0
    assert "## Lane readiness" in capsys.readouterr().out
    assert main(["readiness", "--markdown", "--since", "2025-03-04T00:00:00Z"]) == 0
    assert "No run with a proposed action yet." in capsys.readouterr().out
