"""Query-side benchmark: a large store, its projection rebuild, incident-question
latencies, and publish -> visible in the receipt API.

    .venv/bin/python -m bench.queries                      # 1M runs (~14M events): the issue's size
    .venv/bin/python -m bench.queries --runs 20000         # a quick check, ~2 min
    .venv/bin/python -m bench.queries --markdown --json out.json

One run, on a fresh schema of embedded PostgreSQL (or `--database-url`) and the
embedded Tansu broker (or RECEIPTS_KAFKA_BOOTSTRAP):

1. load: `--runs` runs stamped from StepFactory template runs (bench/corpus.py) are
   written straight into `receipts_events` with the ingest path's binary COPY
   (`StepRecorder.record_batch`), chained and versioned as ingest would; then ANALYZE.
2. rebuild: `api.service_cli.rebuild` of every view over the whole log (events/s),
   beside the baseline: eventsourcing's own ProjectionRunner, one transaction per
   event, writing one row per event, over the first `--baseline-events` events.
3. queries: each question over `--samples` random keys of loaded runs after a
   warm-up, through `Queries` directly and through the HTTP API (`receipts serve` in
   a subprocess, one keep-alive connection); the floor is a raw psycopg read of a
   stored receipt by primary key.
4. publish -> visible: `receipts ingest` and `receipts project` as processes of
   their own on the loaded store, runs published at `--visible-rate` through the
   Publisher API, and a client waiting on sampled events with
   `GET /runs/{id}/receipt?after_event=`.

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from psycopg import sql

from api.bootstrap import build_projections, build_queries, open_store
from bench.corpus import Loaded, Stamper, build_templates, first_start, load
from bench.latency import percentile
from bench.lookups import FLOOR, Api, Timings, questions, start_api, time_direct, time_floor, time_http
from bench.pages import QUEUE, RECEIPT, time_pages
from bench.rebuild import library_baseline, rebuild_views
from bench.report import Report, query_report
from bench.support import checkpoint, create_schema, drop_schema, prepare_process, say, sql_run, start_servers
from bench.visible import run_visible
from infra.settings import Settings
from infra.store import RunStore

BYTES_PER_RUN = 40_000  # on disk with every view and some WAL (29 KB measured at 20k runs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.queries",
        description="Projection rebuild, query latencies and publish->visible on a large store "
        "(embedded PostgreSQL and Tansu unless told otherwise).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=1_000_000, help="runs to load (~14 events each)")
    p.add_argument("--templates", type=int, default=2000, help="StepFactory runs to stamp the runs from")
    p.add_argument("--open-runs", type=int, default=200, help="runs interleaved in the log at once")
    p.add_argument("--runs-per-batch", type=int, default=1000, help="runs per COPY transaction")
    p.add_argument("--days", type=float, default=90, help="the loaded runs start over this many days")
    p.add_argument("--unfinished", type=float, default=0.05, help="share of runs left without run.finished")
    p.add_argument("--output-bytes", type=int, default=150, help="size of a proposed output")
    p.add_argument("--excerpt-bytes", type=int, default=200, help="size of a source excerpt")
    p.add_argument(
        "--baseline-events",
        type=int,
        default=20_000,
        help="events eventsourcing's per-event runner applies for the baseline (0: skip)",
    )
    p.add_argument(
        "--rebuild-events",
        type=int,
        default=0,
        metavar="N",
        help="time the rebuild over the first N log positions only, then apply the rest "
        "(timed apart) so the views still hold every run; 0: time the whole rebuild",
    )
    p.add_argument(
        "--samples",
        type=int,
        help="timed queries per question and path (default: runs/40, between 100 and 2,000)",
    )
    p.add_argument("--warmup", type=int, default=50, help="untimed queries per question and path first")
    p.add_argument("--visible-seconds", type=float, default=30, help="publish->visible phase (0: skip)")
    p.add_argument("--visible-rate", type=float, default=1000, help="events/s published in that phase")
    p.add_argument("--visible-sample-every", type=int, default=10, help="wait on every Nth published event")
    p.add_argument(
        "--database-url",
        help="an existing PostgreSQL (default: RECEIPTS_DATABASE_URL, else an embedded one under /tmp)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep-schema", action="store_true", help="keep the schema on an external database")
    p.add_argument("--markdown", action="store_true", help="also print the report as Markdown")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the report as JSON")
    args = p.parse_args(argv)
    if args.runs < 100:
        p.error("--runs must be at least 100")
    if args.samples is None:
        args.samples = min(2000, max(100, args.runs // 40))
    return args


# --- phases ------------------------------------------------------------------------------------


def load_store(args: argparse.Namespace, store: RunStore) -> Loaded:
    say(f"building {args.templates:,} template runs with StepFactory")
    templates = build_templates(args.templates, args.seed, args.output_bytes, args.excerpt_bytes)
    stamper = Stamper(templates, args.runs, args.seed, first_start(args.days), args.days, args.unfinished)
    shown = [0.0]

    def progress(loaded: Loaded) -> None:
        if loaded.seconds - shown[0] >= 15 or loaded.runs == args.runs:
            shown[0] = loaded.seconds
            say(
                f"load: {loaded.runs:,} runs, {loaded.events:,} events in {loaded.seconds:.0f}s "
                f"({loaded.events / loaded.seconds:,.0f} events/s)"
            )

    say(f"loading {args.runs:,} runs by binary COPY, {args.runs_per_batch:,} runs a transaction")
    loaded = load(store.steps, stamper, args.open_runs, args.runs_per_batch, progress)
    loaded.templates = len(templates)
    return loaded


def check_views(url: str, schema: str, loaded: Loaded) -> None:
    """Every loaded run and event made it into the views (an undecodable row would be skipped)."""
    count = sql.SQL("SELECT (SELECT count(*) FROM {s}.view_runs), (SELECT count(*) FROM {s}.view_timeline)")
    runs, steps = sql_run(url, count.format(s=sql.Identifier(schema)))[0]
    if (runs, steps) != (loaded.runs, loaded.events):
        raise RuntimeError(
            f"views hold {runs:,} runs and {steps:,} steps; loaded {loaded.runs:,} runs and "
            f"{loaded.events:,} events"
        )


def settle(url: str, schema: str) -> float:
    """VACUUM (ANALYZE) every table of the schema, then CHECKPOINT: what autovacuum would soon
    do after a load and a rebuild. Queries timed while it ran were several times slower."""
    say("settling: VACUUM (ANALYZE) of every table, then CHECKPOINT")
    started = time.perf_counter()
    for (table,) in sql_run(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", schema):
        sql_run(url, sql.SQL("VACUUM (ANALYZE) {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    checkpoint(url)
    return time.perf_counter() - started


def finding_codes(url: str, schema: str) -> list[str]:
    rows = sql_run(url, sql.SQL("SELECT DISTINCT code FROM {}.view_findings").format(sql.Identifier(schema)))
    return [*sorted(row[0] for row in rows), "final_state_unclear"]  # the one judged at read time


def run_queries(
    args: argparse.Namespace, settings: Settings, store: RunStore, loaded: Loaded, api: Api
) -> dict[str, Timings]:
    assert settings.database_url
    asked = questions(loaded.samples, finding_codes(settings.database_url, settings.database_schema))
    timings = {q.name: Timings(q.name, q.target_ms) for q in asked}
    queries = build_queries(settings, store)
    say(f"queries: {len(asked)} questions x {args.samples:,} random keys, direct (Queries)")
    time_direct(queries, asked, timings, args.samples, args.warmup, args.seed + 1)
    floor = Timings(FLOOR, None)
    floor.direct_ms = time_floor(
        settings.database_url,
        settings.database_schema,
        loaded.samples,
        args.samples,
        args.warmup,
        args.seed + 2,
    )
    say(f"queries: the same through the HTTP API on port {api.port}")
    time_http(api, asked, timings, args.samples, args.warmup, args.seed + 3)
    pages = time_pages(settings, api, loaded.samples, args.samples, args.warmup, args.seed + 4)
    for name in (QUEUE, RECEIPT):
        ms = pages[name].http_ms
        say(f"{name}: p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms" if ms else name)
    return {**timings, FLOOR: floor, **pages}


def disk_check(workdir: Path, runs: int) -> None:
    free = shutil.disk_usage(workdir).free
    if free < runs * BYTES_PER_RUN:
        raise SystemExit(
            f"{runs:,} runs need about {runs * BYTES_PER_RUN / 2**30:,.0f} GiB under {workdir}; "
            f"{free / 2**30:,.0f} GiB are free"
        )


# --- main --------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, workdir: Path, date: str, stack: ExitStack) -> Report:
    tag = uuid4().hex[:6]
    base = Settings()
    if args.database_url:
        base = base.model_copy(update={"database_url": args.database_url})
    embedded = not base.database_url
    if embedded:
        disk_check(workdir, args.runs)
    base, servers = start_servers(stack, workdir, base)
    url = base.database_url
    assert url
    schema = f"bench_q_{tag}"
    create_schema(url, schema)
    if not embedded and not args.keep_schema:
        stack.callback(drop_schema, url, schema)
    settings = base.model_copy(
        update={"database_schema": schema, "topic": f"bench-{tag}-visible", "group": f"bench-{tag}-visible"}
    )
    store = open_store(settings, create=True)
    stack.callback(store.close)
    loaded = load_store(args, store)
    sql_run(url, sql.SQL("ANALYZE {}.receipts_events").format(sql.Identifier(schema)))
    baseline = None
    if args.baseline_events > 0:
        say(f"baseline: eventsourcing's runner over the first {args.baseline_events:,} events")
        baseline = library_baseline(settings, min(args.baseline_events, loaded.events))
        say(f"baseline: {baseline:,.0f} events/s")
    rebuilt = rebuild_views(build_projections(settings, store), url, args.rebuild_events)
    say(f"rebuild: {rebuilt.rate:,.0f} events/s over {rebuilt.events:,} events")
    check_views(url, schema, loaded)
    settled = settle(url, schema)
    api = start_api(settings, workdir, stack)
    timings = run_queries(args, settings, store, loaded, api)
    visible = None
    if args.visible_seconds > 0:
        visible = run_visible(
            settings,
            api,
            args.visible_rate,
            args.visible_seconds,
            args.visible_sample_every,
            args.seed,
            workdir,
            stack,
        )
    return query_report(args, settings, servers, date, loaded, baseline, rebuilt, settled, timings, visible)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    workdir = prepare_process()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        with ExitStack() as stack:
            report = measure(args, workdir, date, stack)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    print(report.plain())
    if args.markdown:
        print("\n" + report.markdown(date))
    if args.json:
        document = {"date": date, "rows": report.rows, "tables": report.tables}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
