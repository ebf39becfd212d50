"""The worker process that runs the consume loops (raw baseline, pipeline,
backlog), so its RSS is the consumer's and not the generator's."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import resource
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import psutil
from kafka import KafkaConsumer, TopicPartition

from bench.support import TENANT, count_rows
from infra.kafka import consumer as kafka_consumer
from infra.kafka import producer as kafka_producer
from infra.settings import Settings

# --- the worker process: runs the consume loops, so its RSS is the consumer's -------------------


class RssMeter:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0

    def sample(self) -> int:
        rss = int(self.process.memory_info().rss)
        self.peak = max(self.peak, rss)
        return rss


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 15
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no partitions for topic {topic}")
        time.sleep(0.2)


def baseline_round(settings: Settings, events: int, timeout: float) -> dict[str, Any]:
    """Raw kafka-python: the same fetch settings as ingest, no group, nothing per message but a count."""

    meter = RssMeter()
    consumer = kafka_consumer(settings, group_id=None)
    try:
        parts = _partitions(consumer, settings.topic)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        count = polls = 0
        start = time.perf_counter()
        while count < events:
            for records in consumer.poll(timeout_ms=100).values():
                count += len(records)
            polls += 1
            if polls % 16 == 0:
                meter.sample()
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"baseline read {count:,} of {events:,} in {timeout:.0f}s")
        seconds = time.perf_counter() - start
    finally:
        consumer.close()
    meter.sample()
    return {"count": count, "seconds": seconds, "rate": events / seconds, "rss_peak": meter.peak}


BENCH_PUBLISHER = "bench-platform"


def _register(store: Any, settings: Settings, publisher_key: str) -> None:
    """Register the bench's publisher in the round's schema (`receipts publisher add`)."""
    from infra.publishers import PublisherExists, Publishers
    from infra.signing import PublicKey

    publishers = Publishers(store.steps.datastore, settings.database_schema)
    with contextlib.suppress(PublisherExists):  # a two-process round's other worker registered it
        publishers.add(BENCH_PUBLISHER, TENANT, PublicKey.parse(publisher_key), "bench")


def pipeline_round(
    settings: Settings,
    events: int,
    timeout: float,
    spot: dict[str, int],
    last_offsets: dict[int, int],
    sample_every: int = 0,
    partitions: list[int] | None = None,
    policy: bool = True,
    publisher_key: str | None = None,
) -> dict[str, Any]:
    """The real ingest path, built by api.bootstrap.build_ingest, on a manual assignment
    (of `partitions`, default all: two workers on one store split them), routing each
    proposed and edited step by the sample policy unless `policy` is False. With
    `publisher_key` the values are signed: the key is registered first, and every
    signature must hold (a step it does not vouch for would be flagged)."""
    from api.bootstrap import build_ingest, open_store
    from infra.memory import tune_gc

    tune_gc()  # as api.bootstrap.run_ingest does for every ingest process
    meter = RssMeter()
    meter.sample()
    store = open_store(settings, create=True)
    if publisher_key:
        _register(store, settings, publisher_key)
    assert settings.kafka_bootstrap
    dlq = kafka_producer(settings.kafka_bootstrap)
    consumer = kafka_consumer(settings)
    ingest = build_ingest(
        settings, store, consumer_of=lambda _: consumer, letters_producer=dlq, subscribe=False, route=policy
    )
    samples: list[tuple[int, float, int, int]] = []  # (recorded, seconds, rss, cached heads)
    try:
        parts = _partitions(consumer, settings.topic)
        if partitions is not None:
            parts = [tp for tp in parts if tp.partition in partitions]
            events = sum(last_offsets[tp.partition] + 1 for tp in parts)
        consumer.assign(parts)
        ingest.resume(parts)  # what a group assignment does: seek to the stored positions
        totals = ingest.totals
        next_sample = sample_every
        polls = 0
        start = time.perf_counter()
        with ingest.overlapped():  # as Ingest.run: a writer thread applies while the next is prepared
            while totals.recorded < events:
                ingest.poll_once()
                polls += 1
                if sample_every and totals.recorded >= next_sample:
                    samples.append(
                        (totals.recorded, time.perf_counter() - start, meter.sample(), len(ingest.cache))
                    )
                    while next_sample <= totals.recorded:
                        next_sample += sample_every
                elif polls % 8 == 0:
                    meter.sample()
                if totals.dead or totals.duplicates or totals.flagged:
                    raise RuntimeError(f"unexpected: {totals}")
                if polls % 8 == 0 and time.perf_counter() - start > timeout:
                    raise RuntimeError(
                        f"pipeline recorded {totals.recorded:,} of {events:,} in {timeout:.0f}s: {totals}"
                    )
        seconds = time.perf_counter() - start
        lock_held = store.steps.lock_held
        meter.sample()
        decided = ingest.totals.decided
        problems = _verify(
            settings, store, parts, None if partitions else events + decided, spot, last_offsets
        )
    finally:
        ingest.close()
        store.close()
    t = ingest.totals
    return {
        "seconds": seconds,
        "rate": events / seconds,
        "events": events,
        "lock_share": lock_held / seconds,
        "batches": t.batches,
        "recorded": t.recorded,
        "decided": t.decided,
        "retries": t.retries,
        "spot": len(spot),
        "problems": problems,
        "rss_peak": meter.peak,
        "samples": samples,
        "max_rss": max_rss_bytes(),
    }


def _verify(
    settings: Settings,
    store: Any,
    parts: list[TopicPartition],
    events: int | None,
    spot: dict[str, int],
    last_offsets: dict[int, int],
) -> list[str]:
    """After the timing: every event (and the service's decisions) is a row (None: other
    workers share the store), sample runs verify, positions are at the ends."""
    from consumers.ingest import position_name
    from domain.run import run_uuid
    from domain.steps import SERVICE

    assert settings.database_url
    problems = []
    rows = count_rows(settings.database_url, settings.database_schema)
    if events is not None and rows != events:
        problems.append(f"events table holds {rows:,} rows, expected {events:,}")
    for run_id, length in spot.items() if events is not None else ():
        run = store.run(TENANT, run_id)
        links = store.steps.stored_links(run_uuid(TENANT, run_id))
        published = sum(1 for e in run.entries if e.step.actor != SERVICE)
        if not (run.receipt().integrity.verified and published == length and len(run.entries) == len(links)):
            problems.append(
                f"run {run_id}: {published} published entries of {len(run.entries)}, {len(links)} rows, "
                f"expected {length}; integrity {run.receipt().integrity}"
            )
    stored = store.steps.positions(position_name(tp.topic, tp.partition) for tp in parts)
    for tp in parts:
        stored_position = stored.get(position_name(tp.topic, tp.partition))
        position = stored_position.offset if stored_position else None
        if position != last_offsets.get(tp.partition):
            problems.append(
                f"{tp.topic}/{tp.partition}: stored position {position}, "
                f"last offset {last_offsets.get(tp.partition)}"
            )
    return problems


WORKER_COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "baseline": baseline_round,
    "pipeline": pipeline_round,
}


def _worker_main(conn: Any) -> None:
    # The parent handles Ctrl-C and ends this process; it must not die half-way on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    while True:
        command, kwargs = conn.recv()
        if command == "stop":
            conn.send(("ok", {"max_rss": max_rss_bytes()}))
            return
        try:
            kwargs["settings"] = Settings(**kwargs["settings"])
            handler = WORKER_COMMANDS[command]
            conn.send(("ok", handler(**kwargs)))
        except Exception:  # the parent reports it
            conn.send(("error", traceback.format_exc()))


class Worker:
    """One spawned process that runs consume loops on request."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), name="bench-ingest-worker")
        self.process.start()
        child.close()

    def call(self, command: str, settings: Settings, **kwargs: Any) -> dict[str, Any]:
        self.send(command, settings, **kwargs)
        return self.receive(command)

    def send(self, command: str, settings: Settings, **kwargs: Any) -> None:
        """Start a command; `receive` waits for its answer (workers then run side by side)."""
        self.conn.send((command, {"settings": settings.model_dump(mode="json"), **kwargs}))

    def receive(self, command: str) -> dict[str, Any]:
        try:
            while not self.conn.poll(1.0):
                if not self.process.is_alive():
                    raise RuntimeError(f"the worker died (exit code {self.process.exitcode})")
        except BaseException:  # Ctrl-C: end the loop now, before its schema is dropped under it
            self.kill()
            raise
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{command} failed in the worker:\n{result}")
        return dict(result)

    def close(self) -> int:
        """Stop the worker; returns its lifetime peak RSS in bytes (0 if unknown)."""
        peak = 0
        if self.process.is_alive():
            with contextlib.suppress(OSError, EOFError):
                self.conn.send(("stop", {}))
                if self.conn.poll(10):
                    status, result = self.conn.recv()
                    if status == "ok" and isinstance(result, dict):
                        peak = int(result.get("max_rss", 0))
            self.process.join(10)
        self.kill()
        return peak

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
