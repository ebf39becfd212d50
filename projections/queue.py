"""The approval queue: every step whose lane needs a person and that has no final decision.

A customer's consent decides a step in its place where the run's lane contract accepts
consent (`accepts_consent`): such a step waits for nobody and is not listed. Elsewhere the
item stays, and shows the consent as what it is there: information for the reviewer.

A view of whole runs like the others (domain.approvals says which steps wait);
each row keeps the item as the reviewer sees it — the proposed action and its
output, the source evidence with versions, the rule, policy version and
reasons, the required role, the model signal and the recovery path — beside
the columns the queue is filtered and ordered by.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composable, Composed, Identifier
from pydantic import Field

from domain.approvals import current_version, deciding_role, escalated, expires_at, waiting
from domain.policy import Contract
from domain.receipt_model import Consent, Receipt, StepReceipt
from domain.step_values import Action, Actor, RollbackLink, Signal, Source
from projections.bounds import Answer, Cursor, Text, decode_cursor, paged
from projections.views import Row, RunSoFar, WholeRunView

Order = Literal["oldest", "expiring"]
# Where a step with no deadline sorts in the console's queue: after every deadline
# (projections.bounds.LATEST, as a constant an index expression may hold).
NO_DEADLINE = "'9000-01-01 00:00:00+00'::timestamptz"


class QueueItem(Answer):
    run_id: str
    step_id: str
    workflow: str | None
    lane: str
    required_role: str | None
    rule_id: str
    policy_version: str
    reasons: list[str]
    action: Action
    version_hash: str | None = Field(description="the version a decision must name")
    edits: int = Field(description="edits since the draft; the version is the latest")
    signal: Signal | None
    sources: list[Source] = Field(description="the evidence the step relied on, with versions")
    rollback: RollbackLink | None = Field(description="the recovery path; None: nobody named one")
    consents: list[Consent] = Field(
        default_factory=list,
        description="the customer's consents to the step, for information: its lane contract "
        "does not take them in place of a decision",
    )
    proposed_by: Actor | None
    proposed_at: datetime | None
    waiting_since: datetime = Field(description="proposed, or last edited")
    expires_at: datetime | None = None
    event_ids: list[str] = Field(description="the events this item is read from")


class QueueFilter(Answer):
    tenant: Text | None = Field(
        default=None, description="optional: the caller's own tenant (the token decides it)"
    )
    role: Text | None = None
    workflow: Text | None = None
    lane: Literal["review", "escalate"] | None = None
    order: Order = "oldest"
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


class QueuePage(Answer):
    items: list[QueueItem]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


def queue_items(receipt: Receipt, contract: Contract | None = None) -> Iterator[tuple[int, QueueItem]]:
    """The run's steps waiting for a person, with each one's place among the run's steps;
    its lane `contract` says how long one may wait, who decides an escalated one, and whether
    a customer's consent decides in a reviewer's place."""
    deadline = contract.review_deadline if contract else None
    escalation_role = contract.escalation_role if contract else None
    accepts_consent = contract.accepts_consent if contract else False
    for seq, step in enumerate(receipt.steps):
        if waiting(step, accepts_consent):
            yield seq, _item(receipt, step, expires_at(step, deadline), deciding_role(step, escalation_role))


def _item(receipt: Receipt, step: StepReceipt, expires: datetime | None, role: str | None) -> QueueItem:
    policy, action = step.policy, step.action
    assert policy is not None and action is not None  # a waiting step has both
    edits = step.output.edits
    since = edits[-1].at if edits else step.timestamps.proposed
    assert since is not None  # a step with an action was proposed
    used = set(step.source_ids)
    events = [policy.event_id, *(e.event_id for e in edits), *(c.event_id for c in step.consents)]
    return QueueItem(
        run_id=receipt.run_id,
        step_id=step.step_id,
        workflow=receipt.workflow,
        lane="escalate" if escalated(step) else policy.lane,
        required_role=role,
        rule_id=policy.rule_id,
        policy_version=policy.policy_version,
        reasons=list(policy.reasons),
        action=action,
        version_hash=current_version(step),
        edits=len(edits),
        signal=step.signal,
        sources=[s for s in receipt.sources if s.id in used or s.key in used],
        rollback=step.rollback,
        consents=list(step.consents),
        proposed_by=step.proposed_by,
        proposed_at=step.timestamps.proposed,
        waiting_since=since,
        expires_at=expires,
        event_ids=events,
    )


class Queue(WholeRunView):
    name = "queue"
    columns = (
        "run_key",
        "tenant",
        "seq",
        "workflow",
        "lane",
        "required_role",
        "waiting_since",
        "expires_at",
        "document",
    )
    definition = """
        run_key uuid NOT NULL, tenant text NOT NULL, seq int NOT NULL, workflow text,
        lane text NOT NULL, required_role text, waiting_since timestamptz NOT NULL,
        expires_at timestamptz, document text NOT NULL, PRIMARY KEY (run_key, seq)"""
    indexes = (
        "(tenant, waiting_since, run_key, seq)",
        "(tenant, required_role, waiting_since, run_key, seq)",
        "(tenant, expires_at, run_key, seq) WHERE expires_at IS NOT NULL",
        # The console's order: soonest to expire first, then the ones with no deadline.
        f"(tenant, (COALESCE(expires_at, {NO_DEADLINE})), waiting_since, run_key, seq)",
    )
    keyed = ("tenant", "required_role")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        r = run.receipt
        for seq, item in queue_items(r, run.contract):
            yield (
                run.key,
                r.tenant,
                seq,
                item.workflow,
                item.lane,
                item.required_role,
                item.waiting_since,
                item.expires_at,
                item.model_dump_json(),
            )


def waiting_steps(datastore: PostgresDatastore, table: Composed, tenant: str, f: QueueFilter) -> QueuePage:
    """One page of the queue for `tenant`: oldest first, or soonest to expire first."""
    where: list[Composable] = [SQL("tenant = %s")]
    params: list[Any] = [tenant]
    for column, value in (("required_role", f.role), ("workflow", f.workflow), ("lane", f.lane)):
        if value is not None:
            where.append(SQL("{} = %s").format(Identifier(column)))
            params.append(value)
    by = "waiting_since" if f.order == "oldest" else "expires_at"
    if f.order == "expiring":
        where.append(SQL("expires_at IS NOT NULL"))
    if f.cursor:
        at, key, seq = decode_cursor(f.cursor, 3)
        where.append(SQL("({}, run_key, seq) > (%s, %s::uuid, %s::int)").format(Identifier(by)))
        params += [at, key, seq]
    statement = SQL(
        "SELECT {by}, run_key, seq, document FROM {t} WHERE {w} ORDER BY {by}, run_key, seq LIMIT %s"
    ).format(by=Identifier(by), t=table, w=SQL(" AND ").join(where))
    with datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        curs.execute(statement, [*params, f.limit + 1])
        rows = curs.fetchall()
    rows, cursor = paged(rows, f.limit, by, "run_key", "seq")
    return QueuePage(items=[QueueItem.model_validate_json(r["document"]) for r in rows], next_cursor=cursor)


class ReviewerQueue(Answer):
    """The console's queue: what the reviewer's roles may decide (and what needs no role),
    soonest to expire first, then the steps with no deadline, oldest first."""

    roles: list[str]
    workflow: Text | None = None
    lane: Literal["review", "escalate"] | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


def reviewer_steps(datastore: PostgresDatastore, table: Composed, tenant: str, f: ReviewerQueue) -> QueuePage:
    where: list[Composable] = [SQL("tenant = %s"), SQL("(required_role IS NULL OR required_role = ANY(%s))")]
    params: list[Any] = [tenant, f.roles]
    for column, value in (("workflow", f.workflow), ("lane", f.lane)):
        if value is not None:
            where.append(SQL("{} = %s").format(Identifier(column)))
            params.append(value)
    due = SQL(f"COALESCE(expires_at, {NO_DEADLINE})")
    if f.cursor:
        at, since, key, seq = decode_cursor(f.cursor, 4)
        where.append(SQL("({}, waiting_since, run_key, seq) > (%s, %s, %s::uuid, %s::int)").format(due))
        params += [at, since, key, seq]
    statement = SQL(
        "SELECT {due} AS due, waiting_since, run_key, seq, document FROM {t} WHERE {w} "
        "ORDER BY {due}, waiting_since, run_key, seq LIMIT %s"
    ).format(due=due, t=table, w=SQL(" AND ").join(where))
    with datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        curs.execute(statement, [*params, f.limit + 1])
        rows = curs.fetchall()
    rows, cursor = paged(rows, f.limit, "due", "waiting_since", "run_key", "seq")
    return QueuePage(items=[QueueItem.model_validate_json(r["document"]) for r in rows], next_cursor=cursor)
