"""Findings a reviewer can trust: what the receipt reports once every detector has spoken.

Two rules over a run's findings, applied last (`trusted`):

- A run imported from a format that carries no approvals (`run.started` `origin` with
  `approvals_recorded: false`) cannot show a missing approval: its executed or attempted
  steps without one are ONE info finding, `approvals_not_recorded`, naming every step and
  event, not a violation per step.
- The same gap on many steps of one run is one finding with a `count`, every step in
  `step_ids` and every evidence event in `event_ids`, not a wall of lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from domain.evidence import Finding
from domain.step_values import Origin
from domain.steps import RunStarted, StepEvent

# The findings that say an approval is missing: what a format without approvals cannot show.
APPROVAL_GAPS = frozenset({"executed_without_approval", "attempted_without_approval"})


def trusted(findings: Iterable[Finding], events: Sequence[StepEvent]) -> list[Finding]:
    origin = next((e.data.origin for e in events if isinstance(e, RunStarted)), None)
    listed = list(findings)
    if origin is not None and not origin.approvals_recorded:
        listed = approvals_not_recorded(listed, origin)
    return fold_repeats(listed)


def approvals_not_recorded(findings: list[Finding], origin: Origin) -> list[Finding]:
    """The approval gaps of a run whose format records no approvals, as one info finding."""
    gaps = [f for f in findings if f.code in APPROVAL_GAPS]
    if not gaps:
        return findings
    steps = _unique(s for f in gaps for s in _steps_of(f))
    summary = Finding(
        code="approvals_not_recorded",
        severity="info",
        message=f"imported from {origin.format}, which does not record approvals: "
        f"{len(steps)} step(s) executed or attempted with none on record",
        step_id=steps[0] if len(steps) == 1 else None,
        event_ids=_unique(e for f in gaps for e in f.event_ids),
        count=len(steps),
        step_ids=tuple(steps),
    )
    first = findings.index(gaps[0])
    rest = [f for f in findings if f.code not in APPROVAL_GAPS]
    return [*rest[:first], summary, *rest[first:]]


def fold_repeats(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (code, severity), in the place of its first: counts and evidence summed."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.code, finding.severity), []).append(finding)
    return [_one(group) for group in groups.values()]


def _one(group: list[Finding]) -> Finding:
    first = group[0]
    steps = _unique(s for f in group for s in _steps_of(f))
    if len(group) == 1:
        return first.model_copy(update={"step_ids": tuple(steps)}) if steps != first.step_ids else first
    count = sum(f.count for f in group)
    where = f" (on {len(steps)} steps)" if len(steps) > 1 else ""
    return Finding(
        code=first.code,
        severity=first.severity,
        message=f"{count} times{where}; first: {first.message}",
        step_id=steps[0] if len(steps) == 1 else None,
        event_ids=_unique(e for f in group for e in f.event_ids),
        count=count,
        step_ids=tuple(steps),
    )


def _steps_of(finding: Finding) -> tuple[str, ...]:
    return finding.step_ids or ((finding.step_id,) if finding.step_id else ())


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
