"""Projection rebuild: every view from the whole log, beside eventsourcing's own
per-event ProjectionRunner (one transaction per event) as the baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.projection import ProjectionRunner as LibraryRunner
from psycopg.sql import SQL, Identifier

from api.service_cli import rebuild
from bench.support import EVENTS_TABLE, say, sql_run
from infra.progress import Progress
from infra.settings import Settings
from infra.store import RunStore
from projections.runner import ProjectionRunner

PROGRESS_SECONDS = 30.0

# --- the baseline: eventsourcing's ProjectionRunner, one transaction per event -------------------


class OneRowPerEvent(PostgresTrackingRecorder):
    """The least a view can do: one row per event, written with its tracking row in
    one transaction, as eventsourcing's runner hands events over one at a time."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        rows = f"{self.tracking_table_name}_rows"
        table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(rows))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (run_key uuid, version int, PRIMARY KEY (run_key, version))"
            ).format(table)
        )
        self.insert_row = SQL("INSERT INTO {} VALUES (%s, %s)").format(table)

    def record(self, run_key: UUID, version: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.insert_row, (run_key, version), prepare=True)
            self._insert_tracking(curs, tracking)


class OneRowProjection(Projection[OneRowPerEvent]):
    name = "bench_es_baseline"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.record(domain_event.originator_id, domain_event.originator_version, tracking)


def library_baseline(settings: Settings, events: int) -> float:
    """events/s of eventsourcing's ProjectionRunner over the first `events` of the log
    (the runner decodes each stored step through the application's mapper)."""
    env = {**settings.eventsourcing_env(), "PERSISTENCE_MODULE": "eventsourcing.postgres"}
    started = time.perf_counter()
    runner = LibraryRunner(
        application_class=RunStore, projection_class=OneRowProjection, view_class=OneRowPerEvent, env=env
    )
    with runner:
        runner.wait(_first_position(settings) + events - 1, timeout=max(120.0, events / 200))
        seconds = time.perf_counter() - started
    return events / seconds


def _first_position(settings: Settings) -> int:
    assert settings.database_url
    rows = sql_run(
        settings.database_url,
        SQL("SELECT min(notification_id) FROM {}.{}").format(
            Identifier(settings.database_schema), Identifier(EVENTS_TABLE)
        ),
    )
    return int(rows[0][0])


# --- the views: the product's rebuild -------------------------------------------------------------


@dataclass
class Rebuilt:
    events: int  # events the timed part applied
    seconds: float
    rate: float
    rest_events: int = 0  # applied after the timed prefix, to finish the views
    rest_seconds: float = 0.0


def rebuild_views(runner: ProjectionRunner, database_url: str, prefix: int) -> Rebuilt:
    """`api.service_cli.rebuild` over the whole log; or, with `prefix`, the views emptied, the
    first `prefix` log positions timed, then the rest applied (timed apart) so that the
    views still hold every run."""
    end = runner.log_end()
    if prefix <= 0 or prefix >= end:
        before = runner.progress.events
        rate = rebuild(runner, database_url, say)
        events = runner.progress.events - before
        return Rebuilt(events, events / rate, rate)
    for view in runner.views:
        runner.reset(view)
    started = time.perf_counter()
    applied = runner.catch_up(prefix, _progress("rebuild (timed prefix)", prefix, started))
    timed = time.perf_counter() - started
    say(
        f"rebuild: first {applied:,} events in {timed:.0f}s ({applied / timed:,.0f} events/s); "
        f"applying the remaining {end - prefix:,} positions"
    )
    started = time.perf_counter()
    rest = runner.catch_up(end, _progress("rebuild (rest)", end - prefix, started))
    return Rebuilt(applied, timed, applied / timed, rest, time.perf_counter() - started)


def _progress(what: str, total: int, started: float) -> Callable[[int], None]:
    progress = Progress(what, total, write=say, every=PROGRESS_SECONDS)

    def on_page(applied: int) -> None:
        progress.advance(applied - progress.count, applied - progress.count)

    return on_page
