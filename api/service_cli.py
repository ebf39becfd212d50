"""The processes beside ingest: the projection runner (`project`), the decisions relay
(`relay`), the HTTP API (`serve`), a rebuild of views from the log (`rebuild`), and how a child of `up`
dies with it (api/up.py starts and supervises them)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

from api.bootstrap import build_decision_relay, build_projections, open_store
from api.checkpoint_cli import build_schedule
from api.liveness import Beats
from api.supervise import PARENT
from infra.memory import tune_gc
from infra.progress import Progress
from infra.settings import Settings
from projections.deadlines import DeadlineSweeper
from projections.rebuild import RANGE
from projections.rebuild import rebuild as parallel_rebuild
from projections.runner import ProjectionRunner, views_named


def cmd_project(settings: Settings, _args: argparse.Namespace, should_stop: Callable[[], bool]) -> int:
    settings = settings.resolved()
    store = open_store(settings, create=True)  # the writer side: project and rebuild
    beats = Beats(settings, "project")
    try:
        runner = build_projections(settings, store)
        tune_gc()
        beats.beat(now=True)
        runner.run(beats.on_each_turn(should_stop))
    finally:
        store.close()
    beats.stopped()  # a crash leaves the row to go stale instead
    return 0


def cmd_relay(settings: Settings, _args: argparse.Namespace, should_stop: Callable[[], bool]) -> int:
    """Publish every lane and review decision to the decisions topic, once; record steps
    that waited past their lane's deadline as expired."""
    settings = settings.resolved()
    store = open_store(settings, create=True)
    beats = Beats(settings, "relay")
    try:
        relay = build_decision_relay(settings, store)
        # Between its turns the relay also keeps lane deadlines (projections/deadlines.py).
        sweeper = DeadlineSweeper(store, settings.database_schema, settings.deadline_check_seconds)
        # …and closes signed checkpoints over the log (infra/checkpoints.py).
        checkpoints = build_schedule(settings, store)
        beats.beat(now=True)
        relay.run(beats.on_each_turn(checkpoints.on_each_turn(sweeper.on_each_turn(should_stop))))
    finally:
        store.close()
    beats.stopped()
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.web import create_app

    settings = settings.resolved()
    port = settings.http_port if args.port is None else args.port
    print(
        f"HTTP API on http://{settings.http_host}:{port} (bearer token; OpenAPI at /openapi.json)",
        flush=True,
    )
    uvicorn.run(create_app(settings), host=settings.http_host, port=port, log_level="warning")
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    views_named(settings.database_schema, args.names)  # an unknown name fails before anything is emptied
    store = open_store(settings, create=True)  # the writer side: project and rebuild
    try:
        runner = build_projections(settings, store, args.names)
        assert settings.database_url
        rebuild(runner, settings.database_url, size=args.range)
    finally:
        store.close()
    return 0


def rebuild(
    runner: ProjectionRunner,
    database_url: str,
    out: Callable[[str], None] | None = None,
    workers: int | None = None,
    size: int = RANGE,
) -> float:
    """Empty the runner's views and apply the whole log again, on every core; returns events/s.

    Progress goes to stderr (redrawn on a terminal, plain lines in a log), or to `out`."""
    names = ", ".join(view.name for view in runner.views)
    progress = Progress(f"rebuilding {names}", runner.log_end(), write=out)
    parallel_rebuild(
        runner,
        database_url,
        lambda applied, positions: progress.advance(positions, applied - progress.count),
        workers,
        size,
    )
    return progress.finish()


def die_with_parent() -> None:
    """In a child of `up`: be sent SIGTERM when `up` dies, even by SIGKILL (Linux)."""
    parent = int(os.environ.get(PARENT, "0"))
    if not parent:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
