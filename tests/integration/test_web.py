"""The HTTP API on real PostgreSQL: answers, receipts as of a time, read-your-writes, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from domain.receipt import render
from domain.run import run_uuid
from infra.publisher import Publisher
from infra.settings import Settings
from infra.store import RunStore
from projections.catalog import VIEW_NAMES
from tests.fakes import FakeProducer
from tests.integration.helpers import client_for, execute, running_store
from tests.integration.incidents import GENERATED, Generated, record, record_incidents

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


@pytest.fixture
def client(settings: Settings, store: RunStore) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


@pytest.fixture
def projected(settings: Settings, store: RunStore) -> int:
    events = record_incidents(store)
    build_projections(settings, store).catch_up()
    return events


def problem(response, status: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


def test_openapi_lists_every_question(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/runs",
        "/runs/{run_id}/receipt",
        "/runs/{run_id}/verify",
        "/findings",
        "/entities/{system}/{kind}/{entity_id}/runs",
        "/sources/{system}/{kind}/{source_id}/runs",
    } <= set(paths)


def test_runs_filter_and_paginate(client: TestClient, projected: int) -> None:
    page = client.get("/runs", params={"workflow": "support-triage", "limit": 5}).json()
    assert len(page["runs"]) == 5 and page["next_cursor"]
    rest = client.get(
        "/runs", params={"workflow": "support-triage", "limit": 100, "cursor": page["next_cursor"]}
    ).json()
    got = [r["run_id"] for r in page["runs"] + rest["runs"]]
    wanted = {g.run_id for g in GENERATED if g.workflow == "support-triage"} | {"demo-support-triage"}
    assert sorted(got) == sorted(wanted) and len(got) == len(set(got))


def test_bad_filters_are_422_naming_the_field(client: TestClient) -> None:
    body = problem(client.get("/runs", params={"limit": 0}), 422)
    assert body["errors"][0]["field"] == "limit"
    body = problem(client.get("/runs", params={"since": "yesterday"}), 422)
    assert body["errors"][0]["field"] == "since" and "since" in body["detail"]
    body = problem(client.get("/runs", params={"colour": "red"}), 422)
    assert body["errors"][0]["field"] == "colour"
    body = problem(client.get("/runs", params={"cursor": "xyz"}), 422)
    assert body["errors"] == [{"field": "cursor", "message": body["errors"][0]["message"]}]


def test_unknown_run_and_route_are_404_problems(client: TestClient) -> None:
    body = problem(client.get("/runs/nope/receipt"), 404)
    assert "no run 'nope' in tenant 'default'" in body["detail"]
    problem(client.get("/runs/nope/verify"), 404)
    problem(client.get("/no-such-endpoint"), 404)


def test_receipt_as_json_and_markdown(client: TestClient, projected: int) -> None:
    receipt = client.get("/runs/demo-lead-followup/receipt").json()
    assert receipt["run_id"] == "demo-lead-followup" and receipt["final_state"] == "sent"
    md = client.get("/runs/demo-lead-followup/receipt", headers={"Accept": "text/markdown"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("## Receipt: run `demo-lead-followup`")
    assert "| Final state | sent |" in md.text and "```text" in md.text


def test_entities_and_sources(client: TestClient, projected: int) -> None:
    touched = client.get("/entities/github/file/site/pricing.md/runs").json()
    assert [r["run_id"] for r in touched["runs"]] == ["demo-pricing-update"]
    assert touched["id"] == "site/pricing.md"
    v1 = client.get("/sources/cms/page/pricing/runs", params={"version": "v1"}).json()
    assert {r["run_id"] for r in v1["runs"]} == {g.run_id for g in GENERATED if g.page_version == "v1"}


def test_findings_and_verify(client: TestClient, projected: int) -> None:
    findings = client.get("/findings", params={"code": "no_source_evidence"}).json()["findings"]
    assert [f["run_id"] for f in findings] == ["demo-boring-failures"]
    ok = client.get("/runs/demo-crm-note/verify").json()
    assert ok["verified"] is True and ok["events"] > 0


def test_verify_names_an_altered_row(settings: Settings, client: TestClient, projected: int) -> None:
    execute(
        settings,
        "UPDATE receipts_events SET state = overlay(state PLACING 'X'::bytea "
        "FROM length(state) - 5 FOR 1) WHERE originator_id = %s AND originator_version = 3",
        run_uuid("default", GENERATED[1].run_id),
    )
    body = client.get(f"/runs/{GENERATED[1].run_id}/verify").json()
    assert body["verified"] is False and body["first_bad_version"] == 3


def test_receipt_as_of_several_instants(client: TestClient, store: RunStore, settings: Settings) -> None:
    producer = FakeProducer()
    Generated(99).publish(Publisher(producer=producer, encoding="json"))  # type: ignore[arg-type]
    started = datetime.now(UTC) - timedelta(hours=1)
    seconds = iter(range(1_000))
    ticking = RunStore(settings.eventsourcing_env(), clock=lambda: started + timedelta(seconds=next(seconds)))
    instants = []
    for k, value in enumerate(producer.accepted):  # one save per step, a second apart
        ticking.record([(store.codec.decode(value), value)])
        instants.append(started + timedelta(seconds=k, milliseconds=500))
    ticking.close()
    run_id = Generated(99).run_id
    recorded = store.run("default", run_id).entries
    assert len(recorded) == len(instants) > 3
    for k, instant in enumerate(instants, start=1):
        body = client.get(f"/runs/{run_id}/receipt", params={"as_of": instant.isoformat()}).json()
        assert body["event_ids"] == [e.step.event_id for e in recorded[:k]]
        expected = render(recorded[:k]).model_dump(mode="json")
        assert body["integrity"].pop("checked_at") and expected["integrity"].pop("checked_at") is None
        assert body == expected
    before = problem(client.get(f"/runs/{run_id}/receipt", params={"as_of": "2020-01-01T00:00:00Z"}), 404)
    assert "had nothing recorded" in before["detail"]
    problem(client.get(f"/runs/{run_id}/receipt", params={"as_of": "2026-01-01T00:00:00"}), 422)  # no zone


def test_read_your_writes_waits_for_the_event_or_says_it_did_not_come(
    settings: Settings, client: TestClient, store: RunStore
) -> None:
    record(store, GENERATED[2].publish)
    last = store.run("default", GENERATED[2].run_id).entries[-1].step.event_id
    url = f"/runs/{GENERATED[2].run_id}/receipt"
    late = problem(client.get(url, params={"after_event": last, "wait": 0.3}), 503)
    assert last in late["detail"] and "0.3 s" in late["detail"]
    runner = build_projections(settings, store)
    applier = threading.Timer(0.3, runner.catch_up)
    applier.start()
    started = time.monotonic()
    body = client.get(url, params={"after_event": last, "wait": 5}).json()
    applier.join()
    assert last in body["event_ids"] and time.monotonic() - started < 5


def test_health_says_how_far_each_view_is_behind(
    settings: Settings, client: TestClient, store: RunStore
) -> None:
    events = record(store, GENERATED[3].publish)
    behind = client.get("/health").json()["behind"]
    assert behind == dict.fromkeys(behind, events) and len(behind) == len(VIEW_NAMES)
    build_projections(settings, store).catch_up()
    assert set(client.get("/health").json()["behind"].values()) == {0}
