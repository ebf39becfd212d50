"""The projection runner: one loop that keeps the views up with the event store.

Each turn is one transaction: lock the views' tracking rows, read the next page
of the notification log, apply it to every view it is new to, move their
tracking rows, commit. A page is applied with its tracking row or not at all,
so a crash anywhere applies nothing twice, and a runner restarted (or a second
one beside it) carries on from the committed positions.

Tracking rows live in eventsourcing's own tracking tables (one per view, keyed
by the application's name), so eventsourcing's `max_tracking_id` and `wait`
read them. eventsourcing's `ProjectionRunner` commits one transaction per event
(~2k events/s here, see BENCHMARKS.md), so pages are applied by this loop instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed

from domain.errors import NotFound
from infra.retry import Backoff, pause, transient
from projections import quarantine
from projections.catalog import VIEWS
from projections.log import EventLog, Recorded, listening
from projections.views import Batch, View
from projections.waiters import payload, views_channel

log = logging.getLogger(__name__)
IDLE_WAIT = 1.0
# A view's tracking position while a parallel rebuild fills it (projections/rebuild.py).
REBUILDING = -1
# The longest pause between attempts while the database is away.
RETRY_CAP = 10.0


class UnknownView(NotFound, LookupError):
    def __init__(self, name: str) -> None:
        names = ", ".join(view.name for view in VIEWS)
        super().__init__(f"no projection named '{name}'; the projections are: {names}, or all")


def views_named(schema: str, names: Sequence[str] = ()) -> list[View]:
    by_name = {view.name: view for view in VIEWS}
    if not names or list(names) == ["all"]:
        return [view(schema) for view in VIEWS]
    for name in names:
        if name not in by_name:
            raise UnknownView(name)
    return [by_name[name](schema) for name in names]


@dataclass
class Progress:
    """What the runner has done since it started."""

    events: int = 0


class ProjectionRunner:
    def __init__(
        self,
        datastore: PostgresDatastore,
        log: EventLog,
        application_name: str,
        channel: str,
        views: Sequence[View],
        page_size: int = 5000,
    ) -> None:
        self.datastore = datastore
        self.log = log
        self.application_name = application_name
        self.channel = channel
        self.views = list(views)
        self.page_size = page_size
        self.progress = Progress()

    # --- set-up --------------------------------------------------------------------------------

    def create_tables(self) -> None:
        for view in self.views:  # eventsourcing's own tracking table, one per view
            PostgresTrackingRecorder(self.datastore, tracking_table_name=view.tracking_table).create_table()
        with self._transaction() as curs:
            trigrams = _has_trigrams(curs)
            quarantine.create(curs, self.log.schema)
            for view in self.views:
                view.create(curs, trigrams)
                curs.execute(
                    _tracking(view, "INSERT INTO {} VALUES (%s, 0) ON CONFLICT DO NOTHING"),
                    (self.application_name,),
                )

    def reset(self, view: View, position: int = 0) -> None:
        """Empty a view and send it back to the start of the log (for a rebuild).

        At REBUILDING its secondary indexes go too: building them once at the end
        costs far less than keeping them up through millions of inserts."""
        with self._transaction() as curs:
            self._lock(curs, [view], wait=True)
            curs.execute(SQL("TRUNCATE {}").format(view.identifier))
            if position == REBUILDING:
                view.drop_indexes(curs)
            self._track(curs, view, position)

    def finish_rebuild(self, end: int) -> None:
        """Index the rebuilt views and move them to `end`, in one transaction."""
        with self._transaction() as curs:
            self._lock(curs, self.views, wait=True)
            curs.execute("SET LOCAL maintenance_work_mem = '256MB'")
            trigrams = _has_trigrams(curs)
            for view in self.views:
                view.create(curs, trigrams)
                self._track(curs, view, end)
            self._notify(curs, ())

    # --- the loop ------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Apply pages until told to stop; between pages, sleep until the store is written.

        Nothing ends the loop but `should_stop`: a lost database (a restart, a
        network cut) is waited out with capped exponential backoff, listening
        connection included; any other failure is logged and retried the same way
        (a step no view can apply is quarantined by `apply_next`, not retried)."""
        backoff = Backoff(first=0.1, cap=RETRY_CAP)
        while not should_stop():
            try:
                with listening(self.datastore, self.channel) as wait_for_write:
                    while not should_stop():
                        applied = self.apply_next()
                        backoff.succeeded()
                        if not applied:
                            wait_for_write(IDLE_WAIT)
            except Exception as error:
                delay = backoff.failed()
                if transient(error):
                    log.warning(
                        "projections lost the database; nothing half-applied; retry in %.1f s: %s",
                        delay,
                        error,
                    )
                else:
                    log.exception("projection page failed, nothing of it was applied; retry in %.1f s", delay)
                pause(delay, should_stop)

    def catch_up(self, until: int | None = None, on_page: Callable[[int], None] = lambda _: None) -> int:
        """Apply pages until every view has reached `until` (default: the log's end now)."""
        if until is None:
            until = self.log_end()
        applied = 0
        while min(self._live_positions().values(), default=until) < until:
            applied += self.apply_next()
            on_page(applied)
        return applied

    def apply_next(self) -> int:
        """One transaction: the next page for every view this runner could lock.

        Views at different positions (one being rebuilt) each get their own page.
        When a page fails for a reason that is not transient, it is applied again
        step by step (`apply_quarantining`) and what fails alone is quarantined."""
        try:
            events = self._apply_next(careful=False)
        except Exception as error:
            if transient(error):
                raise
            log.warning("projection page failed (%s); applying it again to set aside what fails", error)
            events = self._apply_next(careful=True)
        self.progress.events += events
        return events

    def _apply_next(self, careful: bool) -> int:
        events = 0
        touched: set[UUID] = set()
        with self._transaction() as curs:
            positions = self._lock(curs, self.views, wait=False)
            at: dict[int, list[View]] = {}
            for view in self.views:
                if positions.get(view.name, REBUILDING) != REBUILDING:  # a rebuild is filling it
                    at.setdefault(positions[view.name], []).append(view)
            for position, views in sorted(at.items()):
                page = self.log.after(curs, position, self.page_size)
                if page.end == position:
                    continue
                if careful:
                    set_aside = apply_quarantining(curs, self.log, page.steps, views)
                    if set_aside and len(set_aside) == len(page.steps) > 1:
                        # Every step failing alone is not bad data: the views or the database are.
                        raise RuntimeError(f"every step of the page after {position} fails; not quarantining")
                    events += len(page.steps) - len(set_aside)
                else:
                    _apply(curs, Batch(curs, self.log, page.steps), views)
                    events += len(page.steps)
                for view in views:
                    self._track(curs, view, page.end)
                touched.update(step.run_key for step in page.steps)
            if touched:  # delivered on commit: wakes read-your-writes waiters (projections/waiters.py)
                self._notify(curs, touched)
        return events

    def log_end(self) -> int:
        with self._transaction() as curs:
            return self.log.last_position(curs)

    def positions(self) -> dict[str, int]:
        with self._transaction() as curs:
            return {view.name: self._position(curs, view) for view in self.views}

    def _live_positions(self) -> dict[str, int]:
        return {name: p for name, p in self.positions().items() if p != REBUILDING}

    # --- tracking ------------------------------------------------------------------------------

    def _lock(self, curs: psycopg.Cursor[Any], views: Sequence[View], wait: bool) -> dict[str, int]:
        """Lock views' tracking rows (in name order, so two runners never deadlock).

        Without `wait`, a view another runner holds is skipped this turn."""
        locked = {}
        for view in sorted(views, key=lambda v: v.name):
            select = "SELECT notification_id FROM {} WHERE application_name = %s FOR UPDATE"
            statement = _tracking(view, select if wait else select + " SKIP LOCKED")
            curs.execute(statement, (self.application_name,))
            row = curs.fetchone()
            if row is not None:
                locked[view.name] = int(row[0])
        return locked

    def _track(self, curs: psycopg.Cursor[Any], view: View, position: int) -> None:
        curs.execute(
            _tracking(view, "UPDATE {} SET notification_id = %s WHERE application_name = %s"),
            (position, self.application_name),
        )

    def _notify(self, curs: psycopg.Cursor[Any], runs: Collection[UUID]) -> None:
        curs.execute("SELECT pg_notify(%s, %s)", (views_channel(self.log.schema), payload(runs)))

    def _position(self, curs: psycopg.Cursor[Any], view: View) -> int:
        curs.execute(
            _tracking(view, "SELECT notification_id FROM {} WHERE application_name = %s"),
            (self.application_name,),
        )
        row = curs.fetchone()
        return int(row[0]) if row else 0

    # --- connections ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self.datastore.transaction(commit=True) as curs:
            curs.row_factory = tuple_row  # type: ignore[assignment]
            yield curs


