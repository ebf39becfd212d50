"""Asking for a rollback, and publishing its plan: the seam the HTTP endpoint and CLI will call.

`request_rollback` records the request (`rollback.requested`, published to
`agent-steps` like any step), plans it over the run as recorded, and publishes
the plan: `rollback.stands` facts to `agent-steps`, reverse events to
`agent-steps.reverse`. Who may ask is not decided here: the caller (the future
`POST /runs/{run}/rollback` and `receipts rollback`, once principals and roles
exist) checks the role first and passes the principal as `requested_by`.

Exactly once in effect: every id derives from the rollback id, so publishing the
same plan again (a retry, a crash half-way, `receipts rollback-plan` run twice)
sends the same ids: ingest records each step id once and the rollback consumer's
adapters apply each reverse id once. A plan made again after some reverse events
finished leaves those steps out (they are reverted): a finished rollback re-run
publishes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import uuid4

from domain import rollback
from domain.errors import NotFound
from domain.rollback import RollbackPlan, plan, rollback_id_of
from domain.step_values import Actor
from domain.steps import RollbackRequested
from infra.publisher import Publisher
from infra.store import RunStore
from schemas.reverse import encode_reverse


class RollbackNotFound(NotFound, LookupError):
    title = "Rollback not found"


def publish_plan(planned: RollbackPlan, publisher: Publisher, reverse_topic: str) -> None:
    """What stands first (the receipt says so before anything is undone), then the reverse
    events, keyed by run so one run's are undone in the planned order; confirmed on return."""
    for stands in planned.stands:
        publisher.publish(stands)
    for reverse in planned.reverse:
        publisher.send(reverse_topic, reverse.run_id.encode(), encode_reverse(reverse))
    publisher.flush()


def request_rollback(
    store: RunStore,
    publisher: Publisher,
    run: str,
    reason: str,
    steps: Sequence[str],
    requested_by: Actor,
    *,
    reverse_topic: str,
    tenant: str = "default",
    rollback_id: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RollbackPlan:
    """Record the request for `run` and publish its plan. `rollback_id`: the caller's
    stable id for this request (e.g. derived from an Idempotency-Key); a new one if none."""
    recorded = store.run(tenant, run)  # RunNotFound before anything is published
    asked = rollback.request(
        tenant=tenant,
        run_id=run,
        rollback_id=rollback_id or str(uuid4()),
        reason=reason,
        steps=steps,
        requested_by=requested_by,
        at=clock(),
    )
    publisher.publish(asked)
    planned = plan([entry.step for entry in recorded.entries], asked)
    publish_plan(planned, publisher, reverse_topic)
    return planned


def plan_recorded(store: RunStore, tenant: str, run: str, rollback_id: str) -> RollbackPlan:
    """The plan of a `rollback.requested` already in the run's record."""
    steps = [entry.step for entry in store.run(tenant, run).entries]
    for step in steps:
        if isinstance(step, RollbackRequested) and rollback_id_of(step) == rollback_id:
            return plan(steps, step)
    raise RollbackNotFound(f"run '{run}' records no rollback.requested with rollback id '{rollback_id}'")
