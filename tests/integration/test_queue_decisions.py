"""The approval queue over HTTP and the CLI: a person's decision judged by the queue's rules,
published as the step it is, recorded by ingest; tenants see their own queue only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_decision_relay, build_projections, build_queries
from api.cli import main
from consumers.ingest import Ingest
from domain.steps import (
    SERVICE,
    ActionEdited,
    ActionExpired,
    ActionReviewed,
    DecisionRefused,
    StepEvent,
    content_hash,
)
from infra.decisions import DecisionWaiter
from infra.settings import Settings
from infra.store import RunStore
from projections.deadlines import DeadlineSweeper
from projections.queue import QueueFilter
from schemas.codec import encode_json
from tests.integration.helpers import (
    add_principal,
    cli_env,
    client_for,
    ingest_for,
    poll_until,
    publish_steps,
    running_store,
)
from tests.unit import factories as f

pytestmark = pytest.mark.integration
EDIT = f.DRAFT + "Best, Kim\n"
STEP = "r-1/step-1"


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        store.record([(s, encode_json(s)) for s in waiting("r-1")])
        build_projections(settings, store).catch_up()
        yield store


@pytest.fixture
def ingest(settings: Settings, store: RunStore) -> Iterator[Ingest]:
    with ingest_for(settings, store) as ingest:
        yield ingest


@pytest.fixture
def http(settings: Settings, store: RunStore) -> Iterator[TestClient]:
    with client_for(settings, add_principal(settings, "kim", roles=["sales-lead"])) as client:
        yield client


def waiting(run_id: str, tenant: str = "default") -> list[StepEvent]:
    step = f"{run_id}/step-1"
    where = {"run_id": run_id, "tenant": tenant}
    return [
        f.started(run_id=run_id, tenant=tenant, at=f.at(0)),
        # What the sample policy wants of a lead follow-up, so an edit is routed to review again.
        f.source("form-1", system="hubspot", kind="form_submission", at=f.at(1), **where),
        f.source("pricing", at=f.at(1), **where),
        f.proposed(step, run_id=run_id, tenant=tenant, at=f.at(2)),
        f.policy(step, "review", run_id=run_id, tenant=tenant, at=f.at(3)),
    ]


def routed_two_days_ago(settings: Settings, ingest: Ingest) -> None:
    """Run r-old, published through Kafka and routed by the service's sample policy (its
    lead-followup contract allows four hours), proposed two days ago."""
    old = datetime.now(UTC) - timedelta(days=2)
    steps = [
        s.model_copy(update={"occurred_at": old}) for s in waiting("r-old") if s.type != "policy.decided"
    ]
    publish_steps(settings, steps)
    poll_until(ingest, lambda: ingest.totals.decided >= 1)


def decide(client: TestClient, body: dict[str, Any], step: str = STEP, run: str = "r-1") -> Any:
    return client.post(f"/runs/{run}/steps/{step}/decision", json=body)


def recorded(store: RunStore, ingest: Ingest, count: int, run: str = "r-1") -> list[StepEvent]:
    """The run's steps published since the fixture, once ingest has recorded `count` of them
    (the service's own decisions on an edit follow it)."""
    poll_until(ingest, lambda: ingest.totals.recorded >= count)
    return [e.step for e in store.run("default", run).entries if e.step.actor.kind == "human"]


def test_the_queue_shows_what_waits_and_a_decision_leaves_it(
    http: TestClient, store: RunStore, ingest: Ingest, settings: Settings
) -> None:
    (item,) = http.get("/queue").json()["items"]
    assert (item["run_id"], item["step_id"], item["required_role"]) == ("r-1", STEP, "sales-lead")
    response = decide(http, {"decision": "approve", "version_hash": item["version_hash"]})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["decided_by"] == {"kind": "human", "id": "kim", "role": "sales-lead"}
    last = recorded(store, ingest, 1)[-1]
    assert isinstance(last, ActionReviewed) and last.event_id == body["event_id"]
    assert (last.data.decision, last.data.reviewed_hash, last.actor.id) == (
        "approved",
        item["version_hash"],
        "kim",
    )
    from api.bootstrap import build_projections

    build_projections(settings, store).catch_up()
    assert http.get("/queue").json()["items"] == []
    # Sent again (a retried request): the same event id, recorded once.
    again = decide(http, {"decision": "approve", "version_hash": item["version_hash"]})
    assert again.status_code == 403 and "already_decided" in again.json()["detail"]


def test_edit_then_approve_binds_the_edited_version(
    http: TestClient, store: RunStore, ingest: Ingest, settings: Settings
) -> None:
    draft = content_hash(f.DRAFT)
    edited = decide(http, {"decision": "edit", "version_hash": draft, "output": EDIT})
    assert edited.status_code == 202, edited.text
    steps = recorded(store, ingest, 1)
    assert isinstance(steps[-1], ActionEdited) and steps[-1].data.output_hash == content_hash(EDIT)
    # The edit was routed again, by the service's policy: the lead-followup contract gives
    # a reviewer four hours from the edit.
    build_projections(settings, store).catch_up()
    (item,) = http.get("/queue").json()["items"]
    waited = datetime.fromisoformat(item["expires_at"]) - datetime.fromisoformat(item["waiting_since"])
    assert item["version_hash"] == content_hash(EDIT) and waited == timedelta(hours=4)
    stale = decide(http, {"decision": "approve", "version_hash": draft})
    assert stale.status_code == 403 and stale.json()["detail"].startswith("stale_version")
    approved = decide(http, {"decision": "approve", "version_hash": content_hash(EDIT)})
    assert approved.status_code == 202, approved.text
    last = recorded(store, ingest, 2)[-1]
    assert isinstance(last, ActionReviewed) and last.data.reviewed_hash == content_hash(EDIT)


@pytest.mark.parametrize(
    ("who", "roles", "body", "rule"),
    [
        ("dana", ["support-lead"], {"decision": "approve"}, "role_required"),
        (f.AGENT.id, ["sales-lead"], {"decision": "approve"}, "four_eyes"),
        ("kim", ["sales-lead"], {"decision": "reject"}, "comment_required"),
        ("kim", ["sales-lead"], {"decision": "approve", "version_hash": "sha256:old"}, "stale_version"),
    ],
)
def test_refusals_name_their_rule(
    settings: Settings, store: RunStore, who: str, roles: list[str], body: dict[str, Any], rule: str
) -> None:
    with client_for(settings, add_principal(settings, who, roles=roles)) as client:
        response = decide(client, {"version_hash": content_hash(f.DRAFT), **body})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(f"{rule}: ")
    # Who tried what is on record: the service's step in the run, and in its receipt.
    (refused,) = [e.step for e in store.run("default", "r-1").entries if isinstance(e.step, DecisionRefused)]
    assert (refused.data.rule, refused.data.tried_by.id, refused.actor) == (rule, who, SERVICE)
    (step,) = store.receipt("default", "r-1", timedelta(days=1)).steps
    assert [(r.rule, r.tried_by.id) for r in step.refused] == [(rule, who)]


def test_a_step_waiting_past_its_contract_s_deadline_has_expired(
    http: TestClient, store: RunStore, ingest: Ingest, settings: Settings
) -> None:
    routed_two_days_ago(settings, ingest)
    response = decide(
        http, {"decision": "approve", "version_hash": content_hash(f.DRAFT)}, "r-old/step-1", "r-old"
    )
    assert response.status_code == 403 and response.json()["detail"].startswith("expired: "), response.text


def test_another_tenant_sees_no_queue_and_cannot_decide(settings: Settings, store: RunStore) -> None:
    theirs = add_principal(settings, "eve", tenant="acme", roles=["sales-lead"])
    with client_for(settings, theirs) as client:
        assert client.get("/queue").json()["items"] == []
        response = decide(client, {"decision": "approve", "version_hash": content_hash(f.DRAFT)})
        assert response.status_code == 404, response.text
        assert client.get("/queue", params={"tenant": "default"}).status_code == 403
    with client_for(settings, add_principal(settings, "kim", roles=["sales-lead"])) as client:
        missing = decide(client, {"decision": "approve", "version_hash": "x"}, step="r-1/step-9")
        assert missing.status_code == 404 and "step-9" in missing.json()["detail"]
        nobody = client.post("/runs/r-1/steps/r-1/step-1/decision", json={"decision": "approve"}, headers={})
        assert nobody.status_code == 422  # no version_hash: the body names the missing field


def test_the_cli_lists_the_queue_and_decides(
    settings: Settings,
    store: RunStore,
    ingest: Ingest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    cli_env(
        monkeypatch,
        settings,
        token=add_principal(settings, "kim", roles=["sales-lead"]),
        TOPIC=settings.topic,
    )
    assert main(["queue"]) == 0
    listed = capsys.readouterr().out
    assert STEP in listed and content_hash(f.DRAFT) in listed
    assert main(["reject", f"r-1/{STEP}", "--version", content_hash(f.DRAFT)]) == 3
    assert "comment_required" in capsys.readouterr().err
    text = tmp_path / "edit.txt"
    text.write_text(EDIT, encoding="utf-8")
    assert main(["edit", f"r-1/{STEP}", "--version", content_hash(f.DRAFT), "--output", str(text)]) == 0
    assert "edit of r-1 / r-1/step-1" in capsys.readouterr().out
    last = recorded(store, ingest, 1)[-1]
    assert isinstance(last, ActionEdited) and last.data.output == EDIT and last.actor.id == "kim"
    assert main(["approve", f"r-1/{STEP}", "--version", content_hash(EDIT), "--tenant", "acme"]) == 3
    assert "sees tenant 'default' only" in capsys.readouterr().err


def test_a_step_past_its_deadline_is_recorded_expired_and_the_platform_told(
    store: RunStore, ingest: Ingest, settings: Settings
) -> None:
    routed_two_days_ago(settings, ingest)
    runner = build_projections(settings, store)
    runner.catch_up()
    sweeper = DeadlineSweeper(store, settings.database_schema, every=0)
    assert sweeper.sweep() == 1
    assert sweeper.sweep() == 1  # the view has not applied it yet: found again, recorded once
    expired = [e.step for e in store.run("default", "r-old").entries if isinstance(e.step, ActionExpired)]
    assert len(expired) == 1 and expired[0].data.deadline == expired[0].data.waiting_since + timedelta(
        hours=4
    )
    runner.catch_up()
    assert sweeper.sweep() == 0
    queue = build_queries(settings, store).queue("default", QueueFilter())
    assert [i.run_id for i in queue.items] == ["r-1"]
    (step,) = store.receipt("default", "r-old", timedelta(days=9)).steps
    assert step.expired_at == expired[0].data.deadline
    relay = build_decision_relay(settings, store)
    relay.start()
    while relay.relay_once():
        pass
    assert settings.kafka_bootstrap
    waiter = DecisionWaiter(settings.kafka_bootstrap, settings.decisions_topic)
    notice = waiter.wait("default", "r-old", "r-old/step-1", timeout=15)
    assert (notice.outcome, notice.final, notice.decided_by) == ("expired", True, SERVICE)
