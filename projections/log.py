"""The event store's notification log, read as recorded steps.

Projections follow the log by notification id, the position eventsourcing
gives every stored event in commit order (its recorder locks the table per
transaction, so no lower id can appear later).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from domain.run import Entry
from infra.policies import PolicyBook, PolicyTable
from infra.rows import OPENED_TOPIC, RECORDED_TOPIC, stored_entry
from projections import quarantine
from schemas import Codec, DecodeError

log = logging.getLogger(__name__)
STEP_TOPICS = (OPENED_TOPIC, RECORDED_TOPIC)
_LAST_POSITION = 2**63 - 1  # notification ids are bigint


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded step at its place in the log."""

    position: int
    run_key: UUID
    entry: Entry


@dataclass(frozen=True, slots=True)
class Page:
    """Steps after a position, and the position to track once they are applied:
    the last notification read, which may be a row that is not a step."""

    steps: list[Recorded]
    end: int


class EventLog:
    def __init__(self, schema: str, events_table: str, codec: Codec) -> None:
        self.schema = schema
        self.codec = codec
        self.events_table = events_table
        # The recorded policies, for the lane contract each run is checked against.
        self.policy_book = PolicyBook(PolicyTable(schema))
        # LIMIT NULL is no limit.
        # A quarantined step is read (its position still counts) but not applied.
        self._range = SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
            "q.position IS NOT NULL FROM {}.{} e LEFT JOIN {} q ON q.position = e.notification_id "
            "WHERE e.notification_id > %s AND e.notification_id <= %s ORDER BY e.notification_id LIMIT %s"
        ).format(Identifier(schema), Identifier(events_table), quarantine.table(schema))
        # Each run's steps before the given version: what a page needs to render
        # a run whose earlier steps arrived in earlier pages.
        self._before = SQL(
            "SELECT e.originator_id, e.originator_version, e.state FROM {}.{} e "
            "JOIN unnest(%s::uuid[], %s::int[]) AS b(run, version) "
            "ON e.originator_id = b.run AND e.originator_version < b.version "
            "WHERE NOT EXISTS (SELECT FROM {} q WHERE q.position = e.notification_id) "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(Identifier(schema), Identifier(events_table), quarantine.table(schema))
        self._continuing = SQL(
            "SELECT DISTINCT originator_id FROM {}.{} "
            "WHERE originator_id = ANY(%s) AND notification_id > %s AND notification_id <= %s"
        ).format(Identifier(schema), Identifier(events_table))
        self._last = SQL("SELECT max(notification_id) FROM {}.{}").format(
            Identifier(schema), Identifier(events_table)
        )

    def after(self, curs: psycopg.Cursor[Any], position: int, limit: int) -> Page:
        return self._page(curs, position, _LAST_POSITION, limit)

    def between(self, curs: psycopg.Cursor[Any], start: int, end: int) -> Page:
        """The steps at positions in (start, end]."""
        return self._page(curs, start, end, None)

    def continuing(self, curs: psycopg.Cursor[Any], runs: list[UUID], after: int, until: int) -> set[UUID]:
        """Which of `runs` have steps at positions in (after, until]."""
        curs.execute(self._continuing, (runs, after, until))
        return {row[0] for row in curs.fetchall()}

    def _page(self, curs: psycopg.Cursor[Any], position: int, until: int, limit: int | None) -> Page:
        curs.execute(self._range, (position, until, limit), prepare=True)
        steps: list[Recorded] = []
        end = position
        for notification_id, run_key, version, topic, state, quarantined in curs.fetchall():
            end = notification_id
            if topic not in STEP_TOPICS or quarantined:
                continue
            entry = self.entry(version, bytes(state), run_key, notification_id)
            if isinstance(entry, Entry):
                steps.append(Recorded(notification_id, run_key, entry))
            else:  # no view can apply what does not decode: set aside, visible in /health
                reason = f"the stored row no longer decodes: {entry}"
                quarantine.record(curs, self.schema, notification_id, run_key, "log", reason)
        return Page(steps, end)

    def before(self, curs: psycopg.Cursor[Any], first_versions: dict[UUID, int]) -> dict[UUID, list[Entry]]:
        earlier: dict[UUID, list[Entry]] = {}
        wanted = [(run, version) for run, version in first_versions.items() if version > 1]
        if not wanted:
            return earlier
        curs.execute(self._before, ([r for r, _ in wanted], [v for _, v in wanted]))
        for run_key, version, state in curs.fetchall():
            entry = self.entry(version, bytes(state), run_key, None)
            if isinstance(entry, Entry):
                earlier.setdefault(run_key, []).append(entry)
        return earlier

    def last_position(self, curs: psycopg.Cursor[Any]) -> int:
        curs.execute(self._last)
        row = curs.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def entry(self, version: int, state: bytes, run_key: UUID, position: int | None) -> Entry | str:
        """The stored step, or why it no longer decodes (logged): an altered row, or
        one stored before the door checked what it checks now, must not stop every
        projection; `receipts verify` names it."""
        try:
            return stored_entry(version, state, self.codec)
        except (ValueError, KeyError, UnicodeDecodeError, DecodeError) as error:
            log.warning(
                "projections skip run %s version %d (notification %s): the stored row no longer decodes: %s",
                run_key,
                version,
                position,
                error,
            )
            return str(error)


def group_by_run(steps: Iterable[Recorded]) -> dict[UUID, list[Entry]]:
    runs: dict[UUID, list[Entry]] = {}
    for recorded in steps:
        runs.setdefault(recorded.run_key, []).append(recorded.entry)
    return runs


def histories(
    curs: psycopg.Cursor[Any], log_: EventLog, steps: Sequence[Recorded]
) -> dict[UUID, list[Entry]]:
    """Every run touched by `steps`, with all its entries up to the last of them."""
    runs = group_by_run(steps)
    earlier = log_.before(curs, {run: entries[0].version for run, entries in runs.items()})
    return {run: earlier.get(run, []) + entries for run, entries in runs.items()}


@contextmanager
def listening(datastore: PostgresDatastore, channel: str) -> Iterator[Callable[[float], None]]:
    """A connection LISTENing to the store's channel: its waiter returns at the next
    write (NOTIFY, sent on commit) or after the timeout."""
    with datastore.get_connection() as conn:  # eventsourcing's are autocommit
        conn.execute(SQL("LISTEN {}").format(Identifier(channel)))

        def wait_for_write(timeout: float) -> None:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass

        try:
            yield wait_for_write
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost connection has nothing to undo
                conn.execute(SQL("UNLISTEN {}").format(Identifier(channel)))
