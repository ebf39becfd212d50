"""The ingest consumer as an operator runs it: SIGTERM, several processes, SIGKILL and restart."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

from api.bootstrap import build_publisher
from domain.personal import KEYED_PREFIX
from domain.receipt_model import Receipt
from infra.settings import Settings
from tests.integration.helpers import execute, ingest_for, poll_until, published_rows, running_store
from tests.integration.processes import IngestProcess

pytestmark = pytest.mark.integration


def _publish(settings: Settings, runs: int, steps: int, prefix: str = "run") -> int:
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}))
    rng = random.Random(runs * 1000 + steps)
    for n in range(runs):
        with publisher.run(
            "crm-notes", run_id=f"{prefix}-{n}", input={"system": "gong", "kind": "call", "id": f"call-{n}"}
        ) as run:
            for i in range(rng.randint(1, steps)):
                step = run.propose(
                    "write_note",
                    {"system": "crm", "kind": "note", "id": f"{n}-{i}"},
                    "crm.note",
                    output=f"note {n}/{i} " * 20,
                )
                step.review("approved", by={"kind": "human", "id": "maria"})  # type: ignore[arg-type]
                step.executed("noted")
            run.finish("sent")
    publisher.close()
    return publisher.published


def _wait_rows(settings: Settings, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(published_rows(settings)) < count:
        assert time.monotonic() < deadline, f"{len(published_rows(settings))} of {count} rows stored"
        time.sleep(0.1)


def test_sigterm_finishes_the_batch_and_exits_cleanly(settings: Settings) -> None:
    consumer = IngestProcess(settings)
    consumer.wait_for("resumed ")
    published = _publish(settings, runs=20, steps=3)
    _wait_rows(settings, published)
    assert consumer.stop(signal.SIGTERM) == 0
    consumer.wait_for(rf"ingest stopped: \d+ batches, {published} recorded, 0 duplicates")


def test_two_processes_in_one_group_share_the_partitions(settings: Settings) -> None:
    first = IngestProcess(settings)
    first.wait_for("resumed ")
    second = IngestProcess(settings)
    second.wait_for("resumed ")
    deadline = time.monotonic() + 30
    # Until the rebalance has settled: each logs its new assignment at its own pace,
    # so for a moment the first's last line still names all four.
    while not (
        first.assigned()
        and second.assigned()
        and first.assigned() | second.assigned() == {0, 1, 2, 3}
        and not first.assigned() & second.assigned()
    ):
        assert time.monotonic() < deadline, (first.lines, second.lines)
        time.sleep(0.1)
    assert not first.assigned() & second.assigned()
    published = _publish(settings, runs=40, steps=3)
    _wait_rows(settings, published)
    for process in (first, second):
        assert process.stop(signal.SIGTERM) == 0
    recorded = [int(process.wait_for(r"(\d+) recorded").group(1)) for process in (first, second)]
    assert sum(recorded) == published and all(recorded)
    assert len(published_rows(settings)) == published


def test_sigkill_and_restart_ten_times_loses_and_doubles_nothing(settings: Settings) -> None:
    published = _publish(settings, runs=300, steps=6)
    rng = random.Random(7)
    kills_mid_stream = 0
    for attempt in range(10):
        # A fresh group per restart: positions come from PostgreSQL either way, and
        # Tansu holds a SIGKILLed member's partitions ~11 s before handing them on.
        consumer = IngestProcess(settings, group=f"{settings.group}-{attempt}", max_poll_records=10)
        consumer.wait_for("resumed ")
        before = len(published_rows(settings))
        if attempt % 2:  # during batches: once rows are flowing, at a random instant
            deadline = time.monotonic() + 20
            while len(published_rows(settings)) == before and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
        consumer.stop(signal.SIGKILL)
        after = len(published_rows(settings))
        kills_mid_stream += before < after < published
    assert kills_mid_stream >= 3, "the kills did not land while batches were being applied"

    # The last restart reuses the group of the last killed process.
    survivor = IngestProcess(settings, group=f"{settings.group}-9")
    _wait_rows(settings, published, timeout=90)
    assert survivor.stop(signal.SIGTERM) == 0

    # The same events ingested once, with no crash, into a clean schema.
    clean = settings.model_copy(
        update={"database_schema": settings.database_schema + "_clean", "group": settings.group + "-clean"}
    )
    execute(settings, f'CREATE SCHEMA "{clean.database_schema}"')
    with running_store(clean) as clean_store, ingest_for(clean, clean_store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= published, timeout=60)
        expected = {n: _unclocked(clean_store.run("default", f"run-{n}").receipt()) for n in range(300)}
    assert len(published_rows(settings)) == published
    with running_store(settings) as store:
        for n, receipt in expected.items():
            assert _unclocked(store.run("default", f"run-{n}").receipt()) == receipt, f"run-{n} differs"


def _unclocked(receipt: Receipt) -> dict[str, Any]:
    """The receipt as two stores of the same events must agree on it. They differ in when
    they recorded it, and in what their own keys make: each store seals personal fields under
    its own subject keys (random nonces, so another chain head) and keys content hashes with
    them. Keyed hashes are renamed in order of appearance, so which versions are equal to
    which must still match exactly."""
    document = receipt.model_copy(
        update={"timestamps": receipt.timestamps.model_copy(update={"last_recorded": None})}
    ).model_dump(mode="json")
    document["integrity"]["head"] = None
    names: dict[str, str] = {}

    def renamed(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(KEYED_PREFIX):
            return names.setdefault(value, f"keyed-{len(names)}")
        if isinstance(value, dict):
            return {k: renamed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [renamed(v) for v in value]
        return value

    return renamed(document)
