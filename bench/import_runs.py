"""Import benchmark: a realistic chat-transcript file (100 MB by default) from file to stored
receipts, through the real broker and ingest, beside raw baselines measured in the same run.

    .venv/bin/python -m bench.import_runs                  # 100 MB
    .venv/bin/python -m bench.import_runs --megabytes 10

On one fresh stack (embedded PostgreSQL and Tansu unless RECEIPTS_DATABASE_URL /
RECEIPTS_KAFKA_BOOTSTRAP are set):
- baselines: streaming the file's JSON a run at a time (no events), the file -> events transform
  with no broker, a raw kafka-python produce of as many ~event-sized values, and a raw consume
  of the imported topic (bench.worker.baseline_round, as bench.ingest measures it);
- end to end: `receipts ingest` runs as a process of its own (joined and warm first), then
  `receipts import FILE --mapping M` runs as the user would start it; the time is from its start
  until every event it published (and the service's decision after each proposed step) is
  stored. The import process's peak RSS shows the file is streamed (compare --megabytes 10).

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from uuid import uuid4

import psutil

from bench.latency import start_cli_process, start_ingest_process, stop_process
from bench.support import (
    Published,
    count_rows,
    create_schema,
    prepare_process,
    publish,
    say,
    start_servers,
)
from bench.transcripts import MAPPING, TranscriptWriter
from bench.worker import baseline_round
from domain.steps import StepEvent
from infra.importing import Imported, import_file, load_mapping
from infra.importing.base import JsonValues
from infra.kafka import ensure_topics
from infra.settings import Settings
from schemas import Codec

TARGET = 5_000  # events a second, file -> stored (issue 19)


class Tally:
    """A publisher that only counts (and keeps a sample of encoded values for the raw produce)."""

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.codec = Codec()
        self.sample: list[tuple[bytes, bytes]] = []

    def publish(self, step: StepEvent) -> None:
        self.types[step.type] += 1
        if len(self.sample) < 20_000:
            self.sample.append((step.run_id.encode(), self.codec.encode(step, "json")))

    def flush(self, timeout: float = 30.0) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the import may take")
    args = parser.parse_args(argv)
    workdir = prepare_process()
    with ExitStack() as stack:
        base, described = start_servers(stack, workdir, Settings())
        assert base.database_url and base.kafka_bootstrap
        path = workdir / "transcripts.json"
        started = time.perf_counter()
        runs = TranscriptWriter(args.seed).write(path, args.megabytes)
        size = path.stat().st_size
        say(f"wrote {runs:,} runs, {size / 2**20:,.1f} MiB in {time.perf_counter() - started:.1f}s")

        parse_s, parsed = _parse(path)
        tally, imported = Tally(), Imported()
        started = time.perf_counter()
        import_file(path, tally, imported, mapping=load_mapping(MAPPING))
        transform_s = time.perf_counter() - started
        events = imported.events
        say(f"transform: {events:,} events in {transform_s:.1f}s")
        settings = _fresh(base)
        produced = _raw_produce(base, settings, tally, events)

        create_schema(base.database_url, settings.database_schema)
        from api.bootstrap import migrate

        migrate(settings)
        ingest = start_ingest_process(settings, workdir / "ingest", workdir / "ingest.log")
        stack.callback(stop_process, ingest)
        expected = events + tally.types["action.proposed"]  # the service decides each proposed step
        _warm_up(settings, workdir)
        before = count_rows(base.database_url, settings.database_schema)
        started = time.perf_counter()
        command = ["import", str(path), "--mapping", str(MAPPING)]
        proc = start_cli_process(settings, command, workdir / "import", workdir / "import.log")
        peak = RssPeak(proc.pid)
        stored = _wait_stored(settings, before + expected, args.timeout, ingest, proc, workdir / "import.log")
        end_to_end_s = time.perf_counter() - started
        proc.wait(60)
        import_rss = peak.stop()
        published_s = _published_after(workdir / "import.log")
        raw = baseline_round(settings, events, args.timeout)

    rate = events / end_to_end_s
    report = [
        f"# import benchmark ({described})",
        f"file: {size / 2**20:,.1f} MiB, {runs:,} runs ({parsed:,} parsed), {events:,} events, "
        f"{expected:,} stored with the service's decisions ({stored - before:,} counted)",
        "",
        "| what | rate |",
        "|---|---|",
        f"| baseline: stream the file's JSON, a run at a time | {size / 2**20 / parse_s:,.1f} MiB/s |",
        f"| baseline: raw kafka-python produce, as many values | {produced.count / produced.seconds:,.0f} "
        "msg/s |",
        f"| baseline: raw kafka-python consume of the imported topic | {raw['rate']:,.0f} msg/s |",
        f"| file -> events, no broker | {events / transform_s:,.0f} events/s |",
        f"| file -> published (`receipts import` alone, its own progress line) | {events / published_s:,.0f} "
        "events/s |",
        f"| **file -> stored** (`receipts import` + `receipts ingest`) | **{rate:,.0f} events/s** "
        f"({rate / raw['rate']:.2f}x raw consume; target {TARGET:,}) |",
        "",
        f"`receipts import` peak RSS: {import_rss / 2**20:,.0f} MiB for a {size / 2**20:,.0f} MiB file",
        f"exit code of the import: {proc.returncode}",
    ]
    print("\n".join(report))
    return 0 if rate >= TARGET and proc.returncode == 0 else 1


def _parse(path: Path) -> tuple[float, int]:
    """Seconds to stream the file's JSON a run at a time, and how many runs."""
    with path.open(encoding="utf-8") as stream:
        started = time.perf_counter()
        parsed = sum(1 for _ in JsonValues(stream).values())
        return time.perf_counter() - started, parsed


