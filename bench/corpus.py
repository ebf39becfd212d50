"""A large event store, fast: runs stamped from a pool of realistic template runs and
written straight into `receipts_events` with the ingest path's binary COPY (no Kafka).

Building 15M steps as pydantic models would take ~8 min on its own (StepFactory makes
~31k a second), so a few thousand runs are built once by `StepFactory` and turned into
JSON templates with slots; every loaded run is one template with its own run id, event
ids, times, target record, sources and versions, workflow, reviewer, agent and model
filled in. Each value still decodes with `Codec().decode`, and each run is hash-chained
over the exact bytes stored, as ingest would have done.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from bench.steps import COMPANIES, FIRST_NAMES, LANES, Lane, StepFactory
from bench.support import EVENT_NAMESPACE, TENANT
from domain.chain import GENESIS, link
from domain.run import run_uuid
from domain.steps import RunFinished, RunStarted, StepEvent, content_hash
from infra.rows import OPENED_TOPIC, RECORDED_TOPIC, Row, StepStates
from infra.store import StepRecorder
from schemas import encode_json

_SLOT = re.compile(rb"@@(\w+)@@")
REGIONS = ("", "-eu", "-us")  # 4 lanes x 3 = 12 workflows
MODELS = (
    ("anthropic", "claude-sonnet", "4.5"),
    ("anthropic", "claude-haiku", "4.5"),
    ("anthropic", "claude-opus", "4.1"),
    ("openai", "gpt-4.1", "2025-04-14"),
)
REVIEWER_IDS = tuple(
    f"{n.lower()}.{c}{i}@acme.example"
    for i, (n, c) in enumerate((n, c) for n in FIRST_NAMES for c in COMPANIES[:4])
)
SOURCE_PLACES = tuple(
    (s, k)
    for s in ("cms", "stripe", "zendesk", "hubspot", "gdrive")
    for k in ("page", "customer", "ticket", "doc")
)
# Incidents have hot spots: HOT_SHARE of runs (and of source uses) go to the busiest HOT_RECORDS.
HOT_RECORDS = 0.01
HOT_SHARE = 0.10
SOURCE_VERSIONS = 12
STALE_SHARE = 0.03  # of sources fetched more than STALE_SOURCE_AGE before use (a stale_source finding)
LANE_BY_WORKFLOW = {lane.workflow: lane for lane in LANES}


@dataclass(frozen=True, slots=True)
class TemplateEvent:
    literals: tuple[bytes, ...]  # the JSON around the slots
    slots: tuple[str, ...]  # slot names, one between each pair of literals
    offset: float  # seconds after the run started
    opens: bool


@dataclass(frozen=True, slots=True)
class Template:
    lane: Lane
    events: tuple[TemplateEvent, ...]
    sources: int
    final_state: str | None


@dataclass(frozen=True, slots=True)
class RunKeys:
    """What the query phase looks up: a loaded run's keys."""

    run_id: str
    workflow: str
    final_state: str | None
    started: datetime
    input_id: str
    reviewer: str
    target: tuple[str, str, str]
    sources: tuple[tuple[str, str, str, str], ...]  # system, kind, id, version


@dataclass
class Loaded:
    runs: int = 0
    events: int = 0
    seconds: float = 0.0
    bytes: int = 0
    unfinished: int = 0
    templates: int = 0
    entities: int = 0  # distinct target records
    sources: int = 0  # distinct source documents
    samples: list[RunKeys] = field(default_factory=list)


def build_templates(count: int, seed: int, output_bytes: int, excerpt_bytes: int) -> list[Template]:
    """`count` runs from StepFactory (one open at a time, so each run's steps are contiguous)."""
    factory = StepFactory(seed, "tpl", open_runs=1, output_bytes=output_bytes)
    rng = random.Random(seed)
    runs: dict[str, list[StepEvent]] = defaultdict(list)
    for step in factory.steps(count * 15):
        runs[step.run_id].append(step)
    return [_template(steps, rng, excerpt_bytes) for steps in runs.values()]


