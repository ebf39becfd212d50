"""The views on real PostgreSQL: what they hold, rebuilds, crashes, damaged rows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.bootstrap import build_projections
from api.demo import SCENARIOS
from api.service_cli import rebuild
from domain.run import run_uuid
from domain.steps import StepEvent, step_adapter
from infra.settings import Settings
from infra.store import RunStore
from projections.catalog import VIEW_NAMES
from projections.runner import REBUILDING, UnknownView, views_named
from tests.integration.helpers import add_principal, execute, running_store
from tests.integration.incidents import GENERATED, Generated, record, record_incidents

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


def dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's rows, in a stable order."""
    assert settings.database_url
    tables = {}
    with psycopg.connect(settings.database_url) as conn:
        for name in VIEW_NAMES:
            table = sql.Identifier(settings.database_schema, f"view_{name}")
            rows = conn.execute(sql.SQL("SELECT * FROM {}").format(table)).fetchall()
            tables[name] = sorted(rows, key=repr)
    return tables


def indexes(settings: Settings) -> list[tuple[str, str]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND "
            "tablename LIKE 'view_%%' ORDER BY indexname",
            (settings.database_schema,),
        )
        return [(name, definition) for name, definition in rows.fetchall()]


def test_views_answer_for_every_recorded_run(settings: Settings, store: RunStore) -> None:
    events = record_incidents(store)
    runner = build_projections(settings, store)
    assert runner.catch_up() == events
    tables = dump(settings)
    assert len(tables["runs"]) == len(tables["receipts"]) == len(SCENARIOS) + len(GENERATED)
    assert len(tables["timeline"]) == events
    assert runner.positions() == dict.fromkeys(VIEW_NAMES, runner.log_end())
    assert runner.catch_up() == 0  # nothing new: nothing applied


def test_incremental_pages_and_a_rebuild_write_the_same_rows(settings: Settings, store: RunStore) -> None:
    record_incidents(store)
    runner = build_projections(settings, store)
    runner.page_size = 7  # runs split across many pages, as on a live stream
    runner.catch_up()
    incremental = dump(settings)
    for name in VIEW_NAMES:
        one = build_projections(settings, store, [name])
        one.page_size = 1000
        lines: list[str] = []
        assert rebuild(one, str(settings.database_url), lines.append) > 0
        assert "100%" in lines[-1]
        assert dump(settings)[name] == incremental[name], name
    assert dump(settings) == incremental


def test_a_runner_applies_only_what_is_new(settings: Settings, store: RunStore) -> None:
    record_incidents(store)
    runner = build_projections(settings, store)
    runner.catch_up()
    before = dump(settings)
    recorded = record(store, lambda p: [p.publish(s) for s in _corrections(GENERATED[:3])], encoding="json")
    assert runner.catch_up() == recorded
    after = dump(settings)
    assert len(after["timeline"]) == len(before["timeline"]) + recorded
    assert len(after["runs"]) == len(before["runs"])


def _corrections(generated: list[Generated]) -> list[StepEvent]:
    """A correction appended to each of some finished runs."""
    steps = []
    for g in generated:
        steps.append(
            step_adapter.validate_python(
                {
                    "event_id": f"late-{g.run_id}",
                    "run_id": g.run_id,
                    "tenant": "default",
                    "type": "record.corrected",
                    "occurred_at": g.started_at.isoformat(),
                    "actor": {"kind": "human", "id": "ana"},
                    "step_id": None,
                    "data": {"corrects": f"{g.run_id}/step-1", "correction": "typo", "reason": "spelling"},
                }
            )
        )
    return steps


def test_two_runners_side_by_side_apply_each_page_once(settings: Settings, store: RunStore) -> None:
    events = record_incidents(store)
    first, second = build_projections(settings, store), build_projections(settings, store)
    first.page_size = second.page_size = 10
    applied = 0
    while min(first.positions().values()) < first.log_end():
        applied += first.apply_next() + second.apply_next()
    assert applied == events
    assert len(dump(settings)["timeline"]) == events


