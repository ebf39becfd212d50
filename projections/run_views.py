"""Views of runs and their steps: one row per run (`runs`), its receipt (`receipts`), its
findings (`findings`), and one row per recorded step (`timeline`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from projections.views import Batch, Row, RunSoFar, View, WholeRunView


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
