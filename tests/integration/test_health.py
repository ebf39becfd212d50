"""/health and `receipts health`: what is wrong, said plainly, with a 503 (exit 1) when it matters."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from api.cli import main
from api.liveness import Beats
from infra.health import ProcessName
from infra.settings import Settings
from infra.store import RunStore
from projections.catalog import VIEW_NAMES
from tests.integration.helpers import client_for, execute, running_store
from tests.integration.incidents import GENERATED, record

pytestmark = pytest.mark.integration


@pytest.fixture
def lagging(settings: Settings) -> Settings:
    """Thresholds a test can cross quickly: any step unapplied for half a second."""
    return settings.model_copy(update={"health_lag_events": 0, "health_lag_seconds": 0.5})


@pytest.fixture
def store(lagging: Settings) -> Iterator[RunStore]:
    with running_store(lagging) as store:
        yield store


@pytest.fixture
def client(lagging: Settings, store: RunStore) -> Iterator[TestClient]:
    with client_for(lagging) as client:
        yield client


def _beat(settings: Settings, name: str, ago_seconds: float, state: str = "running") -> None:
    execute(
        settings,
        "INSERT INTO receipts_processes (name, kind, pid, host, started_at, beat_at, state) "
        "VALUES (%s, 'project', 1, 'h', now() - interval '1 hour', now() - make_interval(secs => %s), %s)",
        name,
        ago_seconds,
        state,
    )


def test_ok_when_views_are_current_and_processes_beat(
    lagging: Settings, client: TestClient, store: RunStore
) -> None:
    record(store, GENERATED[0].publish)
    build_projections(lagging, store).catch_up()
    _beat(lagging, "project@h:1", ago_seconds=1)
    _beat(lagging, "ingest@h:2", ago_seconds=600, state="stopped")  # a clean stop is not a problem
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["problems"] == []
    assert set(body["behind"].values()) == {0} and len(body["views"]) == len(VIEW_NAMES)
    assert {p["name"]: p["alive"] for p in body["processes"]} == {
        "project@h:1": True,
        "ingest@h:2": False,
        ProcessName.here("serve").name: True,  # the app under test beats too
    }


def test_a_view_left_behind_is_a_503_naming_it(client: TestClient, store: RunStore) -> None:
    events = record(store, GENERATED[1].publish)
    time.sleep(0.6)  # no runner: the steps wait past the threshold
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert any(f"view runs is {events} events behind" in p for p in body["problems"]), body["problems"]
    assert all(v["waiting_seconds"] >= 0.5 for v in body["views"])


def test_a_silent_process_and_a_quarantined_event_are_problems(
    lagging: Settings, client: TestClient, store: RunStore
) -> None:
    build_projections(lagging, store)  # the quarantine table
    _beat(lagging, "project@h:1", ago_seconds=60)
    execute(
        lagging,
        "INSERT INTO view_quarantine (position, run_key, view, reason) "
        "VALUES (42, gen_random_uuid(), 'touches', 'index row size 100032 exceeds btree maximum')",
    )
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 503
    assert any("process project@h:1 has not been heard from for 6" in p for p in body["problems"])
    assert any("1 event(s) quarantined" in p and "position 42" in p for p in body["problems"])
    assert body["quarantine"]["count"] == 1 and body["quarantine"]["latest"][0]["view"] == "touches"


def test_a_position_reset_is_a_warning_not_a_503(lagging: Settings, client: TestClient) -> None:
    execute(
        lagging,
        "INSERT INTO receipts_incidents (kind, subject, detail) VALUES "
        """('position_reset', 'steps/2', '{"stored": 500, "broker_end": 0}')""",
    )
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["incidents"][0]["kind"] == "position_reset"
    assert any("position_reset steps/2" in w for w in body["warnings"])


def test_health_is_cheap(lagging: Settings, client: TestClient, store: RunStore) -> None:
    record(store, GENERATED[2].publish)
    build_projections(lagging, store).catch_up()
    client.get("/health")
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.1 and max(timings) < 0.25, timings


def test_receipts_health_prints_the_report_and_exits_1_when_degraded(
    lagging: Settings, store: RunStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in (
        ("DATABASE_URL", lagging.database_url),
        ("KAFKA_BOOTSTRAP", lagging.kafka_bootstrap),
        ("DATABASE_SCHEMA", lagging.database_schema),
        ("HEALTH_LAG_SECONDS", "0.5"),
    ):
        monkeypatch.setenv(f"RECEIPTS_{name}", str(value))
    runner = build_projections(lagging, store)
    assert main(["health"]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    record(store, GENERATED[3].publish)
    time.sleep(0.6)
    assert main(["health"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("DEGRADED: ") and "PROBLEM  view runs is" in out
    assert main(["health", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "degraded"
    runner.catch_up()
    assert main(["health"]) == 0


def test_a_process_that_died_without_a_word_is_marked_died_when_its_successor_starts(
    lagging: Settings, store: RunStore
) -> None:
    """A SIGKILLed `up` leaves its children's rows `running`: the next process on the
    host marks them died (an incident each), so /health is not degraded for ever."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    execute(
        lagging,
        "INSERT INTO receipts_processes (name, kind, pid, host, started_at, beat_at, state) "
        "VALUES (%s, 'ingest', %s, %s, now() - interval '1 hour', now() - interval '1 minute', 'running')",
        f"ingest@{host}:{gone.pid}",
        gone.pid,
        host,
    )
    Beats(lagging, "ingest").beat(now=True)
    with psycopg.connect(str(lagging.database_url)) as conn:
        conn.execute(f'SET search_path TO "{lagging.database_schema}"')
        state = conn.execute("SELECT state FROM receipts_processes WHERE pid = %s", (gone.pid,)).fetchone()
        died = conn.execute("SELECT subject FROM receipts_incidents WHERE kind = 'process_died'").fetchall()
    assert state == ("died",) and died == [(f"ingest@{host}:{gone.pid}",)]
    with client_for(lagging) as client:
        body = client.get("/health").json()
    assert not [p for p in body["problems"] if "not been heard from" in p], body["problems"]
