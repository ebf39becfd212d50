"""`receipts policy …`: the policy commands that need no server.

`sample` prints the shipped policy, `check FILE` validates one (exit 1 naming the
line and field), `explain-step FILE STEPS.jsonl` shows every rule against one
step, and `test FILE EVENTS.jsonl` is a dry run of a candidate policy over
recorded steps (`publish`, `show` and `versions`, which need the database, are
api/policy_admin.py). Steps are contract events, one JSON object a line, read through
the same codec (and limits) as ingest. `add_commands(sub)` hangs them under
`receipts`; `main(argv)` runs them on their own (and in tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import wraps
from pathlib import Path
from typing import Any

from api import policy_admin
from api.render import short_version
from domain.errors import ReceiptsError
from domain.policy import Policy, PolicyError, load_policy, sample_text
from domain.routing import Explanation, Router, RunContext, to_route
from domain.steps import ActionEdited, ActionProposed, StepEvent
from domain.trial import Trial, trial
from schemas.codec import Codec, DecodeError


class CommandError(Exception):
    """A problem with what the user gave: printed on stderr, exit 1."""


def _policy(path: str) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"{path}: cannot read it: {error}") from None
    try:
        return load_policy(text)
    except PolicyError as error:
        where = f"{path}:{error.line}" if error.line else path
        raise CommandError(f"{where}: {error.field + ': ' if error.field else ''}{error.message}") from None


def _events(path: str) -> list[StepEvent]:
    codec, events = Codec(), []
    try:
        with Path(path).open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        events.append(codec.decode(line.strip()))
                    except DecodeError as error:
                        raise CommandError(f"{path}:{number}: not a step: {error}") from None
    except OSError as error:
        raise CommandError(f"{path}: cannot read it: {error}") from None
    return events


Command = Callable[[object, argparse.Namespace], int]


def _reported(command: Command) -> Command:
    """A CommandError is printed on stderr and the exit code is 1, however the command is run."""

    @wraps(command)
    def run(settings: object, args: argparse.Namespace) -> int:
        try:
            return command(settings, args)
        except CommandError as error:
            print(f"receipts policy: {error}", file=sys.stderr)
            return 1

    return run


# --- the commands -------------------------------------------------------------------------------


@_reported
def cmd_sample(_settings: object, _args: argparse.Namespace) -> int:
    print(sample_text(), end="")
    return 0


@_reported
def cmd_check(_settings: object, args: argparse.Namespace) -> int:
    policy = _policy(args.file)
    print(f"{args.file}: valid policy, version {policy.version}")
    print(
        f"contracts: {len(policy.contracts)}"
        + (f" ({', '.join(sorted(policy.contracts))})" if policy.contracts else "")
    )
    print(f"rules: {len(policy.rules)}, in order, then the default:")
    for number, rule in enumerate(policy.rules, start=1):
        print(f"  {number:>3}. {rule.id} -> {rule.lane}{f' ({rule.role})' if rule.role else ''}")
    default = policy.default
    print(f"  default {default.id} -> {default.lane}{f' ({default.role})' if default.role else ''}")
    return 0


@_reported
def cmd_explain_step(_settings: object, args: argparse.Namespace) -> int:
    policy, events = _policy(args.file), _events(args.steps)
    at = next(
        (i for i in range(len(events) - 1, -1, -1) if isinstance(events[i], ActionProposed | ActionEdited)),
        None,
    )
    if at is None:
        raise CommandError(f"{args.steps}: no action.proposed (or action.edited) to explain")
    step = events[at]
    routed = to_route(events[:at], step)
    if routed is None:
        raise CommandError(
            f"{args.steps}: the edit of step '{step.step_id}' has no action.proposed before it"
        )
    explanation = Router(policy).explain(RunContext.of(events[:at]), *routed)
    print("\n".join(_explained(explanation, step)))
    return 0


def _explained(explanation: Explanation, step: StepEvent) -> list[str]:
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


@_reported
def cmd_test(_settings: object, args: argparse.Namespace) -> int:
    policy, events = _policy(args.file), _events(args.events)
    result = trial(Router(policy), events, examples=args.examples)
    print(json.dumps(trial_json(result), indent=2) if args.json else "\n".join(_trial_text(result)))
    return 0


def trial_json(result: Trial) -> dict[str, Any]:
    document = asdict(result)
    document["unchanged"] = result.unchanged
    document["transitions"] = [{"from": a, "to": b, "steps": n} for a, b, n in result.transitions]
    return document


def _trial_text(result: Trial) -> list[str]:
    lines = [
        f"candidate policy {short_version(result.policy_version)} over {result.runs} runs, "
        f"{result.proposed} proposed steps",
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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`receipts policy sample|check|explain-step|test|publish|show|versions`; each command's
    func takes (settings, args)."""
    policy = sub.add_parser("policy", help="the routing policy: sample, check, explain a step, dry-run")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    commands.add_parser("sample", help="print the sample policy, to start one's own from").set_defaults(
        func=cmd_sample
    )
    check = commands.add_parser("check", help="validate a policy file (exit 1 naming the line and field)")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)
    explain = commands.add_parser("explain-step", help="every rule against one step, matched or not, and why")
    explain.add_argument("file", help="the policy (TOML)")
    explain.add_argument(
        "steps", help="JSONL contract events: run.started, source.used…, then the action.proposed (or edited)"
    )
    explain.set_defaults(func=cmd_explain_step)
    test = commands.add_parser(
        "test", help="dry run: which recorded steps a candidate policy would route otherwise"
    )
    test.add_argument("file", help="the candidate policy (TOML)")
    test.add_argument("events", help="JSONL contract events of recorded runs, in recording order")
    test.add_argument("--json", action="store_true", help="the counts and examples as JSON")
    test.add_argument("--examples", type=int, default=5, help="at most this many examples (default 5)")
    test.set_defaults(func=cmd_test)
    policy_admin.add_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="receipts")
    add_commands(top.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = top.parse_args(argv)
    try:
        return int(args.func(None, args))
    except ReceiptsError as error:  # as `receipts` itself reports them
        print(f"receipts: {error.detail}", file=sys.stderr)
        return error.exit_code