def test_a_damaged_row_is_skipped_not_fatal(settings: Settings, store: RunStore) -> None:
    record_incidents(store)
    victim = run_uuid("default", GENERATED[0].run_id)
    execute(
        settings,
        "UPDATE receipts_events SET state = 'garbage' WHERE originator_id = %s AND originator_version = 2",
        victim,
    )
    runner = build_projections(settings, store)
    runner.catch_up()
    assert runner.positions()["runs"] == runner.log_end()
    tables = dump(settings)
    (row,) = [r for r in tables["runs"] if r[0] == victim]
    assert row[-1] is False  # verified: the chain no longer holds
    assert len(tables["runs"]) == len(SCENARIOS) + len(GENERATED)


def test_unknown_view_names_the_real_ones(settings: Settings) -> None:
    with pytest.raises(UnknownView, match="runs, receipts, touches, sources, findings, timeline"):
        views_named(settings.database_schema, ["run"])


def _project(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        "RECEIPTS_PROJECTION_PAGE": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_runner_resumes_without_applying_anything_twice(settings: Settings, store: RunStore) -> None:
    events = record_incidents(store)
    runner = build_projections(settings, store)
    end = runner.log_end()
    kills_mid_way = 0
    for _ in range(20):
        process = _project(settings)
        start = min(runner.positions().values())
        deadline = time.monotonic() + 30
        while min(runner.positions().values()) <= start and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.02 * (kills_mid_way % 3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if min(runner.positions().values()) >= end:
            break
        kills_mid_way += 1
    assert kills_mid_way >= 3, "the kills should land while pages were being applied"
    runner.catch_up()
    killed = dump(settings)
    assert len(killed["timeline"]) == events
    for name in VIEW_NAMES:
        rebuild(build_projections(settings, store, [name]), str(settings.database_url), lambda _: None)
    assert dump(settings) == killed


def _receipts(settings: Settings, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    """`receipts ARGS` on `settings`' servers; a question asks with `token`."""
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        **({"RECEIPTS_TOKEN": token} if token else {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rebuild_and_show_as_of_from_the_command_line(settings: Settings, store: RunStore) -> None:
    events = record_incidents(store)
    rebuilt = _receipts(settings, "rebuild", "all")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert re.search(rf"100% {events:,} events\s+[\d,]+ events/s", rebuilt.stderr), rebuilt.stderr
    assert len(dump(settings)["timeline"]) == events
    unknown = _receipts(settings, "rebuild", "run")
    assert unknown.returncode == 2 and "the projections are: runs, receipts" in unknown.stderr
    token = add_principal(settings)
    early = _receipts(settings, "show", "demo-crm-note", "--as-of", "2020-01-01", token=token)
    assert early.returncode == 2 and "had nothing recorded at 2020-01-01T00:00:00+00:00" in early.stderr
    now = _receipts(settings, "show", "demo-crm-note", "--as-of", datetime.now(UTC).isoformat(), token=token)
    assert now.returncode == 0 and "Final state: edited" in now.stdout, now.stderr


def test_processes_starting_together_create_the_tables_once(settings: Settings) -> None:
    """`up` starts its children at once; their DDL must not collide."""
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_everything() -> None:
        try:
            start.wait()
            with running_store(settings) as store:
                build_projections(settings, store)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=open_everything) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_parallel_rebuild_in_small_ranges_writes_what_incremental_pages_do(
    settings: Settings, store: RunStore
) -> None:
    record_incidents(store)
    runner = build_projections(settings, store)
    runner.page_size = 11
    runner.catch_up()
    incremental = dump(settings)
    indexed = indexes(settings)
    assert len(indexed) >= 16
    lines: list[str] = []
    rebuild(runner, str(settings.database_url), lines.append, workers=2, size=13)  # runs span ranges
    assert dump(settings) == incremental
    assert runner.positions() == dict.fromkeys(VIEW_NAMES, runner.log_end())
    assert indexes(settings) == indexed  # dropped for the load, built again at the end


def test_an_interrupted_rebuild_leaves_views_marked_and_a_rerun_finishes_it(
    settings: Settings, store: RunStore
) -> None:
    events = record_incidents(store)
    runner = build_projections(settings, store)
    runner.catch_up()
    incremental = dump(settings)
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "rebuild", "all", "--range", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(dump(settings)["timeline"]) in (0, events):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < len(dump(settings)["timeline"]) < events, "the kill should land mid-rebuild"
    assert set(runner.positions().values()) == {REBUILDING}
    assert runner.catch_up() == 0  # the live runner leaves a view being rebuilt alone
    rerun = _receipts(settings, "rebuild", "all")
    assert rerun.returncode == 0, rerun.stderr
    assert dump(settings) == incremental
