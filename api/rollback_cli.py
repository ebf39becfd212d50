"""`receipts rollback-worker` (the rollback consumer) and `receipts rollback-plan` (internal).

The person-facing `receipts rollback RUN` and `POST /runs/{run}/rollback` wait for
principals and roles (who may ask): they will call `infra.rollback.requests.
request_rollback` after checking the role. `rollback-plan` publishes the plan of a
request already recorded, e.g. again after a crash: the same ids, so harmless.
"""

from __future__ import annotations

import argparse
import logging

from api.bootstrap import build_publisher, open_store
from api.supervise import Stop
from consumers.rollback import RollbackWorker
from infra.kafka import consumer, ensure_topics, producer
from infra.publisher import Publisher
from infra.rollback.adapter import Adapter
from infra.rollback.build import build_adapters
from infra.rollback.config import read_rollback_config
from infra.rollback.requests import plan_recorded, publish_plan
from infra.settings import Settings

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
        Publisher(producer=raw, topic=settings.topic, encoding=settings.encoding),
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
    try:
        worker.run(stop.requested)
    finally:
        worker.close()
    print(
        f"rollback worker stopped: {worker.handled} handled, {worker.dead_lettered} dead-lettered", flush=True
    )
    return 0


def cmd_rollback_plan(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    try:
        planned = plan_recorded(store, args.tenant, args.run_id, args.rollback_id)
    finally:
        store.close()
    publisher = build_publisher(settings)
    try:
        publish_plan(planned, publisher, settings.reverse_topic)
    finally:
        publisher.close()
    for reverse in planned.reverse:
        print(f"reverse {reverse.reverse_id}: {reverse.method} {reverse.step_id} on {reverse.target.key}")
    for stands in planned.stands:
        print(f"stands  {stands.step_id}: {stands.data.runbook}")
    for skipped in planned.skipped:
        print(f"skipped {skipped.step_id}: {skipped.why}")
    print("partial: what stands needs a person" if planned.partial else "every executed step is undone")
    return 0


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
