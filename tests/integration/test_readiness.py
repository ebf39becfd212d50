"""The readiness report over HTTP and the CLI, from the receipts view, in the caller's tenant."""

from __future__ import annotations

import json

import pytest

from api.bootstrap import build_projections
from api.cli import main
from domain.policy import load_policy, sample_text
from domain.steps import StepEvent
from infra.settings import Settings
from schemas.codec import encode_json
from tests.integration.helpers import add_principal, cli_env, client_for, running_store
from tests.unit import factories as f

pytestmark = pytest.mark.integration


def _runs(count: int) -> list[StepEvent]:
    return [s.model_copy(update={"run_id": f"r-{n}"}) for n in range(count) for s in f.clean_run()]


def test_readiness_per_workflow_and_lane_in_the_callers_tenant(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_store(settings) as store:
        store.record([(s, encode_json(s)) for s in _runs(4)])
        build_projections(settings, store).catch_up()
        with client_for(settings) as http:
            (workflow,) = http.get("/readiness").json()["workflows"]
            assert (workflow["workflow"], workflow["runs"]) == ("lead-followup", 4)
            (lane,) = workflow["lanes"]
            assert (lane["workflow"], lane["lane"], lane["runs"], lane["complete_receipts"]) == (
                "lead-followup",
                "review",
                4,
                1.0,
            )
            assert lane["verdict"] == "stay in draft"  # 4 runs: too little evidence
            assert http.get("/readiness", params={"workflow": "support-triage"}).json()["workflows"] == []
        with client_for(settings, add_principal(settings, "eve", tenant="acme")) as theirs:
            assert theirs.get("/readiness").json()["workflows"] == []
        cli_env(monkeypatch, settings)
        assert main(["readiness", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["workflows"][0]["lanes"][0]["runs"] == 4
        assert main(["readiness"]) == 0
        assert "lead-followup / review: stay in draft" in capsys.readouterr().out


def test_the_thresholds_are_the_policy_s_readiness_section(settings: Settings) -> None:
    text = sample_text() + "\n[readiness]\nmin_runs = 3\n"
    with running_store(settings) as store:
        store.record([(s, encode_json(s)) for s in _runs(4)])
        store.record_policy(load_policy(text), text, "test")
        build_projections(settings, store).catch_up()
        with client_for(settings) as http:
            body = http.get("/readiness").json()
    assert body["thresholds"]["min_runs"] == 3
    ((lane,),) = (w["lanes"] for w in body["workflows"])
    assert lane["verdict"] == "candidate for auto-execute", lane["why"]
