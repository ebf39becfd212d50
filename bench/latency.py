"""Latency at a steady publish rate into the production consumer
(`python -m api.cli ingest` as a subprocess)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from bench.steps import StepFactory
from bench.support import EVENTS_TABLE, ROOT, count_rows, create_schema, drop_schema, say, sql_run
from domain.steps import StepEvent
from infra.kafka import ensure_topics
from infra.kafka import producer as kafka_producer
from infra.rows import read_step_state
from infra.settings import Settings
from schemas import Codec

# --- latency ------------------------------------------------------------------------------


class Listener(threading.Thread):
    """LISTENs on the event table's channel; stamps each committed row when a reader first sees it."""

    def __init__(self, url: str, schema: str) -> None:
        super().__init__(name="bench-listener", daemon=True)
        self.url = url
        self.query = sql.SQL(
            "SELECT notification_id, state FROM {}.{} WHERE notification_id > %s ORDER BY notification_id"
        ).format(sql.Identifier(schema), sql.Identifier(EVENTS_TABLE))
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_TABLE)))
                self.ready.set()
                last = 0
                while not self.stopping.is_set():
                    for _ in conn.notifies(timeout=0.2, stop_after=1):
                        pass
                    rows = conn.execute(self.query, (last,)).fetchall()
                    now = time.time()
                    for notification_id, state in rows:
                        self.seen.setdefault(read_step_state(bytes(state)).event_id, now)
                        last = notification_id
        except BaseException as error:  # reported by the main thread
            self.error = error
            self.ready.set()


@dataclass
class Latency:
    rate: float
    seconds: float
    encoding: str
    published: int = 0
    achieved_rate: float = 0.0
    recorded_ms: list[float] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)
    missing: int = 0
    rss_peak: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_latency(
    args: argparse.Namespace, base: Settings, tag: str, workdir: Path, stack: ExitStack
) -> Latency:
    assert base.kafka_bootstrap and base.database_url
    url = base.database_url
    schema = f"bench_{tag}_latency"
    create_schema(url, schema)
    if not args.keep_schemas:
        stack.callback(drop_schema, url, schema)
    settings = base.model_copy(
        update={"topic": f"bench-{tag}-latency", "database_schema": schema, "group": f"bench-{tag}-latency"}
    )
    ensure_topics(base.kafka_bootstrap, settings.all_topics, settings.partitions)
    from api.bootstrap import open_store

    open_store(settings, create=True).close()  # the tables: the listener queries them from the start
    log_path = workdir / "latency-ingest.log"
    proc = start_ingest_process(settings, workdir / "ingest", log_path)
    stack.callback(stop_process, proc)
    listener = Listener(url, schema)
    listener.start()
    stack.callback(listener.stopping.set)
    listener.ready.wait(15)
    if listener.error:
        raise RuntimeError(f"LISTEN failed: {listener.error!r}")
    client = kafka_producer(base.kafka_bootstrap)  # as the production Publisher makes it (linger 5 ms)
    stack.callback(client.close)
    result = Latency(args.latency_rate, args.latency_seconds, args.latency_encoding)
    send = _sender(client, settings.topic, result.encoding)

    # Warm up until the consumer has joined its group and stored something.
    warm = StepFactory(args.seed + 1, f"warmup-{tag}", 1).steps(10_000)
    deadline = time.monotonic() + 60
    while not listener.seen:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"no warm-up step seen in 60 s ({count_rows(url, schema)} rows stored, listener error "
                f"{listener.error!r}, ingest exit code {proc.poll()}); the end of {log_path}:\n"
                + log_path.read_text()[-2000:]
            )
        send(next(warm))
        client.flush()
        time.sleep(0.2)
    time.sleep(1.0)
    say(
        f"latency: ingest subprocess (pid {proc.pid}) is consuming; publishing {result.rate:,.0f}/s "
        f"for {result.seconds:g}s"
    )

    published = _steady_publish(args, tag, result, send, psutil.Process(proc.pid))
    client.flush()
    deadline = time.monotonic() + 30
    while not published.keys() <= listener.seen.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
    result.rss_peak = max(result.rss_peak, psutil.Process(proc.pid).memory_info().rss)
    listener.stopping.set()
    listener.join(5)

    # recorded-at, from each stored row's header, against the publish time carried in occurred_at.
    codec = Codec()
    query = sql.SQL("SELECT state FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(EVENTS_TABLE))
    for (state,) in sql_run(url, query):
        header = read_step_state(bytes(state))
        if header.event_id in published:  # not a warm-up step
            occurred = codec.decode(header.wire).occurred_at
            result.recorded_ms.append((header.recorded_at - occurred).total_seconds() * 1000)
    result.visible_ms = [(listener.seen[e] - at) * 1000 for e, at in published.items() if e in listener.seen]
    result.missing = len(published) - len(result.recorded_ms)
    return result


def start_ingest_process(settings: Settings, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """The production consumer, as `receipts ingest` runs it: group subscription, RECEIPTS_* settings."""
    return start_cli_process(settings, ["ingest"], data_dir, log_path)


def start_cli_process(
    settings: Settings, command: Sequence[str], data_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """`python -m api.cli <command>` with `settings` as its RECEIPTS_* environment, output to `log_path`."""
    assert settings.database_url and settings.kafka_bootstrap
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": settings.database_url,
        "RECEIPTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        "RECEIPTS_TOPIC": settings.topic,
        "RECEIPTS_GROUP": settings.group,
        "RECEIPTS_DATA_DIR": str(data_dir),
        "RECEIPTS_PARTITIONS": str(settings.partitions),
        "RECEIPTS_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "RECEIPTS_MAX_POLL_RECORDS": str(settings.max_poll_records),
    }
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *command],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _sender(client: Any, topic: str, encoding: str) -> Callable[[StepEvent], tuple[str, float]]:
    codec = Codec()

    def send(step: StepEvent) -> tuple[str, float]:
        """Stamp occurred_at with the publish time, encode, send; (event id, publish time)."""
        now = time.time()
        step = step.model_copy(update={"occurred_at": datetime.fromtimestamp(now, UTC)})
        client.send(topic, key=step.run_id.encode(), value=codec.encode(step, encoding))
        return step.event_id, now

    return send


def _steady_publish(
    args: argparse.Namespace,
    tag: str,
    result: Latency,
    send: Callable[[StepEvent], tuple[str, float]],
    consumer: psutil.Process,
) -> dict[str, float]:
    """Publish at a fixed schedule (no catching up in bursts beyond the schedule); event id -> time."""
    total = int(result.rate * result.seconds)
    published: dict[str, float] = {}
    start = time.perf_counter()
    next_sample = start
    for i, step in enumerate(StepFactory(args.seed + 2, f"latency-{tag}", args.open_runs).steps(total)):
        delay = start + i / result.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event_id, at = send(step)
        published[event_id] = at
        if time.perf_counter() >= next_sample:
            result.rss_peak = max(result.rss_peak, consumer.memory_info().rss)
            next_sample += 0.5
    result.published = len(published)
    result.achieved_rate = total / (time.perf_counter() - start)
    return published


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # `receipts ingest` stops after its batch
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