def _template(steps: list[StepEvent], rng: random.Random, excerpt_bytes: int) -> Template:
    sources: dict[str, int] = {}
    events = []
    offset = 0.0
    for step in steps:
        d: dict[str, Any] = json.loads(encode_json(step))
        d["run_id"], d["event_id"], d["occurred_at"] = "@@run@@", "@@event@@", "@@at@@"
        if d.get("step_id"):
            d["step_id"] = d["step_id"].replace(step.run_id, "@@run@@")
        if d["actor"]["kind"] == "human":
            d["actor"]["id"] = "@@reviewer@@"
        data = d["data"]
        if step.type == "run.started":
            data["workflow"] = "@@workflow@@"
            data["input"]["id"] = "@@input@@"
            data["input"]["uri"] = data["input"]["uri"].rsplit("/", 1)[0] + "/@@input@@"
            data["agent"]["version"] = "@@agent_version@@"
            data["model"] = {"provider": "@@provider@@", "name": "@@model@@", "version": "@@model_version@@"}
        elif step.type == "source.used":
            s = data["source"]
            n = sources.setdefault(s["id"], len(sources))
            excerpt = s["excerpt"][:excerpt_bytes]
            s.update(
                system=f"@@src{n}_system@@",
                kind=f"@@src{n}_kind@@",
                id=f"@@src{n}@@",
                uri=f"https://docs.example/@@src{n}@@",
                version=f"@@src{n}_version@@",
                retrieved_at=f"@@src{n}_at@@",
                excerpt=excerpt,
                hash=content_hash(excerpt),
            )
        elif step.type == "action.proposed":
            target = data["action"]["target"]
            target["id"] = "@@target@@"
            target["uri"] = f"https://{target['system']}.example/@@target@@"
            data["source_ids"] = [f"@@src{sources[s]}@@" for s in data["source_ids"]]
        # Agents take seconds, people minutes.
        offset += rng.uniform(60, 900) if d["actor"]["kind"] == "human" else rng.uniform(0.5, 20)
        parts = _SLOT.split(json.dumps(d, separators=(",", ":")).encode())
        events.append(
            TemplateEvent(
                tuple(parts[0::2]), tuple(p.decode() for p in parts[1::2]), offset, step.type == "run.started"
            )
        )
    first, last = steps[0], steps[-1]
    assert isinstance(first, RunStarted)
    final = last.data.final_state if isinstance(last, RunFinished) else None
    return Template(LANE_BY_WORKFLOW[first.data.workflow], tuple(events), len(sources), final)


