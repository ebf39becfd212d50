"""Lane deadlines, kept: a step that waits for a person past its lane contract's
`review_deadline` is recorded `action.expired` by the service itself.

`receipts relay` sweeps between its turns (every `RECEIPTS_DEADLINE_CHECK_SECONDS`):
the queue view says which items are past their deadline, and each gets its
`action.expired`, written straight into the event store (a step type only the
service writes). Its id derives from the step and the deadline, so a sweep that
finds an item again before the view has applied the expiry records nothing more.
The relay then tells the platform (`outcome: expired`), and the queue drops it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.persistence import PersistenceError
from psycopg.rows import dict_row
from psycopg.sql import SQL

from domain.steps import SERVICE, StepEvent, step_adapter
from infra.store import RunStore
from projections.queue import Queue, QueueItem
from projections.review import record_service_step

log = logging.getLogger(__name__)
_EXPIRY_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/expired")
SWEEP_LIMIT = 500  # items expired per sweep: the next sweep takes the rest


class DeadlineSweeper:
    def __init__(
        self,
        store: RunStore,
        schema: str,
        every: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.every = every
        self.clock = clock
        self.next_sweep = time.monotonic()
        self.expired = 0
        self._overdue = SQL(
            "SELECT tenant, document FROM {} WHERE expires_at <= %s ORDER BY expires_at LIMIT %s"
        ).format(Queue(schema).identifier)

    def on_each_turn(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        def turn() -> bool:
            if time.monotonic() >= self.next_sweep:
                self.next_sweep = time.monotonic() + self.every
                try:
                    self.sweep()
                except (PersistenceError, OSError) as error:  # the store is away: the next sweep
                    log.warning("could not record expired steps yet: %s", error)
            return should_stop()

        return turn

    def sweep(self) -> int:
        """Record `action.expired` for every waiting step past its deadline; returns how many."""
        with self.store.steps.datastore.transaction(commit=False) as curs:
            curs.row_factory = dict_row
            curs.execute(self._overdue, (self.clock(), SWEEP_LIMIT))
            items = [
                (row["tenant"], QueueItem.model_validate_json(row["document"])) for row in curs.fetchall()
            ]
        for tenant, item in items:
            record_service_step(self.store, expired(tenant, item))
        self.expired += len(items)
        return len(items)


def expired(tenant: str, item: QueueItem) -> StepEvent:
    assert item.expires_at is not None  # only items with a deadline are swept
    key = f"{tenant}/{item.run_id}/{item.step_id}/{item.expires_at.isoformat()}"
    step: StepEvent = step_adapter.validate_python(
        {
            "type": "action.expired",
            "event_id": str(uuid5(_EXPIRY_NAMESPACE, key)),
            "run_id": item.run_id,
            "tenant": tenant,
            "occurred_at": item.expires_at,
            "actor": SERVICE,
            "step_id": item.step_id,
            "data": {"deadline": item.expires_at, "waiting_since": item.waiting_since},
        }
    )
    return step
