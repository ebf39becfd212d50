"""How the policy commands print an explanation and a dry run: shared by the commands that read
files (api/policy_cli.py) and the ones that read the store (api/policy_record.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from api.render import short_version
from domain.routing import Explanation
from domain.steps import StepEvent
from domain.trial import Trial


def explained(explanation: Explanation, step: StepEvent) -> list[str]:
    d = explanation.decision
    lines = [
        f"step {step.step_id} ({step.type}, event {step.event_id}) of run {step.run_id}",
        f"decision: {d.lane} by rule {d.rule_id} (policy {short_version(d.policy_version)})"
        + (f", reviewer role {d.required_role}" if d.required_role else ""),
        *(f"  reason: {reason}" for reason in d.reasons),
        *(["  missing: " + ", ".join(d.missing_fields)] if d.missing_fields else []),
        f"  matched: {', '.join(d.matched_rules) or 'no rule (the default)'}",
        "rules, in order (the first that matches routes):",
    ]
    for verdict in explanation.rules:
        mark = "ROUTES" if verdict.routed else ("matches" if verdict.matched else "no match")
        lines.append(f"  [{mark}] {verdict.rule_id} -> {verdict.lane}")
        lines.extend(
            f"      {'yes' if c.holds else 'NO '} {c.condition}: wants {c.expected}; step has {c.actual}"
            for c in verdict.checks
        )
        if not verdict.checks:
            lines.append("      (the default: routes when no rule matches)")
    return lines


def trial_json(result: Trial) -> dict[str, Any]:
    document = asdict(result)
    document["unchanged"] = result.unchanged
    document["since"] = result.since.isoformat() if result.since else None
    document["transitions"] = [{"from": a, "to": b, "steps": n} for a, b, n in result.transitions]
    return document


def trial_text(result: Trial) -> list[str]:
    lines = [
        f"candidate policy {short_version(result.policy_version)} over {result.runs} runs, "
        f"{result.proposed} proposed steps"
        + (f" (proposed or edited since {result.since.isoformat()})" if result.since else ""),
        f"  would change lane: {result.changed} of {result.compared} with a recorded decision "
        f"({result.unchanged} unchanged); {result.undecided} had no recorded decision",
        *(f"  {a} -> {b}: {n}" for a, b, n in result.transitions),
    ]
    if result.examples:
        lines.append("examples:")
    for change in result.examples:
        lines.append(
            f"  {change.run_id} / {change.step_id}: {change.recorded_lane} ({change.recorded_by} rule "
            f"{change.recorded_rule}) -> {change.lane} (rule {change.rule_id}: {'; '.join(change.reasons)})"
        )
    return lines


def explanation_json(explanation: Explanation, step: StepEvent) -> dict[str, Any]:
    """`explained` as data: the step, the decision, and every rule with its checks."""
    return {
        "tenant": step.tenant,
        "run_id": step.run_id,
        "step_id": step.step_id,
        "event_id": step.event_id,
        "type": step.type,
        "decision": explanation.decision._asdict(),
        "rules": [asdict(verdict) for verdict in explanation.rules],
    }
