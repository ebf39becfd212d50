"""Query latencies on a loaded store: each incident question through `Queries` (direct,
in this process) and through the HTTP API (`receipts serve` in a subprocess, one
keep-alive connection), beside the floor: a raw psycopg primary-key read of a stored
receipt document."""

from __future__ import annotations

import http.client
import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from uuid import uuid4

import psycopg
from psycopg import sql

from api.bootstrap import open_store
from bench.corpus import RunKeys
from bench.latency import start_cli_process, stop_process
from bench.support import TENANT, say
from domain.principals import ADMIN
from domain.run import run_uuid
from infra.embedded import free_port
from infra.principals import Principals
from infra.settings import Settings
from projections.queries import Queries, RelatedRuns, RunFilter, RunsPage

FLOOR = "floor: raw SELECT of a receipt"


@dataclass(frozen=True, slots=True)
class Probe:
    """One question with its keys, as a call on `Queries` and as an HTTP path."""

    direct: Callable[[Queries], object]
    path: str


@dataclass(frozen=True, slots=True)
class Question:
    name: str
    target_ms: float | None  # p99 target from the issue
    probe: Callable[[random.Random], Probe]  # a probe with random keys


@dataclass
class Timings:
    name: str
    target_ms: float | None
    direct_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # runs in each direct answer
    http_errors: int = 0


def questions(samples: Sequence[RunKeys], finding_codes: Sequence[str]) -> list[Question]:
    """The issue's questions over keys of loaded runs (busy records come up as often as
    they are used: the keys are those of random runs)."""
    finished = [s for s in samples if s.final_state] or list(samples)
    cited = [source for s in samples for source in s.sources]

    def entity(rng: random.Random) -> Probe:
        system, kind, id_ = rng.choice(samples).target
        return Probe(lambda q: q.touched(system, kind, id_), f"/entities/{system}/{kind}/{quote(id_)}/runs")

    def source(rng: random.Random, versioned: bool) -> Probe:
        system, kind, id_, v = rng.choice(cited)
        version = v if versioned else None
        path = f"/sources/{system}/{kind}/{quote(id_)}/runs" + (f"?version={v}" if versioned else "")
        return Probe(lambda q: q.relied_on(system, kind, id_, version=version), path)

    def runs(**params: Any) -> Probe:
        query = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in params.items()}
        return Probe(lambda q: q.runs(RunFilter(**params)), "/runs?" + urlencode(query))

    def window(rng: random.Random) -> Probe:
        since = rng.choice(samples).started - timedelta(minutes=rng.uniform(0, 60))
        return runs(since=since, until=since + timedelta(hours=1))

    def receipt(rng: random.Random) -> Probe:
        run_id = rng.choice(samples).run_id
        return Probe(lambda q: q.receipt_json(TENANT, run_id), f"/runs/{quote(run_id)}/receipt")

    def pick(rng: random.Random) -> RunKeys:
        return rng.choice(finished)

    return [
        Question("entity lookup", 20, entity),
        Question("source lookup, any version", 20, lambda rng: source(rng, False)),
        Question("source lookup, one version", 20, lambda rng: source(rng, True)),
        Question(
            "run list: workflow + final_state",
            20,
            lambda rng: runs(workflow=(k := pick(rng)).workflow, final_state=k.final_state),
        ),
        Question("run list: finding code", 20, lambda rng: runs(finding=rng.choice(finding_codes))),
        Question("run list: reviewer", 20, lambda rng: runs(reviewer=rng.choice(samples).reviewer)),
        Question("run list: 1 h time window", 20, window),
        Question("run list: text in input ref", 20, lambda rng: runs(text=rng.choice(samples).input_id)),
        Question("run list: newest, no filter", 20, lambda _rng: runs()),
        Question("receipt read", 10, receipt),
    ]


def _size(answer: object) -> int:
    if isinstance(answer, RunsPage | RelatedRuns):
        return len(answer.runs)
    return int(answer is not None)


