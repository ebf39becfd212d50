"""`receipts verify … --checkpoints`: the event store read against checkpoints kept outside it.

Rows are streamed by position in pages (binary transfer, plain tuples: the pass
must keep up with 50k events/s), fed to projections/audit.LogAudit, with
progress. The checkpoints come from a directory or the checkpoints topic and
count only once infra/checkpoint_files has checked their signatures and chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier
from pydantic import BaseModel

from domain.checkpoint import Finding
from domain.run import run_uuid
from infra.checkpoint_files import Collected, check_chain, from_dir, from_topic
from infra.settings import Settings
from infra.signing import PublicKey
from infra.store import RunStore
from projections.audit import AuditReport, LogAudit, StoredRow

PAGE = 20_000
TOPIC = "topic"


def collect(settings: Settings, source: str) -> Collected:
    """`topic` (this service's checkpoints topic), `topic:NAME`, or a directory."""
    if source == TOPIC or source.startswith(TOPIC + ":"):
        assert settings.kafka_bootstrap
        name = source.partition(":")[2] or settings.checkpoints_topic
        return from_topic(settings.kafka_bootstrap, name)
    return from_dir(Path(source))


class AnchoredVerdict(BaseModel):
    """What `verify --checkpoints` reports: the checkpoints' own check, then the store's."""

    source: str
    scope: str  # "all" or tenant/run_id
    checkpoints_valid: int
    report: AuditReport
    chain_findings: list[Finding]
    trusted_keys: list[str]
    anchors_given: bool
    notes: list[str] = []

    @property
    def findings(self) -> list[Finding]:
        return self.chain_findings + self.report.findings

    @property
    def verified(self) -> bool:
        return not self.findings


def verify_anchored(
    store: RunStore,
    collected: Collected,
    anchors: list[PublicKey],
    run: tuple[str, str] | None = None,
    progress: Callable[[int], None] = lambda _: None,
) -> AnchoredVerdict:
    recorder = store.steps
    with recorder.datastore.transaction(commit=False) as curs:
        latest = recorder.checkpoint_tables.latest(curs)
    chain = check_chain(collected, anchors, latest.seq if latest else None)
    only = run_uuid(*run) if run else None
    names = {only: f"{run[0]}/{run[1]}"} if only and run else run_names(store)
    audit = LogAudit(chain.checkpoints, only=only, names=names)
    for page in stored_pages(store, only):
        audit.feed(page)
        progress(audit.events)
    return AnchoredVerdict(
        source=collected.where,
        scope=f"{run[0]}/{run[1]}" if run else "all",
        checkpoints_valid=len(chain.checkpoints),
        report=audit.finish(),
        chain_findings=chain.findings,
        trusted_keys=sorted(chain.trusted),
        anchors_given=bool(anchors),
        notes=chain.notes,
    )


def run_names(store: RunStore) -> dict[UUID, str]:
    """tenant/run_id by store id, from the table of the run ids ingest has seen: a deleted
    run is named while its row there is left (else by its id, which the checkpoints sign)."""
    recorder = store.steps
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
        curs.execute(SQL("SELECT tenant, run_id FROM {}").format(recorder.run_tenants))
        return {run_uuid(tenant, run_id): f"{tenant}/{run_id}" for tenant, run_id in curs}


def stored_pages(store: RunStore, only: UUID | None = None, page: int = PAGE) -> Iterator[list[StoredRow]]:
    """The events table by position, a page at a time (one run's rows when `only`)."""
    recorder = store.steps
    table = SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    where = SQL("AND originator_id = %s") if only else SQL("")
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, state FROM {} "
        "WHERE notification_id > %s {} ORDER BY notification_id LIMIT %s"
    ).format(table, where)
    after = 0
    while True:
        with (
            recorder.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            params: tuple[Any, ...] = (after, only, page) if only else (after, page)
            curs.execute(statement, params)
            rows = curs.fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def anchored_text(v: AnchoredVerdict) -> list[str]:
    r = v.report
    if v.verified:
        head = f"OK: {v.scope}: {r.anchored} events verified against {v.checkpoints_valid} signed checkpoints"
    else:
        head = f"BROKEN: {v.scope}: {len(v.findings)} finding(s) against the checkpoints in {v.source}"
    lines = [head]
    for f in v.findings:
        where = " ".join(
            part
            for part in (
                f"run {f.run}" if f.run else "",
                f"version {f.version}" if f.version else "",
                f"checkpoint {f.checkpoint}" if f.checkpoint and not f.run else "",
            )
            if part
        )
        lines.append(f"  {f.kind}: {where + ': ' if where else ''}{f.detail}")
    lines.append(
        f"  {r.events} events read, {r.anchored} anchored, {r.not_anchored} not yet anchored "
        f"(after position {r.last_anchored_position or 0}: newer than the last checkpoint, not verified)"
    )
    lines += [f"  note: {note}" for note in v.notes]
    keys = ", ".join(v.trusted_keys) or "none"
    lines.append(
        f"  trusted keys: {keys}"
        + ("" if v.anchors_given else f" (no --public-key given: the key history in {v.source} was trusted)")
    )
    return lines
