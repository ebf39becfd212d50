"""The views on real PostgreSQL: what they hold, rebuilds, crashes, damaged rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.bootstrap import build_projections
from api.workers import rebuild
from domain.run import run_uuid
from domain.steps import StepEvent, step_adapter
from infra.settings import Settings
from infra.store import RunStore
from projections.runner import UnknownView, views_named
from projections.views import VIEW_NAMES
from tests.integration.helpers import execute, running_store
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


def test_views_answer_for_every_recorded_run(settings: Settings, store: RunStore) -> None:
    events = record_incidents(store)
    runner = build_projections(settings, store)
    assert runner.catch_up() == events
    tables = dump(settings)
    assert len(tables["runs"]) == len(tables["receipts"]) == 5 + len(GENERATED)
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
        assert rebuild(one, lines.append) > 0
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
        steps.append(step_adapter.validate_python({
            "event_id": f"late-{g.run_id}", "run_id": g.run_id, "tenant": "default",
            "type": "record.corrected", "occurred_at": g.started_at.isoformat(),
            "actor": {"kind": "human", "id": "ana"}, "step_id": None,
            "data": {"corrects": f"{g.run_id}/step-1", "correction": "typo", "reason": "spelling"},
        }))  # fmt: skip
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
    execute(settings, "UPDATE receipts_events SET state = 'garbage' "
                      "WHERE originator_id = %s AND originator_version = 2", victim)  # fmt: skip
    runner = build_projections(settings, store)
    runner.catch_up()
    assert runner.positions()["runs"] == runner.log_end()
    tables = dump(settings)
    (row,) = [r for r in tables["runs"] if r[0] == victim]
    assert row[-1] is False  # verified: the chain no longer holds
    assert len(tables["runs"]) == 5 + len(GENERATED)


def test_unknown_view_names_the_real_ones(settings: Settings) -> None:
    with pytest.raises(UnknownView, match="runs, receipts, touches, sources, findings, timeline"):
        views_named(settings.database_schema, ["run"])
