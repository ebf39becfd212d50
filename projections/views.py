"""The read models: each a named set of tables, applied one log page at a time.

A view's `apply` is a pure function of the page (and, for views of whole runs,
each touched run's steps up to the page's end): no clock, no side effects, so a
rebuild from the log writes the same rows as incremental application. Views of
whole runs replace a touched run's rows; the timeline appends one row per step.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from domain.policy import Contract
from domain.receipt import checked
from domain.receipt_model import Receipt
from domain.run import Entry
from domain.step_values import Reference
from domain.steps import ActionExecuted, ActionProposed, ActionReverted, SourceUsed
from projections.log import EventLog, Recorded, histories

Row = tuple[Any, ...]
# PostgreSQL's btree index row holds ~2.7 KB. A longer key fails the insert, or,
# in a rebuild (indexes built at the end), the whole rebuild at its last step.
# So keys are checked as rows are written, against a limit below that.
KEY_BYTES = 2000


class UnindexableValue(ValueError):
    def __init__(self, view: str, column: str, size: int) -> None:
        super().__init__(f"{view}.{column} would be {size} bytes; an index key holds at most {KEY_BYTES}")


def _key_size(value: object) -> int:
    """Bytes of a text (or text array) key; 0 when clearly short (the common case, no encoding)."""
    if isinstance(value, str):
        return len(value.encode()) if len(value) > KEY_BYTES // 4 else 0
    if isinstance(value, list):
        return max((_key_size(item) for item in value), default=0)
    return 0


def _group_size(values: Sequence[object]) -> int:
    """Bytes the text values of one composite btree key take together; 0 when
    they are clearly short together."""
    texts = [v for v in values if isinstance(v, str)]
    if sum(map(len, texts)) <= KEY_BYTES // 4:
        return 0
    return sum(len(text.encode()) for text in texts)


@dataclass(frozen=True, slots=True)
class RunSoFar:
    """A run as a page leaves it: every step so far, the receipt they fold to, and the lane
    contract it was checked against (None: none applies)."""

    key: UUID
    entries: Sequence[Entry]
    receipt: Receipt
    contract: Contract | None = None


class Batch:
    """One page of the log, being applied; the runs it touched are rendered once,
    on first use, and shared by every view of whole runs."""

    def __init__(
        self,
        curs: psycopg.Cursor[Any],
        log: EventLog,
        steps: Sequence[Recorded],
        later: Collection[UUID] = (),
        fresh: bool = False,
    ) -> None:
        self._curs = curs
        self._log = log
        self.steps = steps
        # Runs a later page will render whole (a parallel rebuild): left to it.
        self._later = later
        # The views were emptied and no run is written twice: nothing to replace.
        self.fresh = fresh

    @cached_property
    def runs(self) -> list[RunSoFar]:
        touched = histories(self._curs, self._log, self.steps)
        contracts = self._log.policy_book.lookup(self._curs)
        runs = []
        for key, entries in touched.items():
            if entries and key not in self._later:
                runs.append(RunSoFar(key, entries, *checked(entries, contracts)))
        return runs


class View:
    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    # Column definitions, then the indexes (what follows "CREATE INDEX name ON table").
    definition: ClassVar[str]
    indexes: ClassVar[tuple[str, ...]] = ()
    # Indexes that need pg_trgm; skipped (queries still work, slower) without it.
    trigram_indexes: ClassVar[tuple[str, ...]] = ()
    # ALTER TABLE actions run after the table is made ("{}" is the table).
    alterations: ClassVar[tuple[str, ...]] = ()
    # Text columns some index keys on (see KEY_BYTES).
    keyed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, schema: str) -> None:
        self.schema = schema

    @property
    def table(self) -> str:
        return f"view_{self.name}"

    @property
    def identifier(self) -> Composed:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(self.table))

    @property
    def tracking_table(self) -> str:
        return f"{self.table}_tracking"

    @property
    def tracking_identifier(self) -> Composed:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(self.tracking_table))

    def create(self, curs: psycopg.Cursor[Any], trigrams: bool) -> None:
        curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (" + self.definition + ")").format(self.identifier))
        for alteration in self.alterations:
            curs.execute(SQL("ALTER TABLE {} " + alteration).format(self.identifier))
        indexes = self.indexes + (self.trigram_indexes if trigrams else ())
        for number, index in enumerate(indexes):
            curs.execute(
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + index).format(
                    Identifier(self._index_name(number)), self.identifier
                )
            )

    def drop_indexes(self, curs: psycopg.Cursor[Any]) -> None:
        """Drop the secondary indexes (for a bulk load; `create` builds them again)."""
        for number in range(len(self.indexes) + len(self.trigram_indexes)):
            curs.execute(
                SQL("DROP INDEX IF EXISTS {}.{}").format(
                    Identifier(self.schema), Identifier(self._index_name(number))
                )
            )

    def _index_name(self, number: int) -> str:
        return f"{self.table}_{number}"

    def apply(self, curs: psycopg.Cursor[Any], batch: Batch) -> None:
        raise NotImplementedError

    def copy(self, curs: psycopg.Cursor[Any], rows: Iterable[Row]) -> None:
        statement = SQL("COPY {} ({}) FROM STDIN").format(
            self.identifier, SQL(", ").join(map(Identifier, self.columns))
        )
        keyed = [(i, self.columns[i]) for i in map(self.columns.index, self.keyed)]
        groups = self._key_groups
        with curs.copy(statement) as copy:
            for row in rows:
                for i, column in keyed:
                    if (size := _key_size(row[i])) > KEY_BYTES:
                        raise UnindexableValue(self.name, column, size)
                for group in groups:
                    if (size := _group_size([row[i] for i in group])) > KEY_BYTES:
                        raise UnindexableValue(self.name, "+".join(self.columns[i] for i in group), size)
                copy.write_row(row)

    @cached_property
    def _key_groups(self) -> list[tuple[int, ...]]:
        """The keyed columns each btree index keys on together (GIN keys are elements or trigrams)."""
        groups = []
        for index in self.indexes:
            if "gin" in index.lower():
                continue
            names = [c for c in self.keyed if re.search(rf"\b{c}\b", index)]
            if len(names) > 1:
                groups.append(tuple(self.columns.index(c) for c in names))
        return groups


class WholeRunView(View):
    """Views of whole runs: a touched run's rows are replaced by what its steps say now."""

    def apply(self, curs: psycopg.Cursor[Any], batch: Batch) -> None:
        runs = batch.runs
        if not batch.fresh:
            curs.execute(
                SQL("DELETE FROM {} WHERE run_key = ANY(%s)").format(self.identifier),
                ([run.key for run in runs],),
            )
        self.copy(curs, (row for run in runs for row in self.rows(run)))

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        raise NotImplementedError


