"""Views of the records a run referred to: the targets its steps proposed, executed or
reverted (`touches`) and the sources it read (`sources`), so a record leads to its runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from domain.step_values import Reference
from domain.steps import ActionExecuted, ActionProposed, ActionReverted, SourceUsed
from projections.views import Row, RunSoFar, WholeRunView


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
