"""Publish -> visible in `GET /runs/{id}/receipt`, at a steady publish rate, on the loaded store.

The production pieces run as they would in `receipts up`: `receipts ingest` and
`receipts project` as processes of their own, the HTTP API in a third. Runs are
published through the `Publisher` context API at a fixed schedule; for every
`sample_every`-th event a client asks `GET /runs/{id}/receipt?after_event=<id>` right
after the send (the API's read-your-writes wait) and the latency is the answer's
arrival minus the publish time.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from bench.latency import start_cli_process, stop_process
from bench.lookups import Api, Client
from bench.steps import LANES, REVIEWERS, StepFactory
from bench.support import say
from domain.steps import Actor, StepEvent
from infra.kafka import ensure_topics
from infra.publisher import Publisher
from infra.settings import Settings

WAIT_SECONDS = 10.0  # the API's longest wait for after_event
POLLERS = 32
UNDO = {"method": "revert", "runbook": "https://wiki.example/undo"}


@dataclass
class Visible:
    rate: float
    seconds: float
    sample_every: int
    published: int = 0
    achieved_rate: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0  # not in the receipt within WAIT_SECONDS


class PacedPublisher(Publisher):
    """Sends each event at its slot of a fixed schedule, `rate` a second (late slots are
    sent at once, never in bursts beyond the schedule), and hands every `sample_every`-th
    event to `on_sample` with its publish time."""

    def __init__(
        self, settings: Settings, rate: float, sample_every: int, on_sample: Callable[[str, str, float], None]
    ) -> None:
        super().__init__(bootstrap=settings.kafka_bootstrap, topic=settings.topic, encoding=settings.encoding)
        self.rate = rate
        self.sample_every = sample_every
        self.on_sample = on_sample
        self.started = time.perf_counter()
        self.sent = 0

    def publish(self, step: StepEvent) -> None:
        delay = self.started + self.sent / self.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        at = time.time()
        super().publish(step)
        if self.sent % self.sample_every == 0:
            self.on_sample(step.run_id, step.event_id, at)
        self.sent += 1


class Script:
    """Runs as an agent platform publishes them: sources, then proposals that are
    reviewed (sometimes edited first) and executed."""

    def __init__(self, seed: int, prefix: str) -> None:
        self.rng = random.Random(seed)
        texts = StepFactory(seed, prefix, 1)
        self.texts = [texts.text(self.rng.randint(100, 200)) for _ in range(200)]
        self.prefix = prefix
        self.number = 0

    def publish_run(self, publisher: Publisher) -> None:
        rng = self.rng
        lane = LANES[self.number % len(LANES)]
        reviewer_id, role = rng.choice(REVIEWERS)
        reviewer = Actor(kind="human", id=reviewer_id, role=role)
        ref = f"{lane.input_kind[:3]}-{rng.randrange(10**7):07d}"
        with publisher.run(
            workflow=lane.workflow,
            run_id=f"{self.prefix}-{self.number:06d}",
            input={"system": lane.input_system, "kind": lane.input_kind, "id": ref},
            agent={"name": lane.bot, "version": "2.4.1"},
            model={"provider": "anthropic", "name": "claude-sonnet", "version": "4.5"},
        ) as run:
            sources = [
                run.source(
                    system="cms",
                    kind="page",
                    id=f"src-{rng.randrange(10**5):06d}",
                    version=f"v{rng.randint(1, 12)}",
                    excerpt=rng.choice(self.texts),
                )
                for _ in range(rng.randint(1, 3))
            ]
            for _ in range(rng.randint(1, 3)):
                target = {
                    "system": lane.target_system,
                    "kind": lane.target_kind,
                    "id": f"live-{rng.randrange(10**4)}",
                }
                step = run.propose(
                    verb=lane.verb,
                    target=target,
                    tool=lane.tool,
                    output=rng.choice(self.texts),
                    sources=sources[-2:],
                    confidence=round(rng.uniform(0.5, 0.99), 2),
                    rollback=UNDO,
                )
                step.policy(lane.rule, "2026-11-01", "review", required_role=role)
                if rng.random() < 0.4:
                    step.edit(rng.choice(self.texts), by=reviewer)
                step.review("approved", by=reviewer)
                step.executed(lane.executed_state, external_ref=f"{lane.tool}-{rng.randrange(16**8):08x}")
            run.finish("sent")
        self.number += 1


class Pollers:
    """Clients waiting, each on its own keep-alive connection, for sampled events to show."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(POLLERS, thread_name_prefix="bench-poll")
        self.local = threading.local()
        self.futures: list[Future[float | None]] = []

    def submit(self, run_id: str, event_id: str, at: float) -> None:
        self.futures.append(self.pool.submit(self._wait, run_id, event_id, at))

    def _wait(self, run_id: str, event_id: str, at: float) -> float | None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = Client(self.api)
        status, _ = client.get(f"/runs/{quote(run_id)}/receipt?after_event={event_id}&wait={WAIT_SECONDS:g}")
        return (time.time() - at) * 1000 if status == 200 else None

    def results(self) -> list[float | None]:
        out = [future.result() for future in self.futures]
        self.futures = []
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _wait_for_log(proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float = 60) -> None:
    """Until the process has written `text` to its log (nothing to wait for when empty)."""
    deadline = time.monotonic() + timeout
    while text and text not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"{log_path.stem} did not log '{text}' (exit code {proc.poll()}); the end of "
                f"{log_path}:\n{log_path.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.1)


def run_visible(
    settings: Settings,
    api: Api,
    rate: float,
    seconds: float,
    sample_every: int,
    seed: int,
    workdir: Path,
    stack: ExitStack,
) -> Visible:
    assert settings.kafka_bootstrap
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    # One after the other: each runs eventsourcing's start-up DDL (CREATE OR REPLACE FUNCTION),
    # and two at once can fail with "tuple concurrently updated".
    for command, ready in (("ingest", "resumed"), ("project", "")):
        log_path = workdir / f"{command}.log"
        proc = start_cli_process(settings, [command], workdir / command, log_path)
        stack.callback(stop_process, proc)
        _wait_for_log(proc, log_path, ready)
    pollers = Pollers(api)
    stack.callback(pollers.close)
    script = Script(seed, f"live-{settings.group}")

    # Warm up until a published run shows in its receipt: the consumer has joined its group.
    deadline = time.monotonic() + 90
    while True:
        publisher = PacedPublisher(settings, rate, 1, pollers.submit)
        script.publish_run(publisher)
        publisher.close()
        if all(r is not None for r in pollers.results()):
            break
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name}.log\n" + (workdir / f"{name}.log").read_text()[-1500:]
                for name in ("ingest", "project")
            )
            raise RuntimeError(f"no published run became visible in 90 s:\n{logs}")
    say(
        f"visible: ingest and projections are live; publishing {rate:,.0f} events/s for {seconds:g}s, "
        f"waiting on every {sample_every}th event through GET /runs/{{id}}/receipt?after_event="
    )

    result = Visible(rate, seconds, sample_every)
    publisher = PacedPublisher(settings, rate, sample_every, pollers.submit)
    while publisher.sent < rate * seconds:
        script.publish_run(publisher)
    result.achieved_rate = publisher.sent / (time.perf_counter() - publisher.started)
    publisher.close()
    result.published = publisher.sent
    found = pollers.results()
    result.latencies_ms = [ms for ms in found if ms is not None]
    result.missing = len(found) - len(result.latencies_ms)
    return result
