"""Rebuilding views from the whole event store, on every core.

A rebuild is CPU work (decode every step, render every run) that the live
runner does one page at a time on one core. Here the log is cut into position
ranges that worker processes apply side by side, each in its own transaction
with its own connection: the event store is complete, so a range needs nothing
from the ranges before it. A run whose steps continue past a range is left to
the range that holds its last step, so each run's rows are written once.

Ranges commit out of order, so the views' tracking rows say REBUILDING (-1)
until every range is in; only then do they move to the log's end, in one
transaction. The live runner leaves a view at REBUILDING alone, and an
interrupted rebuild is finished by running it again.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from infra.memory import tune_gc
from infra.retry import transient
from projections.log import EventLog, Page
from projections.runner import REBUILDING, ProjectionRunner, apply_quarantining
from projections.views import Batch, View
from schemas import Codec

# Ranges of the log per worker task; big enough that a run rarely spans two.
RANGE = 20_000


@dataclass(frozen=True)
class Job:
    """What a worker process needs to apply ranges (picklable)."""

    database_url: str
    views: tuple[type[View], ...]
    schema: str
    events_table: str
    end: int


def rebuild(
    runner: ProjectionRunner,
    database_url: str,
    on_range: Callable[[int, int], None],
    workers: int | None = None,
    size: int = RANGE,
) -> int:
    """Empty the runner's views and apply the log up to its current end; returns
    how many steps were applied. `on_range(steps, positions)` after each range."""
    for view in runner.views:
        runner.reset(view, REBUILDING)
    end = runner.log_end()
    job = Job(
        database_url,
        tuple(type(v) for v in runner.views),
        runner.views[0].schema,
        runner.log.events_table,
        end,
    )
    ranges = [(start, min(start + size, end)) for start in range(0, end, size)]
    applied = 0
    for steps, (start, stop) in _apply_all(job, ranges, workers):
        applied += steps
        on_range(applied, stop - start)
    runner.finish_rebuild(end)
    runner.progress.events += applied
    return applied


def _apply_all(
    job: Job, ranges: Sequence[tuple[int, int]], workers: int | None
) -> Iterator[tuple[int, tuple[int, int]]]:
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(ranges) <= 1:
        _open(job)
        try:
            yield from map(_apply_range, ranges)
        finally:
            _worker.pop("conn").close()  # in this process: not left open for its lifetime
        return
    # spawn, not fork: the parent holds connections and (Kafka) threads.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_open, initargs=(job,)) as pool:
        yield from pool.imap_unordered(_apply_range, ranges)


_worker: dict[str, Any] = {}


def _open(job: Job) -> None:
    tune_gc()
    _worker["job"] = job
    _worker["conn"] = psycopg.connect(job.database_url)
    _worker["log"] = EventLog(job.schema, job.events_table, Codec())
    _worker["views"] = [view(job.schema) for view in job.views]


def _apply_range(bounds: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    start, stop = bounds
    job: Job = _worker["job"]
    log: EventLog = _worker["log"]
    conn: psycopg.Connection[Any] = _worker["conn"]
    views: list[View] = _worker["views"]
    try:
        with conn.transaction(), conn.cursor() as curs:
            page, later = _range(curs, log, job, start, stop)
            batch = Batch(curs, log, page.steps, later, fresh=True)
            for view in views:
                view.apply(curs, batch)
        return len(page.steps), bounds
    except Exception as error:
        if transient(error):
            raise
    # A step no view can take (not quarantined yet): the range again, step by
    # step, setting aside what fails alone, as the live runner does.
    with conn.transaction(), conn.cursor() as curs:
        page, later = _range(curs, log, job, start, stop)
        set_aside = apply_quarantining(curs, log, page.steps, views, later)
    return len(page.steps) - len(set_aside), bounds


def _range(
    curs: psycopg.Cursor[Any], log: EventLog, job: Job, start: int, stop: int
) -> tuple[Page, set[UUID]]:
    page = log.between(curs, start, stop)
    runs = list({step.run_key for step in page.steps})
    later = log.continuing(curs, runs, stop, job.end) if stop < job.end else set()
    return page, later
