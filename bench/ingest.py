"""Ingest benchmark: raw Kafka consume beside the real ingest pipeline, latency, memory.

    .venv/bin/python -m bench.ingest                      # 200k events, 3 rounds, 20 s latency
    .venv/bin/python -m bench.ingest --events 20000 --rounds 1 --latency-seconds 5
    .venv/bin/python -m bench.ingest --rounds 0 --latency-seconds 0 --backlog 1000000

What it measures, on one fresh stack (embedded PostgreSQL and Tansu unless
RECEIPTS_DATABASE_URL / RECEIPTS_KAFKA_BOOTSTRAP are set):

- throughput, per encoding (json, avro): N realistic ~1 KB steps, built as
  domain models and encoded once, are published to a fresh 4-partition topic;
  then rounds alternate a raw kafka-python consume of the topic (the baseline:
  count messages, nothing else) with the real ingest path into the event store
  (Ingest.poll_once on a manually assigned consumer, resumed from the store's
  positions, a fresh PostgreSQL schema each round). The ratio compared is the
  median pipeline rate over the median baseline rate (BASELINES.md: raw
  consume swings between measurements, so baseline and pipeline interleave).
  Both run in one worker process, apart from the generated data, so its peak
  RSS is the consumer's.
- latency: steps published at a steady rate while `python -m api.cli ingest`
  (the production consumer: group subscription) runs as a subprocess. Each
  step's occurred_at is its publish time; "recorded" latency is the row's
  recorded-at (its S1 header) minus that, "visible" latency is when a reader
  LISTENing on the event table's channel first saw the committed row.
- memory (`--backlog N`): N steps published first, then ingested by a fresh
  worker process whose RSS is sampled every `--sample-every` events.

Publishing happens outside every timing.

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from bench.latency import Latency, run_latency
from bench.report import Throughput, build_report, mib
from bench.steps import Dataset, StepFactory, build_dataset
from bench.support import (
    ENCODINGS,
    checkpoint,
    checkpointer_beside,
    create_schema,
    drop_schema,
    prepare_process,
    publish,
    say,
    start_servers,
)
from bench.worker import Worker
from infra.kafka import ensure_topics
from infra.settings import Settings
from schemas import Codec

# --- throughput ------------------------------------------------------------------------


def run_throughput(
    args: argparse.Namespace, base: Settings, data: Dataset, tag: str, stack: ExitStack
) -> tuple[list[Throughput], int]:
    assert base.kafka_bootstrap and base.database_url
    url = base.database_url
    results = []
    for encoding in args.encodings:
        topic = f"bench-{tag}-{encoding}"
        ensure_topics(base.kafka_bootstrap, [topic, f"{topic}.dlq"], base.partitions)
        sent = publish(base.kafka_bootstrap, topic, zip(data.keys, data.values[encoding], strict=True))
        say(
            f"published {sent.count:,} {encoding} values to {topic} in {sent.seconds:.1f}s "
            f"({sent.count / sent.seconds:,.0f}/s)"
        )
        results.append(Throughput(encoding, topic, sent.last_offsets, produce_rate=sent.count / sent.seconds))

    rng = random.Random(args.seed)
    spot = dict(rng.sample(sorted(data.runs.items()), min(5, len(data.runs))))
    timeout = max(120.0, args.events / 500)
    worker = Worker()
    stack.callback(worker.close)
    partners: list[Worker] = []

    def partner() -> Worker:
        if not partners:
            partners.append(Worker())
            stack.callback(partners[0].close)
        return partners[0]

    for round_no in range(1, args.rounds + 1):
        for result in results:
            settings = base.model_copy(update={"topic": result.topic})
            b = worker.call("baseline", settings, events=args.events, timeout=timeout)
            result.baseline.append(b["rate"])
            name = f"{tag}_{result.encoding}_{round_no}"
            # With --compare-policy, one more round without the policy, paired with the same
            # baseline; which of the two goes first alternates, so neither always pays for
            # the worker's first pipeline round (imports, caches, connections).
            bare_first = args.compare_policy and round_no % 2 == 1
            if bare_first:
                bare = _bare_round(args, worker, settings, name, result, spot, timeout)
            settings, p = _pipeline(args, worker, settings, name, result, spot, timeout, policy=args.policy)
            result.pipeline.append(p["rate"])
            result.batches.append(p["batches"])
            result.rss.append(p["rss_peak"])
            result.lock_share.append(p["lock_share"])
            say(
                f"round {round_no} {result.encoding}: raw consume {b['rate']:,.0f} msg/s, pipeline "
                f"{p['rate']:,.0f} events/s ({p['rate'] / b['rate']:.2f}x), {p['batches']} batches, "
                f"lock held {p['lock_share']:.0%} of the time, all rows there, "
                f"{p['spot']} spot-checked runs verify, peak RSS {mib(p['rss_peak'])}"
                + (f", {p['decided']:,} policy decisions" if args.policy else "")
            )
            if args.compare_policy:
                if not bare_first:
                    bare = _bare_round(args, worker, settings, name, result, spot, timeout)
                result.without_policy.append(bare["rate"])
                say(
                    f"round {round_no} {result.encoding}: without policy {bare['rate']:,.0f} events/s "
                    f"({bare['rate'] / b['rate']:.2f}x), with the sample policy {p['rate'] / b['rate']:.2f}x"
                )
            if args.compare_checkpoints:
                signed = _pipeline(
                    args, worker, settings, f"{name}_ck", result, spot, timeout, args.policy, checkpoints=True
                )[1]
                result.with_checkpoints.append(signed["rate"])
                say(
                    f"round {round_no} {result.encoding}: with checkpoints {signed['rate']:,.0f} events/s "
                    f"({signed['rate'] / b['rate']:.2f}x)"
                )
            if args.two_processes:
                pair = _two_processes(worker, partner(), settings, url, result, timeout, args.policy)
                result.two_processes.append(pair)
                say(
                    f"round {round_no} {result.encoding}: two ingest processes on one store "
                    f"{pair:,.0f} events/s"
                )
    peak = worker.close()
    return results, peak


def _bare_round(
    args: argparse.Namespace,
    worker: Worker,
    settings: Settings,
    name: str,
    result: Throughput,
    spot: dict[str, int],
    timeout: float,
) -> dict[str, Any]:
    """A pipeline round without the policy (--compare-policy)."""
    return _pipeline(args, worker, settings, f"{name}_np", result, spot, timeout, policy=False)[1]


def _pipeline(
    args: argparse.Namespace,
    worker: Worker,
    settings: Settings,
    name: str,
    result: Throughput,
    spot: dict[str, int],
    timeout: float,
    policy: bool,
    checkpoints: bool = False,
) -> tuple[Settings, dict[str, Any]]:
    """One pipeline round into a fresh schema; its settings (for a two-process round) and answer.
    With `checkpoints`, a checkpointer process closes one every second beside it."""
    assert settings.database_url
    url = settings.database_url
    schema = f"bench_{name}"
    create_schema(url, schema)
    checkpoint(url)
    settings = settings.model_copy(update={"database_schema": schema, "group": f"bench-{name}"})
    with ExitStack() as beside:
        if checkpoints:
            beside.enter_context(checkpointer_beside(settings, name))
        return _pipeline_round(args, worker, settings, result, spot, timeout, policy, name)


def _pipeline_round(
    args: argparse.Namespace,
    worker: Worker,
    settings: Settings,
    result: Throughput,
    spot: dict[str, int],
    timeout: float,
    policy: bool,
    name: str,
) -> tuple[Settings, dict[str, Any]]:
    url, schema = str(settings.database_url), settings.database_schema
    try:
        p = worker.call(
            "pipeline",
            settings,
            events=args.events,
            timeout=timeout,
            spot=spot,
            last_offsets=result.last_offsets,
            policy=policy,
        )
    finally:
        if not args.keep_schemas:
            drop_schema(url, schema)
    if p["problems"]:
        raise RuntimeError(f"{name}: " + "; ".join(p["problems"]))
    return settings, p


def _two_processes(
    first: Worker,
    second: Worker,
    settings: Settings,
    url: str,
    result: Throughput,
    timeout: float,
    policy: bool,
) -> float:
    """Both workers ingest into one fresh schema side by side, two partitions each:
    the events table lock is held only for ready rows, so the rate must not fall."""
    schema = f"{settings.database_schema}_pair"
    create_schema(url, schema)
    checkpoint(url)
    pair = settings.model_copy(update={"database_schema": schema})
    halves = sorted(result.last_offsets)
    try:
        for worker, part in ((first, halves[::2]), (second, halves[1::2])):
            worker.send(
                "pipeline",
                pair,
                events=0,
                timeout=timeout,
                spot={},
                last_offsets=result.last_offsets,
                partitions=part,
                policy=policy,
            )
        answers = [first.receive("pipeline"), second.receive("pipeline")]
    finally:
        drop_schema(url, schema)
    problems = [p for a in answers for p in a["problems"]]
    if problems:
        raise RuntimeError("two processes: " + "; ".join(problems))
    return float(sum(a["events"] for a in answers) / max(a["seconds"] for a in answers))


# --- backlog: flat memory ---------------------------------------------------------------------


def run_backlog(args: argparse.Namespace, base: Settings, tag: str, stack: ExitStack) -> dict[str, Any]:
    assert base.kafka_bootstrap and base.database_url
    topic, schema = f"bench-{tag}-backlog", f"bench_{tag}_backlog"
    ensure_topics(base.kafka_bootstrap, [topic, f"{topic}.dlq"], base.partitions)
    factory = StepFactory(args.seed + 3, f"backlog-{tag}", args.open_runs)
    codec = Codec()
    pairs = ((s.run_id.encode(), codec.encode(s, args.backlog_encoding)) for s in factory.steps(args.backlog))
    say(f"backlog: building, encoding and publishing {args.backlog:,} {args.backlog_encoding} values")
    sent = publish(base.kafka_bootstrap, topic, pairs, progress=100_000)
    say(f"backlog: published {sent.count:,} in {sent.seconds:.0f}s; ingesting them all in a fresh worker")
    create_schema(base.database_url, schema)
    checkpoint(base.database_url)
    settings = base.model_copy(update={"topic": topic, "database_schema": schema, "group": f"bench-{tag}-bl"})
    spot = dict(random.Random(args.seed).sample(sorted(factory.runs.items()), min(5, len(factory.runs))))
    worker = Worker()
    stack.callback(worker.close)
    try:
        result = worker.call(
            "pipeline",
            settings,
            events=args.backlog,
            spot=spot,
            last_offsets=sent.last_offsets,
            timeout=max(300.0, args.backlog / 200),
            sample_every=args.sample_every,
            policy=args.policy,
        )
    finally:
        worker.close()
        if not args.keep_schemas:
            drop_schema(base.database_url, schema)
    if result["problems"]:
        raise RuntimeError("backlog: " + "; ".join(result["problems"]))
    for recorded, at, rss, heads in result["samples"]:
        say(f"backlog: {recorded:>9,} recorded  {at:7.1f}s  RSS {mib(rss):>9}  {heads:,} run heads cached")
    return result


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Ingest throughput against raw kafka-python consume, publish->store latency, and "
        "consumer memory, on a fresh embedded stack (or RECEIPTS_DATABASE_URL / RECEIPTS_KAFKA_BOOTSTRAP).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--events", type=int, default=200_000, help="events per encoding for throughput")
    p.add_argument("--rounds", type=int, default=3, help="interleaved baseline/pipeline rounds (0: skip)")
    p.add_argument(
        "--encodings",
        default="json,avro",
        type=lambda s: [e for e in s.split(",") if e],
        help="comma-separated: json, avro",
    )
    p.add_argument("--open-runs", type=int, default=200, help="runs in progress at once (interleaving)")
    p.add_argument("--latency-seconds", type=float, default=20, help="latency phase length (0: skip)")
    p.add_argument("--latency-rate", type=float, default=1000, help="events/s published in the latency phase")
    p.add_argument("--latency-encoding", choices=ENCODINGS, default="avro")
    p.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="N",
        help="also publish N events, then ingest them all, sampling the consumer's RSS",
    )
    p.add_argument("--backlog-encoding", choices=ENCODINGS, default="avro")
    p.add_argument("--sample-every", type=int, default=100_000, help="backlog RSS sample interval (events)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--two-processes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ingest each round with two processes on one store, two partitions each",
    )
    p.add_argument(
        "--policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="route each proposed and edited step by the sample policy, as ingest does",
    )
    p.add_argument(
        "--compare-policy",
        action="store_true",
        help="also run one pipeline round per encoding without the policy, paired with the same "
        "baseline, and report both ratios",
    )
    p.add_argument(
        "--compare-checkpoints",
        action="store_true",
        help="also run one pipeline round per encoding with `receipts checkpoints close --every 1` "
        "beside it, paired with the same baseline, and report both ratios",
    )
    p.add_argument("--keep-schemas", action="store_true", help="keep each round's PostgreSQL schema")
    p.add_argument("--markdown", action="store_true", help="also print the report as Markdown")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the raw results as JSON")
    args = p.parse_args(argv)
    bad = [e for e in args.encodings if e not in ENCODINGS]
    if bad:
        p.error(f"unknown encoding(s) {bad}")
    if args.events < 1 and args.rounds:
        p.error("--events must be positive")
    if args.compare_policy and not args.policy:
        p.error("--compare-policy compares rounds with the policy against rounds without: drop --no-policy")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python warns when the producer's I/O thread waits on the GIL while steps are generated.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    workdir = prepare_process()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    tag = uuid4().hex[:6]
    data: Dataset | None = None
    throughput: list[Throughput] = []
    worker_peak = 0
    latency: Latency | None = None
    backlog: dict[str, Any] | None = None
    try:
        with ExitStack() as stack:
            base, servers = start_servers(stack, workdir, Settings())
            if args.rounds > 0:
                say(f"building {args.events:,} steps and encoding each as {', '.join(args.encodings)}")
                data = build_dataset(args.events, args.seed, args.open_runs, args.encodings)
                sizes = ", ".join(f"{e} {data.sizes(e)[0]:,.0f} B" for e in args.encodings)
                say(
                    f"built {args.events:,} steps in {len(data.runs):,} runs in {data.seconds:.1f}s; "
                    f"mean value size {sizes}"
                )
                throughput, worker_peak = run_throughput(args, base, data, tag, stack)
            if args.latency_seconds > 0:
                with ExitStack() as phase:
                    latency = run_latency(args, base, tag, workdir, phase)
            if args.backlog > 0:
                backlog = run_backlog(args, base, tag, stack)
            report = build_report(args, base, servers, data, throughput, worker_peak, latency, backlog, date)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    print(report.plain())
    if args.markdown:
        print("\n" + report.markdown(date))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"date": date, "rows": report.rows, "rounds": report.rounds, "backlog": report.backlog},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
