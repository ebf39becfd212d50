"""`receipts rollback RUN` (ask, as the CLI's principal, with the HTTP API's rules),
`receipts rollbacks` (where each stands), `receipts rollback-worker` (the rollback
consumer) and `receipts rollback-plan` (administration: publishes the plan of a request
already recorded again, e.g. after a crash: the same ids, so harmless).
"""

from __future__ import annotations

import argparse
import logging

from api.auth import cli_admin, cli_principal
from api.bootstrap import build_publisher, open_store
from api.incident_cli import add_tenant, asking
from api.liveness import Beats
from api.supervise import Stop
from consumers.rollback import RollbackWorker
from domain.rollback import RollbackPlan
from infra.idempotency import Answered, once
from infra.kafka import consumer, ensure_topics, producer
from infra.publisher import Publisher
from infra.publishers import service_signer
from infra.rollback.adapter import Adapter
from infra.rollback.build import build_adapters
from infra.rollback.config import read_rollback_config
from infra.rollback.requests import plan_recorded, publish_plan
from infra.settings import Settings
from projections.review import ask_rollback
from projections.rollbacks import RollbackFilter

log = logging.getLogger(__name__)


def build_rollback_worker(settings: Settings) -> RollbackWorker:
    """The rollback consumer with the adapters `RECEIPTS_ROLLBACK` configures."""
    assert settings.kafka_bootstrap
    adapters: dict[str, Adapter] = {}
    if settings.rollback is not None:
        adapters = build_adapters(read_rollback_config(settings.rollback))
    else:
        log.warning("RECEIPTS_ROLLBACK is not set: every reverse event will be recorded as failed")
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    raw = producer(settings.kafka_bootstrap)
    kafka = consumer(settings, group_id=settings.rollback_group)
    kafka.subscribe([settings.reverse_topic])
    return RollbackWorker(
        kafka,
        Publisher(
            producer=raw,
            topic=settings.topic,
            encoding=settings.encoding,
            signer=service_signer(settings.signing_key_file),
        ),
        raw,
        settings.dlq_topic,
        adapters,
    )


def cmd_rollback_worker(settings: Settings, _args: argparse.Namespace) -> int:
    settings = settings.resolved()
    stop = Stop()
    stop.install()
    worker = build_rollback_worker(settings)
    print(
        f"rollback worker: {settings.reverse_topic} -> {settings.topic} (group {settings.rollback_group})",
        flush=True,
    )
    beats = Beats(settings, "rollback")  # its row in receipts_processes: /health sees it
    beats.beat(now=True)
    try:
        worker.run(beats.on_each_turn(stop.requested))
    finally:
        worker.close()
    beats.stopped()
    print(
        f"rollback worker stopped: {worker.handled} handled, {worker.dead_lettered} dead-lettered", flush=True
    )
    return 0


def cmd_rollback_plan(settings: Settings, args: argparse.Namespace) -> int:
    given, settings = settings, settings.resolved()
    store = open_store(settings)
    try:
        cli_admin(given, store)  # any tenant's run: administration
        planned = plan_recorded(store, args.tenant, args.run_id, args.rollback_id)
    finally:
        store.close()
    publisher = build_publisher(settings, as_service=True)
    try:
        publish_plan(planned, publisher, settings.reverse_topic)
    finally:
        publisher.close()
    _print_plan(planned)
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}), as_service=True)
    try:
        principal = cli_principal(settings, store)
        principal.tenant_for(args.tenant)
        steps = args.step or []
        asked = {"run_id": args.run_id, "reason": args.reason, "steps": steps}
        topic, key = settings.reverse_topic, args.idempotency_key

        def handle() -> Answered:
            plan = ask_rollback(store, publisher, principal, args.run_id, args.reason, steps, topic, key)
            return Answered(202, plan.model_dump(mode="json"))

        if key is None:
            answered = handle()
        else:
            datastore = store.steps.datastore
            answered = once(datastore, settings.database_schema, principal.tenant, key, asked, handle)
    finally:
        publisher.close()
        store.close()
    planned = RollbackPlan.model_validate(answered.body)
    print(f"rollback {planned.rollback_id} of {planned.run_id} asked")
    _print_plan(planned)
    return 0


def cmd_rollbacks(settings: Settings, args: argparse.Namespace) -> int:
    with asking(settings) as (queries, principal):
        page = queries.rollbacks(
            principal.tenant_for(args.tenant),
            RollbackFilter(state=args.state, limit=args.limit, cursor=args.cursor),
        )
    if args.json:
        print(page.model_dump_json(indent=2))
        return 0
    if not page.rollbacks:
        print("No rollback has been asked for.")
    for item in page.rollbacks:
        r = item.recovery
        print(f"{r.requested_at:%Y-%m-%d %H:%M:%S}Z {item.run_id} [{r.state}] {r.rollback_id}")
        print(f"  asked by {r.requested_by.id}: {r.reason}")
        for action in r.actions:
            outcome = action.reverse_ref or action.error or ""
            print(f"  {action.step_id}: {action.method} -> {action.outcome} {outcome}")
        for stands in r.stands:
            print(f"  {stands.step_id}: stands — {stands.runbook}")
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


def _print_plan(planned: RollbackPlan) -> None:
    for reverse in planned.reverse:
        print(f"reverse {reverse.reverse_id}: {reverse.method} {reverse.step_id} on {reverse.target.key}")
    for stands in planned.stands:
        print(f"stands  {stands.step_id}: {stands.data.runbook}")
    for skipped in planned.skipped:
        print(f"skipped {skipped.step_id}: {skipped.why}")
    print(
        "partial: what stands needs a person"
        if planned.partial
        else "every executed step has its reverse action"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "rollback-worker",
        help="run the rollback consumer: reverse events to their targets (RECEIPTS_ROLLBACK)",
    )
    worker.set_defaults(func=cmd_rollback_worker)
    planned = sub.add_parser(
        "rollback-plan", help="(internal) publish the reverse events of a recorded rollback.requested again"
    )
    planned.add_argument("run_id")
    planned.add_argument("--rollback-id", required=True)
    planned.add_argument("--tenant", default="default")
    planned.set_defaults(func=cmd_rollback_plan)
    ask = sub.add_parser(
        "rollback",
        help="ask to roll a run (or some of its steps) back; needs the workflow's rollback role",
        description="Records the request and publishes one reverse event per executed step to the "
        "rollback tooling; what cannot be undone stands, with its runbook. Refused (exit 3) without "
        "the role the run's lane contract names for rollbacks (`rollback` by default).",
    )
    ask.add_argument("run_id", metavar="RUN")
    ask.add_argument(
        "--step", action="append", help="a step id to undo (repeat; default: every executed step)"
    )
    ask.add_argument("--reason", required=True, help="why: it goes in the receipt")
    ask.add_argument("--idempotency-key", help="a key of your own: asking again with it changes nothing")
    add_tenant(ask)
    ask.set_defaults(func=cmd_rollback)
    listed = sub.add_parser("rollbacks", help="every rollback asked for, newest first, and where it stands")
    listed.add_argument(
        "--state", choices=("requested", "running", "failed", "partially reverted", "corrected", "reverted")
    )
    listed.add_argument("--limit", type=int, default=50)
    listed.add_argument("--cursor", help="continue from a previous page")
    listed.add_argument("--json", action="store_true", help="the answer as JSON (as the HTTP API gives it)")
    add_tenant(listed)
    listed.set_defaults(func=cmd_rollbacks)