def _rounds(
    asked: Sequence[Question],
    samples: int,
    warmup: int,
    seed: int,
    ask: Callable[[Question, Probe, bool], None],
) -> None:
    """Questions in turn (so noise falls on all alike), `warmup` rounds unrecorded first."""
    rng = random.Random(seed)
    for i in range(warmup + samples):
        for question in asked:
            ask(question, question.probe(rng), i >= warmup)


def time_direct(
    queries: Queries,
    asked: Sequence[Question],
    timings: dict[str, Timings],
    samples: int,
    warmup: int,
    seed: int,
) -> None:
    def ask(question: Question, probe: Probe, record: bool) -> None:
        started = time.perf_counter()
        answer = probe.direct(queries)
        elapsed = (time.perf_counter() - started) * 1000
        if record:
            timings[question.name].direct_ms.append(elapsed)
            timings[question.name].sizes.append(_size(answer))

    _rounds(asked, samples, warmup, seed, ask)


def time_floor(
    url: str, schema: str, samples: Sequence[RunKeys], count: int, warmup: int, seed: int
) -> list[float]:
    """A prepared primary-key read of the stored receipt document on one open connection."""
    table = sql.SQL("{}.view_receipts").format(sql.Identifier(schema))
    statement = sql.SQL("SELECT document FROM {} WHERE run_key = %s").format(table)
    rng = random.Random(seed)
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(warmup + count):
            key = run_uuid(TENANT, rng.choice(samples).run_id)
            started = time.perf_counter()
            conn.execute(statement, (key,), prepare=True).fetchall()
            if i >= warmup:
                out.append((time.perf_counter() - started) * 1000)
    return out


@dataclass(frozen=True)
class Api:
    """`receipts serve` as the bench runs it, and the token it asks with (every endpoint
    wants one: an admin of the bench's tenant, so /health answers too)."""

    port: int
    token: str


class Client:
    """One keep-alive HTTP/1.1 connection to the API."""

    def __init__(self, api: Api) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {api.token}"}

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            return self._get(path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # uvicorn closes a connection idle for 5 s; http.client does not reconnect by itself.
            self.conn.close()
            return self._get(path)

    def _get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def time_http(
    api: Api, asked: Sequence[Question], timings: dict[str, Timings], samples: int, warmup: int, seed: int
) -> None:
    client = Client(api)

    def ask(question: Question, probe: Probe, record: bool) -> None:
        started = time.perf_counter()
        status, body = client.get(probe.path)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            timings[question.name].http_errors += 1
            if timings[question.name].http_errors == 1:
                say(f"HTTP {status} for {probe.path}: {body[:300]!r}")
        elif record:
            timings[question.name].http_ms.append(elapsed)

    try:
        _rounds(asked, samples, warmup, seed, ask)
    finally:
        client.close()


def start_api(settings: Settings, workdir: Path, stack: ExitStack) -> Api:
    """`receipts serve` (uvicorn, one process) on a free port, once /health answers."""
    api = Api(free_port(), _bench_principal(settings))
    port = api.port
    log_path = workdir / "api.log"
    proc = start_cli_process(settings, ["serve", "--port", str(port)], workdir / "api", log_path)
    stack.callback(stop_process, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        client = Client(api)
        try:
            if client.get("/health")[0] == 200:
                return api
        except OSError:
            pass
        finally:
            client.close()
        time.sleep(0.2)
    raise RuntimeError(
        f"the HTTP API did not come up (exit code {proc.poll()}); the end of {log_path}:\n"
        + log_path.read_text()[-2000:]
    )


def _bench_principal(settings: Settings) -> str:
    store = open_store(settings)
    try:
        principals = Principals(store.steps.datastore, settings.database_schema)
        return principals.add(f"bench-{uuid4().hex[:8]}", TENANT, [ADMIN], "bench")
    finally:
        store.close()