class ViewFailed(Exception):
    """A view could not apply a batch; names the view (the cause says why)."""

    def __init__(self, view: str) -> None:
        super().__init__(f"view {view} failed")
        self.view = view


def apply_quarantining(
    curs: psycopg.Cursor[Any],
    log_: EventLog,
    steps: Sequence[Recorded],
    views: Sequence[View],
    later: Collection[UUID] = (),
) -> list[int]:
    """Apply `steps` in order, halving any run of them that fails inside a
    savepoint; a step that fails alone is quarantined (recorded at once, so the
    steps after it read their run's history without it). Returns the positions
    set aside. Halves of one run are written in turn, so runs' rows are replaced,
    never appended (not `fresh`); `later` as in Batch."""
    if not steps:
        return []
    try:
        with curs.connection.transaction():  # a savepoint
            _apply(curs, Batch(curs, log_, steps, later), views)
    except Exception as error:
        if transient(error):
            raise
        if len(steps) > 1:
            middle = len(steps) // 2
            return apply_quarantining(curs, log_, steps[:middle], views, later) + apply_quarantining(
                curs, log_, steps[middle:], views, later
            )
        (step,) = steps
        view = error.view if isinstance(error, ViewFailed) else "?"
        reason = str(error.__cause__ or error)
        log.error(
            "quarantined run %s event %s (log position %d): view %s cannot apply it: %s",
            step.run_key,
            step.entry.step.event_id,
            step.position,
            view,
            reason,
        )
        quarantine.record(curs, log_.schema, step.position, step.run_key, view, reason)
        return [step.position]
    return []


def _apply(curs: psycopg.Cursor[Any], batch: Batch, views: Sequence[View]) -> None:
    for view in views:
        try:
            view.apply(curs, batch)
        except Exception as error:
            raise ViewFailed(view.name) from error


def _tracking(view: View, statement: str) -> Composed:
    return SQL(statement).format(view.tracking_identifier)


def _has_trigrams(curs: psycopg.Cursor[Any]) -> bool:
    """pg_trgm makes "text in the input reference" an index search; it ships with
    PostgreSQL but creating it may need rights the service does not have."""
    try:
        with curs.connection.transaction():
            curs.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    except psycopg.Error as error:
        log.warning(
            "pg_trgm unavailable (%s): searching input references scans the runs view",
            error.diag.message_primary or error,
        )
        return False
    return True