class Runs(WholeRunView):
    name = "runs"
    columns = (
        "run_key",
        "tenant",
        "run_id",
        "workflow",
        "input_ref",
        "input_uri",
        "agent",
        "agent_version",
        "model",
        "model_provider",
        "model_version",
        "started_at",
        "finished_at",
        "last_recorded",
        "final_state",
        "steps",
        "events",
        "findings",
        "finding_codes",
        "reviewers",
        "integrity_head",
        "verified",
    )
    definition = """
        run_key uuid PRIMARY KEY, tenant text NOT NULL, run_id text NOT NULL, workflow text,
        input_ref text, input_uri text, agent text, agent_version text, model text,
        model_provider text, model_version text, started_at timestamptz NOT NULL,
        finished_at timestamptz, last_recorded timestamptz NOT NULL, final_state text,
        steps int NOT NULL, events int NOT NULL, findings int NOT NULL,
        finding_codes text[] NOT NULL, reviewers text[] NOT NULL, integrity_head text,
        verified boolean NOT NULL"""
    # Lists are newest first, keyed (started_at, run_key) for cursor pagination.
    indexes = (
        "(tenant, started_at DESC, run_key DESC)",
        "(tenant, workflow, started_at DESC, run_key DESC)",
        "(tenant, final_state, started_at DESC, run_key DESC)",
        "(tenant, agent, started_at DESC, run_key DESC)",
        "(tenant, model, started_at DESC, run_key DESC)",
        # fastupdate off: the live runner rewrites touched runs every page, and a GIN
        # pending list that grows between vacuums slows every filtered list.
        "USING gin (finding_codes) WITH (fastupdate = off)",
        "USING gin (reviewers) WITH (fastupdate = off)",
        "(tenant, last_recorded) WHERE final_state IS NULL",
        "(tenant, run_id)",
    )
    trigram_indexes = ("USING gin (input_ref gin_trgm_ops) WITH (fastupdate = off)",)
    keyed = ("tenant", "run_id", "workflow", "final_state", "agent", "model", "finding_codes", "reviewers")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        r = run.receipt
        reviewers = sorted({review.reviewer.id for step in r.steps for review in step.reviews})
        yield (
            run.key,
            r.tenant,
            r.run_id,
            r.workflow,
            r.input.key if r.input else None,
            r.input.uri if r.input else None,
            r.agent.name if r.agent else None,
            r.agent.version if r.agent else None,
            r.model.name if r.model else None,
            r.model.provider if r.model else None,
            r.model.version if r.model else None,
            r.timestamps.started or run.entries[0].step.occurred_at,
            r.timestamps.finished,
            run.entries[-1].recorded_at,
            r.final_state,
            len(r.steps),
            len(run.entries),
            len(r.findings),
            sorted({f.code for f in r.findings}),
            reviewers,
            r.integrity.head,
            r.integrity.verified,
        )


