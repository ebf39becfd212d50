"""The benchmark report: a plain table and the same as Markdown for BENCHMARKS.md."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.corpus import HOT_RECORDS, HOT_SHARE, SOURCE_VERSIONS, Loaded
from bench.latency import Latency, percentile
from bench.lookups import Timings
from bench.rebuild import Rebuilt
from bench.steps import Dataset
from bench.support import sql_run
from bench.visible import Visible
from infra.settings import Settings
from projections.catalog import VIEW_NAMES

# --- report ------------------------------------------------------------------------------------


@dataclass
class Throughput:
    encoding: str
    topic: str
    last_offsets: dict[int, int]
    produce_rate: float = 0.0
    baseline: list[float] = field(default_factory=list)
    pipeline: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    lock_share: list[float] = field(default_factory=list)
    two_processes: list[float] = field(default_factory=list)
    # Pipeline rounds without the policy (--compare-policy), each paired with the same baseline.
    without_policy: list[float] = field(default_factory=list)
    # Pipeline rounds with a checkpointer process beside them (--compare-checkpoints).
    with_checkpoints: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """The median of the paired per-round ratios: a baseline measured beside its own
        pipeline round (raw consume swings between rounds)."""
        return statistics.median(p / b for p, b in zip(self.pipeline, self.baseline, strict=True))

    @property
    def ratio_with_checkpoints(self) -> float:
        return statistics.median(p / b for p, b in zip(self.with_checkpoints, self.baseline, strict=True))

    @property
    def ratio_without_policy(self) -> float:
        return statistics.median(p / b for p, b in zip(self.without_policy, self.baseline, strict=True))


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {ram:.1f} GiB RAM, {model}"


def server_facts(url: str) -> str:
    try:
        rows = sql_run(
            url,
            "SELECT current_setting('server_version'), current_setting('fsync'), "
            "current_setting('synchronous_commit')",
        )
    except psycopg.Error as error:
        return f"unknown ({error})"
    v, fsync, sync = rows[0]
    return f"{v} (fsync {fsync}, synchronous_commit {sync})"


@dataclass
class Report:
    title: str = "Ingest benchmark"
    rows: list[tuple[str, str]] = field(default_factory=list)
    rounds: list[tuple[str, ...]] = field(default_factory=list)
    backlog: list[tuple[str, ...]] = field(default_factory=list)
    # Further tables, each a title and rows (the first row is the header).
    tables: list[tuple[str, list[tuple[str, ...]]]] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.rows.append((label, value))

    def _tables(self) -> list[tuple[str, list[tuple[str, ...]]]]:
        return [("Rounds", self.rounds), ("Backlog RSS samples", self.backlog), *self.tables]

    def plain(self) -> str:
        width = max(len(label) for label, _ in self.rows)
        out = ["", self.title.upper(), "=" * len(self.title)] + [
            f"{label.ljust(width)}  {value}" for label, value in self.rows
        ]
        for title, table in self._tables():
            if len(table) > 1:
                widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
                out += ["", title[0].lower() + title[1:]]
                out += [
                    "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in table
                ]
        return "\n".join(out)

    def markdown(self, date: str) -> str:
        out = [f"### {self.title}, {date}", "", "| | |", "|---|---|"]
        out += [f"| {label} | {value} |" for label, value in self.rows]
        for title, table in self._tables():
            if len(table) > 1:
                out += ["", f"{title}:", "", "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
                out += ["| " + " | ".join(row) + " |" for row in table[1:]]
        return "\n".join(out)


def add_environment(r: Report, date: str, packages: Sequence[str]) -> None:
    r.add("date (UTC)", date)
    r.add("machine", machine())
    r.add("python", f"{platform.python_version()} ({platform.python_implementation()})")
    r.add("packages", ", ".join(f"{p} {version(p)}" for p in packages))


def build_report(
    args: argparse.Namespace,
    base: Settings,
    servers: str,
    data: Dataset | None,
    throughput: list[Throughput],
    worker_peak: int,
    latency: Latency | None,
    backlog: dict[str, Any] | None,
    date: str,
) -> Report:
    r = Report()
    add_environment(
        r, date, ("kafka-python", "psycopg", "psycopg-binary", "eventsourcing", "fastavro", "pydantic")
    )
    r.add("crc32c", f"present ({version('crc32c')})" if find_spec("crc32c") else "ABSENT (pure-Python CRC)")
    assert base.database_url
    r.add("servers", servers)
    r.add("postgresql", server_facts(base.database_url))
    r.add(
        "consumer settings",
        f"fetch_max_wait_ms {base.fetch_max_wait_ms}, max_poll_records "
        f"{base.max_poll_records}, {base.partitions} partitions",
    )
    if data is not None:
        r.add(
            "events (N)",
            f"{args.events:,} in {len(data.runs):,} runs of 5-30 steps, "
            f"{args.open_runs} runs open at once, keyed by run_id",
        )
        r.add(
            "policy",
            "the sample policy routes every proposed and edited step"
            if args.policy
            else "none (--no-policy)",
        )
        for encoding in args.encodings:
            mean, lo, hi = data.sizes(encoding)
            r.add(f"value size {encoding}", f"mean {mean:,.0f} B (min {lo:,}, max {hi:,})")
    for t in throughput:
        if not t.pipeline:
            continue
        label = f"{t.encoding}: raw consume / pipeline / ratio"
        r.add(
            label,
            f"{statistics.median(t.baseline):,.0f} msg/s / {statistics.median(t.pipeline):,.0f} "
            f"events/s / {t.ratio:.2f}x (median of {len(t.pipeline)} paired round ratio(s); target >= 0.35x, "
            f"aim 0.5x: {'met' if t.ratio >= 0.35 else 'NOT met'})",
        )
        if t.without_policy:
            bare, routed = t.ratio_without_policy, t.ratio
            r.add(
                f"{t.encoding}: ratio with / without policy",
                f"{routed:.2f}x with the sample policy, {bare:.2f}x without "
                f"({routed / bare - 1:+.0%}; target within 10%: "
                f"{'met' if routed >= bare * 0.9 else 'NOT met'})",
            )
        if t.with_checkpoints:
            signed, plain = t.ratio_with_checkpoints, t.ratio
            r.add(
                f"{t.encoding}: ratio with / without checkpoints",
                f"{signed:.2f}x with a checkpointer closing one every second, {plain:.2f}x without "
                f"({signed / plain - 1:+.0%}; target within 10%: "
                f"{'met' if signed >= plain * 0.9 else 'NOT met'})",
            )
        if t.lock_share:
            share = statistics.median(t.lock_share)
            r.add(
                f"{t.encoding}: events-table lock held",
                f"{share:.0%} of the pipeline's wall time (median; aim < 40%: "
                f"{'met' if share < 0.4 else 'NOT met'})",
            )
        if t.two_processes:
            one, two = statistics.median(t.pipeline), statistics.median(t.two_processes)
            r.add(
                f"{t.encoding}: two processes, one store",
                f"{two:,.0f} events/s beside {one:,.0f} with one ({two / one:.2f}x; must not fall: "
                f"{'met' if two >= one * 0.95 else 'NOT met'})",
            )
        r.add(
            f"{t.encoding}: produce",
            f"{t.produce_rate:,.0f} msg/s (linger 10 ms, acks=all; not in the ratio)",
        )
    if throughput and throughput[0].pipeline:
        r.add(
            "peak RSS, throughput consumer",
            f"{mib(worker_peak)} (worker process, ru_maxrss over all "
            f"rounds; per pipeline round {', '.join(mib(x) for t in throughput for x in t.rss)})",
        )
        r.rounds.append(
            ("round", "encoding", "raw consume msg/s", "pipeline events/s", "ratio", "batches", "peak RSS")
        )
        for i in range(len(throughput[0].pipeline)):
            for t in throughput:
                r.rounds.append(
                    (
                        str(i + 1),
                        t.encoding,
                        f"{t.baseline[i]:,.0f}",
                        f"{t.pipeline[i]:,.0f}",
                        f"{t.pipeline[i] / t.baseline[i]:.2f}",
                        str(t.batches[i]),
                        mib(t.rss[i]),
                    )
                )
    if latency is not None:
        add_latency(r, latency)
    if backlog is not None:
        samples = backlog["samples"]
        r.add(
            "backlog",
            f"{args.backlog:,} {args.backlog_encoding} events ingested at "
            f"{backlog['rate']:,.0f} events/s; RSS {mib(samples[0][2]) if samples else '?'} at the "
            f"first sample, peak "
            f"{mib(backlog['rss_peak'])} (ru_maxrss {mib(backlog['max_rss'])})",
        )
        r.backlog.append(("recorded", "seconds", "RSS", "run heads cached"))
        r.backlog += [(f"{n:,}", f"{at:.1f}", mib(rss), f"{heads:,}") for n, at, rss, heads in samples]
    return r


def add_latency(r: Report, latency: Latency) -> None:
    def stats(ms: list[float]) -> str:
        if not ms:
            return "no events"
        return f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"

    r.add(
        "latency load",
        f"{latency.published:,} {latency.encoding} events at "
        f"{latency.achieved_rate:,.0f}/s (asked {latency.rate:,.0f}/s for {latency.seconds:g}s) "
        f"into `api.cli ingest` (group subscription); {latency.missing} not stored",
    )
    p99 = percentile(latency.recorded_ms, 0.99) if latency.recorded_ms else math.inf
    r.add(
        "latency, publish -> recorded-at",
        f"{stats(latency.recorded_ms)} (target p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'})",
    )
    r.add(
        "latency, publish -> visible",
        f"{stats(latency.visible_ms)} (committed row seen by a LISTENing reader)",
    )
    r.add("peak RSS, latency consumer", mib(latency.rss_peak))


# --- the query benchmark's report -----------------------------------------------------------------

REBUILD_TARGET = 20_000  # events/s, all views
VISIBLE_TARGET_MS = 250.0
VIEW_TABLES = ("view_runs", "view_receipts", "view_touches", "view_sources", "view_findings", "view_timeline")


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "-"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def query_report(
    args: argparse.Namespace,
    settings: Settings,
    servers: str,
    date: str,
    loaded: Loaded,
    baseline: float | None,
    rebuilt: Rebuilt,
    settled: float,
    timings: dict[str, Timings],
    visible: Visible | None,
) -> Report:
    assert settings.database_url
    r = Report(title="Query benchmark")
    add_environment(
        r,
        date,
        ("psycopg", "psycopg-binary", "eventsourcing", "pydantic", "fastapi", "uvicorn", "kafka-python"),
    )
    r.add("servers", servers)
    r.add("postgresql", server_facts(settings.database_url))
    r.add(
        "store",
        f"{loaded.runs:,} runs, {loaded.events:,} events ({loaded.unfinished:,} runs without "
        f"run.finished), stamped from {loaded.templates:,} StepFactory runs; JSON values, mean "
        f"{loaded.bytes / loaded.events:,.0f} B; {args.open_runs} runs interleaved; one target record "
        f"a run among {loaded.entities:,}, sources among {loaded.sources:,} in {SOURCE_VERSIONS} versions, "
        f"{HOT_RECORDS:.0%} of each taking {HOT_SHARE:.0%} of the uses",
    )
    r.add(
        "load",
        f"{loaded.events / loaded.seconds:,.0f} events/s ({loaded.seconds:,.0f}s) by binary COPY, "
        f"{args.runs_per_batch:,} runs a transaction, generation included",
    )
    r.add("on disk", _sizes(settings.database_url, settings.database_schema))
    _add_rebuild(r, args, baseline, rebuilt)
    r.add("settle", f"VACUUM (ANALYZE) of every table, then CHECKPOINT, before the queries: {settled:,.0f}s")
    n = len(next(iter(timings.values())).direct_ms)
    r.add(
        "queries",
        f"{n:,} timed per question and path after {args.warmup} untimed, keys of random "
        "loaded runs; HTTP: `receipts serve` (uvicorn, 1 process), one keep-alive connection; "
        "verdict on the HTTP p99",
    )
    r.tables.append(("Query latencies (ms)", _latency_table(timings)))
    if visible is not None:
        _add_visible(r, visible)
    return r


def _sizes(url: str, schema: str) -> str:
    tables = ("receipts_events", *VIEW_TABLES)
    sizes = sql_run(
        url,
        "SELECT pg_size_pretty(pg_database_size(current_database())), "
        + ", ".join(f"pg_size_pretty(pg_total_relation_size('{schema}.{t}'))" for t in tables),
    )[0]
    return f"database {sizes[0]}; " + ", ".join(f"{t} {s}" for t, s in zip(tables, sizes[1:], strict=True))


def _add_rebuild(r: Report, args: argparse.Namespace, baseline: float | None, rebuilt: Rebuilt) -> None:
    if baseline:
        r.add(
            "rebuild baseline",
            f"{baseline:,.0f} events/s: eventsourcing's ProjectionRunner, one row "
            f"and its tracking row per event in one transaction, first {args.baseline_events:,} "
            "events",
        )
    ratio = f", {rebuilt.rate / baseline:.1f}x the baseline" if baseline else ""
    timed = "the whole log"
    if rebuilt.rest_events:
        timed = (
            f"the first {rebuilt.events:,} events; the other {rebuilt.rest_events:,} in "
            f"{rebuilt.rest_seconds:,.0f}s ({rebuilt.rest_events / rebuilt.rest_seconds:,.0f} "
            "events/s)"
        )
    r.add(
        "projection rebuild",
        f"{rebuilt.rate:,.0f} events/s, all {len(VIEW_NAMES)} views, {rebuilt.events:,} events "
        f"in {rebuilt.seconds:,.0f}s, timed over {timed}{ratio} (target >= 20k events/s: "
        f"{_verdict(rebuilt.rate >= REBUILD_TARGET)})",
    )


def _latency_table(timings: dict[str, Timings]) -> list[tuple[str, ...]]:
    header = (
        "question",
        "target p99",
        "direct p50",
        "p95",
        "p99",
        "HTTP p50",
        "p95",
        "p99",
        "runs/answer",
        "verdict",
    )
    table: list[tuple[str, ...]] = [header]
    for t in timings.values():
        verdict = ""
        if t.target_ms is not None:
            verdict = _verdict(percentile(t.http_ms or t.direct_ms, 0.99) < t.target_ms)
        if t.http_errors:
            verdict += f" ({t.http_errors} HTTP errors)"
        sizes = f"{statistics.mean(t.sizes):.1f} (max {max(t.sizes)})" if t.sizes else "-"
        target = f"< {t.target_ms:g} ms" if t.target_ms else "floor"
        table.append(
            (
                t.name,
                target,
                *(_ms(t.direct_ms, q) for q in (0.5, 0.95, 0.99)),
                *(_ms(t.http_ms, q) for q in (0.5, 0.95, 0.99)),
                sizes,
                verdict,
            )
        )
    return table


def _add_visible(r: Report, visible: Visible) -> None:
    ms = visible.latencies_ms
    met = bool(ms) and percentile(ms, 0.99) < VISIBLE_TARGET_MS and not visible.missing
    r.add(
        "publish -> visible load",
        f"{visible.published:,} events at {visible.achieved_rate:,.0f}/s "
        f"(asked {visible.rate:,.0f}/s for {visible.seconds:g}s) through the Publisher; `receipts "
        f"ingest` and `receipts project` as processes; every {visible.sample_every}th event waited "
        "on",
    )
    r.add(
        "publish -> visible in GET /runs/{id}/receipt",
        f"p50 {_ms(ms, 0.5)} ms, p95 {_ms(ms, 0.95)} ms, p99 {_ms(ms, 0.99)} ms, max "
        f"{max(ms, default=0):.1f} ms over {len(ms):,} events; {visible.missing} not visible within "
        f"10 s (target p99 < 250 ms: {_verdict(met)})",
    )