class Stamper:
    """Fills templates into runs: a run's values are drawn once, then each event is
    the template's literals joined around them."""

    def __init__(
        self, templates: list[Template], runs: int, seed: int, start: datetime, days: float, unfinished: float
    ) -> None:
        self.templates = templates
        self.rng = random.Random(seed)
        self.runs = runs
        self.start = start.timestamp()
        self.span = days * 86_400
        self.unfinished = unfinished
        self.entities = max(100, runs // 20)  # ~50k records for 1M runs: a handful of runs each
        self.source_ids = max(100, runs // 20)

    def _pick(self, population: int) -> int:
        hot = max(1, int(population * HOT_RECORDS))
        rng = self.rng
        return rng.randrange(hot) if rng.random() < HOT_SHARE else rng.randrange(population)

    def run(self, number: int) -> tuple[RunKeys, list[tuple[float, bytes, str, bool]]]:
        """A run's keys and events (time, wire bytes, event id, opens the run)."""
        rng = self.rng
        template = rng.choice(self.templates)
        lane = template.lane
        workflow = lane.workflow + rng.choice(REGIONS)
        run_id = f"q{number:07d}-{workflow}"
        started = self.start + self.span * number / self.runs + rng.uniform(0, 600)
        entity = self._pick(self.entities)
        target = f"{FIRST_NAMES[entity % 10].lower()}-{COMPANIES[entity // 10 % 8]}-{entity:06d}"
        provider, model, model_version = rng.choice(MODELS)
        reviewer = rng.choice(REVIEWER_IDS)
        values = {
            "run": run_id,
            "workflow": workflow,
            "target": target,
            "reviewer": reviewer,
            "input": f"{lane.input_kind[:3]}-{rng.randrange(10**7):07d}",
            "provider": provider,
            "model": model,
            "model_version": model_version,
            "agent_version": f"2.{rng.randrange(9)}.{rng.randrange(20)}",
        }
        sources = []
        for n in range(template.sources):
            k = self._pick(self.source_ids)
            system, kind = SOURCE_PLACES[k % len(SOURCE_PLACES)]
            age = rng.uniform(8, 40) * 86_400 if rng.random() < STALE_SHARE else rng.uniform(60, 86_400)
            sources.append((system, kind, f"src-{k:06d}", f"v{rng.randint(1, SOURCE_VERSIONS)}"))
            values.update(
                {
                    f"src{n}_system": system,
                    f"src{n}_kind": kind,
                    f"src{n}": f"src-{k:06d}",
                    f"src{n}_version": sources[-1][3],
                    f"src{n}_at": _iso(started - age),
                }
            )
        raw = {name: value.encode() for name, value in values.items()}
        events = template.events
        final = template.final_state
        if final is not None and rng.random() < self.unfinished:
            events, final = events[:-1], None  # no run.finished: still open, or the agent died
        out = []
        for sequence, event in enumerate(events, start=1):
            at = started + event.offset
            event_id = str(uuid5(EVENT_NAMESPACE, f"{TENANT}/{run_id}/{sequence}"))
            raw["event"], raw["at"] = event_id.encode(), _iso(at).encode()
            pieces = [event.literals[0]]
            for slot, literal in zip(event.slots, event.literals[1:], strict=True):
                pieces += (raw[slot], literal)
            out.append((at, b"".join(pieces), event_id, event.opens))
        keys = RunKeys(
            run_id,
            workflow,
            final,
            datetime.fromtimestamp(started, UTC),
            values["input"],
            reviewer,
            (lane.target_system, lane.target_kind, target),
            tuple(sources),
        )
        return keys, out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def interleaved_rows(
    stamper: Stamper, numbers: range, open_runs: int, loaded: Loaded, sample_every: int
) -> Iterator[Row]:
    """Rows for runs `numbers`, `open_runs` at a time interleaved by time, as concurrent
    agents would publish them; each run chained and versioned in its own order."""
    for first in range(numbers.start, numbers.stop, open_runs):
        timed: list[tuple[float, UUID, bytes, str, bool]] = []
        for number in range(first, min(first + open_runs, numbers.stop)):
            keys, events = stamper.run(number)
            key = run_uuid(TENANT, keys.run_id)
            timed += [(at, key, wire, event_id, opens) for at, wire, event_id, opens in events]
            loaded.runs += 1
            loaded.unfinished += keys.final_state is None
            if number % sample_every == 0:
                loaded.samples.append(keys)
        timed.sort(key=lambda t: t[0])
        heads: dict[UUID, tuple[int, bytes]] = {}
        for at, key, wire, event_id, opens in timed:
            version, previous = heads.get(key, (0, GENESIS))
            digest = link(previous, wire)
            heads[key] = (version + 1, digest)
            # Recorded a few tens of milliseconds after it occurred, as by a live consumer.
            state = StepStates(datetime.fromtimestamp(at + 0.03, UTC))(digest, event_id, wire, opens)
            loaded.events += 1
            loaded.bytes += len(wire)
            yield key, version + 1, OPENED_TOPIC if opens else RECORDED_TOPIC, state


def load(
    recorder: StepRecorder,
    stamper: Stamper,
    open_runs: int,
    runs_per_batch: int,
    progress: Callable[[Loaded], None],
    samples: int = 5000,
) -> Loaded:
    """Stamp and COPY every run, one transaction per `runs_per_batch` runs; rows are
    generated while PostgreSQL takes the ones before them."""
    loaded = Loaded(entities=stamper.entities, sources=stamper.source_ids)
    sample_every = max(1, stamper.runs // samples)
    started = time.perf_counter()
    for first in range(0, stamper.runs, runs_per_batch):
        batch = range(first, min(first + runs_per_batch, stamper.runs))
        recorder.copy_rows(interleaved_rows(stamper, batch, open_runs, loaded, sample_every))
        loaded.seconds = time.perf_counter() - started
        progress(loaded)
    return loaded


def first_start(days: float) -> datetime:
    """The loaded history ends a day before today, so every run is in the past."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days + 1)
