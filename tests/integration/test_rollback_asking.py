"""Asking for a rollback over HTTP and the CLI: who may ask, Idempotency-Key, the plan, and
the rollback queue (`GET /rollbacks`), on the real stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from api.cli import main
from consumers.ingest import Ingest
from domain.steps import SERVICE, DecisionRefused, RollbackRequested, StepEvent
from infra.idempotency import request_digest
from infra.settings import Settings
from infra.store import RunStore
from schemas.codec import encode_json
from tests.integration.helpers import (
    add_principal,
    cli_env,
    client_for,
    execute,
    ingest_for,
    poll_until,
    read_topic,
    running_store,
)
from tests.unit import factories as f

pytestmark = pytest.mark.integration
S2 = "run-1/step-2"


def executed_run() -> list[StepEvent]:
    """Two executed steps: an email (corrected, not unsent) and a note that nobody can undo."""
    return [
        f.started(at=f.at(0)),
        f.proposed(at=f.at(1)),
        approval := f.reviewed(at=f.at(2)),
        f.executed(authorization=approval.event_id, at=f.at(3)),
        f.proposed(S2, rollback={"method": "none", "runbook": "call the customer"}, at=f.at(4)),
        f.executed(S2, at=f.at(5)),
        f.finished("sent", at=f.at(6)),
    ]


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        store.record([(s, encode_json(s)) for s in executed_run()])
        yield store


@pytest.fixture
def ingest(settings: Settings, store: RunStore) -> Iterator[Ingest]:
    with ingest_for(settings, store) as ingest:
        yield ingest


@pytest.fixture
def http(settings: Settings, store: RunStore) -> Iterator[TestClient]:
    with client_for(settings, add_principal(settings, "ops", roles=["rollback"])) as client:
        yield client


def ask(client: TestClient, key: str | None = "k-1", **body: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/runs/run-1/rollback", json={"reason": "wrong price", **body}, headers=headers)


def test_asking_plans_each_executed_step_and_a_repeat_with_the_key_changes_nothing(
    http: TestClient, store: RunStore, ingest: Ingest, settings: Settings
) -> None:
    first = ask(http)
    assert first.status_code == 202, first.text
    body = first.json()
    assert [r["step_id"] for r in body["reverse"]] == [f.STEP]
    assert body["stands"] == [{"step_id": S2, "runbook": "call the customer"}] and body["partial"] is True
    again = ask(http)
    assert again.status_code == 202 and again.json() == body
    assert ask(http, reason="another reason").status_code == 422
    assert settings.kafka_bootstrap
    reverse = read_topic(settings.kafka_bootstrap, settings.reverse_topic, 1)
    assert len(reverse) == 1  # the repeat published nothing
    poll_until(ingest, lambda: ingest.totals.recorded >= 2)  # the request and what stands
    requests = [
        e.step for e in store.run("default", "run-1").entries if isinstance(e.step, RollbackRequested)
    ]
    assert [r.data.rollback_id for r in requests] == [body["rollback_id"]]
    assert requests[0].actor.id == "ops" and requests[0].data.reason == "wrong price"
    build_projections(settings, store).catch_up()
    (listed,) = http.get("/rollbacks").json()["rollbacks"]
    assert (listed["run_id"], listed["recovery"]["rollback_id"]) == ("run-1", body["rollback_id"])
    assert listed["recovery"]["state"] in ("requested", "running")


def test_a_key_still_being_handled_is_a_409(http: TestClient, settings: Settings) -> None:
    # Another request with this key and this body, not answered yet.
    digest = request_digest({"run_id": "run-1", "reason": "wrong price", "steps": []})
    statement = (
        "INSERT INTO receipts_idempotency (tenant, key, request, at) VALUES ('default', %s, %s, now())"
    )
    execute(settings, statement, "k-busy", digest)
    response = ask(http, key="k-busy")
    assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"


def test_only_the_rollback_role_may_ask_and_a_refusal_is_recorded(
    settings: Settings, store: RunStore
) -> None:
    with client_for(settings, add_principal(settings, "kim", roles=["sales-lead"])) as client:
        response = ask(client, key=None)
    assert response.status_code == 403 and "rollback" in response.json()["detail"]
    (refused,) = [
        e.step for e in store.run("default", "run-1").entries if isinstance(e.step, DecisionRefused)
    ]
    assert (refused.data.decision, refused.data.tried_by.id, refused.actor) == ("rollback", "kim", SERVICE)
    with client_for(settings, add_principal(settings, "eve", tenant="acme", roles=["rollback"])) as client:
        assert ask(client, key=None).status_code == 404
        assert client.get("/rollbacks").json()["rollbacks"] == []


def test_the_cli_asks_and_lists(
    settings: Settings,
    store: RunStore,
    ingest: Ingest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(
        monkeypatch, settings, token=add_principal(settings, "ops", roles=["rollback"]), TOPIC=settings.topic
    )
    assert main(["rollback", "run-1", "--reason", "wrong price", "--idempotency-key", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert "asked" in out and "stands  run-1/step-2: call the customer" in out
    assert main(["rollback", "run-1", "--reason", "wrong price", "--idempotency-key", "cli-1"]) == 0
    assert capsys.readouterr().out == out
    poll_until(ingest, lambda: ingest.totals.recorded >= 2)
    build_projections(settings, store).catch_up()
    assert main(["rollbacks"]) == 0
    assert "run-1" in capsys.readouterr().out
