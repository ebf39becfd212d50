"""Read-your-writes under load, on a real uvicorn server: waiters hold no thread,
are bounded in number, and wake on the views' commit."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import uvicorn

from api.bootstrap import build_projections
from api.web import create_app
from infra.embedded import free_port
from infra.settings import Settings
from infra.store import RunStore
from tests.integration.helpers import add_principal, bearer, running_store
from tests.integration.incidents import GENERATED, record

pytestmark = pytest.mark.integration
WAITERS = 80
LIMIT = 64


@dataclass
class Answer:
    status: int
    body: dict  # type: ignore[type-arg]
    retry_after: str | None
    at: float


@dataclass(frozen=True)
class Server:
    port: int
    token: str  # an admin of tenant `default`: every endpoint asks who is asking


def _get(server: Server, path: str, timeout: float = 30.0) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=bearer(server.token))
        response = conn.getresponse()
        body = json.loads(response.read())
        return Answer(response.status, body, response.getheader("Retry-After"), time.monotonic())
    finally:
        conn.close()


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


@pytest.fixture
def server(settings: Settings, store: RunStore) -> Iterator[Server]:
    """The HTTP API as `receipts serve` runs it: uvicorn, its default thread pool."""
    port = free_port()
    app = create_app(settings.model_copy(update={"max_waiters": LIMIT}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield Server(port, add_principal(settings))
    server.should_exit = True
    thread.join(15)


def _wait_in_threads(server: Server, path: str, count: int) -> tuple[list[Answer], list[threading.Thread]]:
    answers: list[Answer] = []

    def ask() -> None:
        answers.append(_get(server, path))

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    return answers, threads


def test_eighty_waiters_leave_health_fast_and_wake_on_the_commit(
    settings: Settings, store: RunStore, server: Server
) -> None:
    record(store, GENERATED[4].publish)
    run_id = GENERATED[4].run_id
    last = store.run("default", run_id).entries[-1].step.event_id
    runner = build_projections(settings, store)  # tables; nothing applied yet
    path = f"/runs/{run_id}/receipt?" + urlencode({"after_event": last, "wait": 10})
    answers, threads = _wait_in_threads(server, path, WAITERS)
    deadline = time.monotonic() + 10
    while len(answers) < WAITERS - LIMIT and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = list(answers)
    assert len(refused) == WAITERS - LIMIT, "past the bound, a waiter is refused at once"
    assert {(a.status, a.retry_after) for a in refused} == {(503, "1")}
    assert "RECEIPTS_MAX_WAITERS" in refused[0].body["detail"]
    latencies = []
    for _ in range(20):  # the other 64 are waiting now
        started = time.perf_counter()
        health = _get(server, "/health")
        latencies.append(time.perf_counter() - started)
        assert health.status == 200, health.body
        assert health.body["waiters"] == {"waiting": LIMIT, "limit": LIMIT, "listening": True}
    assert statistics.median(latencies) < 0.05 and max(latencies) < 0.1, latencies
    assert len(answers) == WAITERS - LIMIT  # nobody gave up meanwhile
    runner.catch_up()
    committed = time.monotonic()
    for thread in threads:
        thread.join(15)
    woken = answers[WAITERS - LIMIT :]
    assert len(woken) == LIMIT and {a.status for a in woken} == {200}
    assert all(last in a.body["event_ids"] for a in woken)
    assert max(a.at for a in woken) - committed < 1.0


def test_a_waiter_answers_within_100_ms_of_the_commit(
    settings: Settings, store: RunStore, server: Server
) -> None:
    runner = build_projections(settings, store)
    for generated in GENERATED[5:8]:
        record(store, generated.publish)
        last = store.run("default", generated.run_id).entries[-1].step.event_id
        path = f"/runs/{generated.run_id}/receipt?" + urlencode({"after_event": last, "wait": 10})
        answers, (thread,) = _wait_in_threads(server, path, 1)
        time.sleep(0.3)  # it is waiting: nothing applied yet
        assert answers == []
        runner.catch_up()
        committed = time.monotonic()
        thread.join(15)
        (answer,) = answers
        assert answer.status == 200 and last in answer.body["event_ids"]
        assert answer.at - committed < 0.1, f"answered {answer.at - committed:.3f} s after the commit"