def _fresh(base: Settings) -> Settings:
    tag = uuid4().hex[:8]
    names = {"topic": f"bench-import-{tag}", "group": f"bench-import-{tag}"}
    settings = base.model_copy(update={**names, "database_schema": f"bench_import_{tag}"})
    assert base.kafka_bootstrap
    ensure_topics(base.kafka_bootstrap, settings.all_topics, settings.partitions)
    return settings


def _raw_produce(base: Settings, settings: Settings, tally: Tally, events: int) -> Published:
    """A raw kafka-python produce of as many values as the import publishes, sampled from them."""
    assert base.kafka_bootstrap
    topic = f"{settings.topic}-raw"
    ensure_topics(base.kafka_bootstrap, [topic], settings.partitions)
    values = (tally.sample[i % len(tally.sample)] for i in range(events))
    produced = publish(base.kafka_bootstrap, topic, values)
    say(f"raw produce: {produced.count / produced.seconds:,.0f}/s")
    return produced


def _warm_up(settings: Settings, workdir: Path) -> None:
    """One run imported and stored first: the ingest process has joined its group."""
    assert settings.database_url
    warm = workdir / "warm.json"
    TranscriptWriter(0, "warm-up").write(warm, 0.001)
    before = count_rows(settings.database_url, settings.database_schema)
    subprocess.run(
        [sys.executable, "-m", "api.cli", "import", str(warm), "--mapping", str(MAPPING)],
        check=True,
        capture_output=True,
        env=_env(settings),
    )
    deadline = time.monotonic() + 120
    while count_rows(settings.database_url, settings.database_schema) == before:
        if time.monotonic() > deadline:
            raise RuntimeError("the ingest process stored nothing in 120 s")
        time.sleep(0.2)
    time.sleep(1.0)


def _env(settings: Settings) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        "RECEIPTS_TOPIC": settings.topic,
        "RECEIPTS_PARTITIONS": str(settings.partitions),
    }


def _published_after(log: Path) -> float:
    """The import's own seconds, from the rate on its closing progress line."""
    lines = [
        line for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if "done" in line
    ]
    rate = float(lines[-1].split("events/s")[0].split()[-1].replace(",", "")) if lines else 0.0
    count = float(lines[-1].split(" events")[0].split()[-1].replace(",", "")) if lines else 0.0
    return count / rate if rate else float("inf")


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "(nothing yet)"


class RssPeak:
    """The import process's own peak resident memory, sampled every 20 ms until it exits
    (RUSAGE_CHILDREN would report the largest child, the ingest process among them)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return  # it exited
            self._done.wait(0.02)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def _wait_stored(
    settings: Settings,
    rows: int,
    timeout: float,
    ingest: subprocess.Popen[bytes],
    importing: subprocess.Popen[bytes],
    log: Path,
) -> int:
    assert settings.database_url
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        stored = count_rows(settings.database_url, settings.database_schema)
        if stored >= rows:
            return stored
        if importing.poll() not in (None, 0):
            raise RuntimeError(f"the import exited {importing.poll()}: {log.read_text()[-2000:]}")
        if ingest.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{stored:,} of {rows:,} rows stored (ingest exit code {ingest.poll()})")
        if time.monotonic() - last >= 10:
            say(f"  stored {stored:,} of {rows:,}; the import says: {_last_line(log)}")
            last = time.monotonic()
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