class Receipts(WholeRunView):
    name = "receipts"
    columns = ("run_key", "tenant", "run_id", "events", "event_ids", "document")
    definition = """
        run_key uuid PRIMARY KEY, tenant text NOT NULL, run_id text NOT NULL, events int NOT NULL,
        event_ids text[] NOT NULL, document text NOT NULL"""
    # Stored out of line uncompressed: pglz was a third of writing a receipt (a
    # rebuild writes a million), and reads skip decompression. ~3x the disk.
    alterations = ("ALTER COLUMN document SET STORAGE EXTERNAL",)

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        r = run.receipt
        yield run.key, r.tenant, r.run_id, len(run.entries), list(r.event_ids), r.model_dump_json()


class Touches(WholeRunView):
    """Every target a step proposed, executed or reverted."""

    name = "touches"
    columns = (
        "run_key",
        "tenant",
        "run_id",
        "step_id",
        "system",
        "kind",
        "entity_id",
        "verb",
        "state",
        "at",
        "event_id",
    )
    definition = """
        run_key uuid NOT NULL, tenant text NOT NULL, run_id text NOT NULL, step_id text NOT NULL,
        system text NOT NULL, kind text NOT NULL, entity_id text NOT NULL, verb text NOT NULL,
        state text NOT NULL, at timestamptz NOT NULL, event_id text NOT NULL"""
    indexes = ("(tenant, system, kind, entity_id, at DESC)", "(run_key)")
    keyed = ("tenant", "system", "kind", "entity_id")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        targets: dict[str, tuple[Reference, str]] = {}
        for entry in run.entries:
            step = entry.step
            if isinstance(step, ActionProposed) and step.step_id:
                targets[step.step_id] = (step.data.action.target, step.data.action.verb)
                state = "proposed"
            elif isinstance(step, ActionExecuted):
                state = step.data.state
            elif isinstance(step, ActionReverted):
                state = "reverted"
            else:
                continue
            if step.step_id not in targets:
                continue  # no proposal names the target (a step_order finding says so)
            target, verb = targets[step.step_id]
            yield (
                run.key,
                step.tenant,
                step.run_id,
                step.step_id,
                target.system,
                target.kind,
                target.id,
                verb,
                state,
                step.occurred_at,
                step.event_id,
            )


