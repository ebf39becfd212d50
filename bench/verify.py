"""`verify --all --checkpoints` against a raw baseline, on a loaded store.

    .venv/bin/python -m bench.verify                  # 20,000 runs (~280k events)
    .venv/bin/python -m bench.verify --runs 100000    # ~1.4M events

1. load: `--runs` runs stamped from StepFactory templates (bench/corpus.py), written
   with the ingest path's binary COPY into a fresh schema of embedded PostgreSQL
   (or `--database-url`);
2. checkpoints: the relay's Checkpointer closes them, `--checkpoint-events` a
   checkpoint, as it would under a backlog (events/s);
3. raw baseline: the same pages of rows read by position and each run's SHA-256
   chain recomputed, nothing else — the floor any verification pays;
4. verify: projections.anchored.verify_anchored over the exported checkpoint files
   (chain, leaves, Merkle roots, heads, signatures), events/s and its share of the
   baseline. The target is >= 50,000 events/s.
5. write path with and without checkpoints (`--overhead-runs`, 0 skips): more runs
   COPY-loaded the way ingest writes them (under the events table's lock), in
   alternating rounds without and with `receipts checkpoints close --every 1` running
   as a process of its own (ten times the default rate); the ratio of the medians.
   The target is within 10%. (bench.ingest measures the whole consumer pipeline.)

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from uuid import UUID, uuid4

from api.bootstrap import open_store
from bench.corpus import Loaded, Stamper, build_templates, first_start, interleaved_rows, load
from bench.support import checkpointer_beside, create_schema, prepare_process, say, start_servers
from domain.chain import GENESIS, link
from infra.checkpoint_files import from_dir, write_dir
from infra.checkpoints import Checkpointer
from infra.rows import header_digest
from infra.settings import Settings
from infra.signing import ensure_signing_key
from infra.store import RunStore
from projections.anchored import stored_pages, verify_anchored

TARGET = 50_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.verify",
        description="verify --all --checkpoints against a raw chain baseline (embedded PostgreSQL).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=20_000, help="runs to load (~14 events each)")
    p.add_argument("--templates", type=int, default=500, help="StepFactory runs to stamp the runs from")
    p.add_argument("--checkpoint-events", type=int, default=100_000, help="events per checkpoint")
    p.add_argument("--overhead-runs", type=int, default=5_000, help="runs per write-path round (0: skip)")
    p.add_argument("--overhead-rounds", type=int, default=2, help="rounds each without and with")
    p.add_argument("--database-url", help="an existing PostgreSQL (default: an embedded one under /tmp)")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def raw_chain(store: RunStore) -> tuple[int, float]:
    """Rows by position, each run's chain recomputed: the baseline."""
    started = time.perf_counter()
    previous: dict[UUID, bytes] = {}
    events = 0
    for page in stored_pages(store):
        for _, run, _, state in page:
            digest = header_digest(state)
            wire = state[state.index(b"\n") + 1 :]
            if digest is None or link(previous.get(run, GENESIS), wire) != digest:
                raise AssertionError(f"run {run} does not chain: the loaded store is wrong")
            previous[run] = digest
            events += 1
    return events, time.perf_counter() - started


def measure(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> list[str]:
    base = Settings(kafka_bootstrap="unused:9092")  # this bench needs no broker
    if args.database_url:
        base = base.model_copy(update={"database_url": args.database_url})
    base, servers = start_servers(stack, workdir, base)
    assert base.database_url
    schema = f"bench_v_{uuid4().hex[:6]}"
    create_schema(base.database_url, schema)
    settings = base.model_copy(update={"database_schema": schema, "signing_key": workdir / "signing.key"})
    key, _ = ensure_signing_key(workdir / "signing.key")
    store = open_store(settings, create=True)
    stack.callback(store.close)

    say(f"loading {args.runs:,} runs")
    stamper = Stamper(
        build_templates(args.templates, args.seed, 150, 200), args.runs, args.seed, first_start(90), 90, 0.05
    )
    loaded = load(store.steps, stamper, 200, 1000, lambda _: None)
    say(f"loaded {loaded.events:,} events in {loaded.seconds:.0f}s")

    checkpointer = Checkpointer(
        store.steps.datastore,
        store.steps.checkpoint_tables,
        workdir / "signing.key",
        store.codec,
        args.checkpoint_events,
    )
    started = time.perf_counter()
    while checkpointer.close() is not None:
        pass
    closing = time.perf_counter() - started
    with store.steps.datastore.transaction(commit=False) as curs:
        signed = store.steps.checkpoint_tables.all(curs)
        history = store.steps.checkpoint_tables.keyring.history(curs)
    write_dir(workdir / "checkpoints", signed, history)
    say(f"{len(signed)} checkpoints closed in {closing:.1f}s")

    raw_events, raw_seconds = raw_chain(store)
    say(f"raw chain: {raw_events / raw_seconds:,.0f} events/s")
    started = time.perf_counter()
    verdict = verify_anchored(store, from_dir(workdir / "checkpoints"), [key.public])
    seconds = time.perf_counter() - started
    if not verdict.verified:
        raise AssertionError(f"the untouched store did not verify: {verdict.findings[:3]}")
    rate = verdict.report.events / seconds
    raw_rate = raw_events / raw_seconds
    lines = [
        f"verify --all --checkpoints ({servers}; {loaded.events:,} events, {args.runs:,} runs, "
        f"{len(signed)} checkpoints of <= {args.checkpoint_events:,})",
        f"  checkpointer (close, backlog)  {loaded.events / closing:>12,.0f} events/s",
        f"  raw baseline (read + chain)    {raw_rate:>12,.0f} events/s",
        f"  verify --all --checkpoints     {rate:>12,.0f} events/s  ({rate / raw_rate:.0%} of the baseline; "
        f"target {TARGET:,}: {'met' if rate >= TARGET else 'NOT met'})",
    ]
    if args.overhead_runs > 0:
        lines += write_overhead(args, settings, store, stamper)
    return lines


def write_overhead(
    args: argparse.Namespace, settings: Settings, store: RunStore, stamper: Stamper
) -> list[str]:
    """The ingest write path's events/s without and with a checkpointer process beside it."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    next_run = args.runs  # run numbers (and so run ids) not loaded yet
    for round_no in range(args.overhead_rounds):
        for beside in (round_no % 2 == 1, round_no % 2 == 0):  # alternate which goes first
            numbers = range(next_run, next_run + args.overhead_runs)
            next_run = numbers.stop
            with ExitStack() as running:
                if beside:
                    running.enter_context(checkpointer_beside(settings, f"verify-{round_no}"))
                loaded = Loaded()
                started = time.perf_counter()
                for first in range(numbers.start, numbers.stop, 1000):  # a transaction per 1,000 runs
                    batch = range(first, min(first + 1000, numbers.stop))
                    store.steps.copy_rows(interleaved_rows(stamper, batch, 200, loaded, len(numbers)))
                seconds = time.perf_counter() - started
            rates[beside].append(loaded.events / seconds)
            say(
                f"write path {'with' if beside else 'without'} checkpoints: {rates[beside][-1]:,.0f} events/s"
            )
    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    change = with_ / without - 1
    return [
        f"  write path without checkpoints {without:>12,.0f} events/s (median of {len(rates[False])})",
        f"  write path, checkpoint every 1s {with_:>11,.0f} events/s ({change:+.0%}; target within 10%: "
        f"{'met' if change >= -0.10 else 'NOT met'})",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = prepare_process()
    try:
        with ExitStack() as stack:
            lines = measure(args, workdir, stack)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