class Sources(WholeRunView):
    """Every source a run recorded, once per step that cited it (step_id NULL: none did)."""

    name = "sources"
    columns = (
        "run_key",
        "tenant",
        "run_id",
        "step_id",
        "system",
        "kind",
        "source_id",
        "version",
        "retrieved_at",
        "used_at",
        "event_id",
    )
    definition = """
        run_key uuid NOT NULL, tenant text NOT NULL, run_id text NOT NULL, step_id text,
        system text NOT NULL, kind text NOT NULL, source_id text NOT NULL, version text,
        retrieved_at timestamptz, used_at timestamptz NOT NULL, event_id text NOT NULL"""
    indexes = ("(tenant, system, kind, source_id, version)", "(run_key)")
    keyed = ("tenant", "system", "kind", "source_id", "version")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        cited: dict[str, list[str | None]] = {}
        for receipt_step in run.receipt.steps:
            for source_id in receipt_step.source_ids:
                cited.setdefault(source_id, []).append(receipt_step.step_id)
        for entry in run.entries:
            step = entry.step
            if not isinstance(step, SourceUsed):
                continue
            s = step.data.source
            for step_id in cited.get(s.id) or [None]:
                yield (
                    run.key,
                    step.tenant,
                    step.run_id,
                    step_id,
                    s.system,
                    s.kind,
                    s.id,
                    s.version,
                    s.retrieved_at,
                    step.occurred_at,
                    step.event_id,
                )


class Findings(WholeRunView):
    name = "findings"
    columns = (
        "run_key",
        "tenant",
        "run_id",
        "workflow",
        "seq",
        "code",
        "severity",
        "message",
        "step_id",
        "event_ids",
        "started_at",
        "count",
        "step_ids",
    )
    definition = """
        run_key uuid NOT NULL, tenant text NOT NULL, run_id text NOT NULL, workflow text,
        seq int NOT NULL, code text NOT NULL, severity text NOT NULL, message text NOT NULL,
        step_id text, event_ids text[] NOT NULL, started_at timestamptz NOT NULL,
        count int NOT NULL DEFAULT 1, step_ids text[] NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (run_key, seq)"""
    # A view made before findings were counted gains the columns; `receipts rebuild findings`
    # fills them for the runs it holds.
    alterations = (
        "ADD COLUMN IF NOT EXISTS count int NOT NULL DEFAULT 1",
        "ADD COLUMN IF NOT EXISTS step_ids text[] NOT NULL DEFAULT '{{}}'",
    )
    indexes = (
        "(tenant, started_at DESC, run_key DESC, seq)",
        "(tenant, code, started_at DESC, run_key DESC, seq)",
    )
    keyed = ("tenant", "code")

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        r = run.receipt
        started = r.timestamps.started or run.entries[0].step.occurred_at
        for seq, f in enumerate(r.findings):
            yield (
                run.key,
                r.tenant,
                r.run_id,
                r.workflow,
                seq,
                f.code,
                f.severity,
                f.message,
                f.step_id,
                list(f.event_ids),
                started,
                f.count,
                list(f.step_ids),
            )


class Timeline(View):
    """Every recorded step, for time-window questions ("what happened 14:00-14:10?")."""

    name = "timeline"
    columns = (
        "position",
        "tenant",
        "occurred_at",
        "recorded_at",
        "run_key",
        "run_id",
        "type",
        "actor_kind",
        "actor_id",
        "step_id",
        "event_id",
        "vouched_by",
    )
    definition = """
        position bigint PRIMARY KEY, tenant text NOT NULL, occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL, run_key uuid NOT NULL, run_id text NOT NULL,
        type text NOT NULL, actor_kind text NOT NULL, actor_id text NOT NULL, step_id text,
        event_id text NOT NULL"""
    # The publisher whose signature held (NULL: unsigned); added after the table first shipped.
    alterations = ("ADD COLUMN IF NOT EXISTS vouched_by text",)
    indexes = ("(tenant, occurred_at DESC, position DESC)",)
    keyed = ("tenant",)

    def apply(self, curs: psycopg.Cursor[Any], batch: Batch) -> None:
        self.copy(
            curs,
            (
                (
                    r.position,
                    s.tenant,
                    s.occurred_at,
                    r.entry.recorded_at,
                    r.run_key,
                    s.run_id,
                    s.type,
                    s.actor.kind,
                    s.actor.id,
                    s.step_id,
                    s.event_id,
                    r.entry.vouch.publisher if r.entry.vouch else None,
                )
                for r in batch.steps
                for s in (r.entry.step,)
            ),
        )
