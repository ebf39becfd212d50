"""`receipts policy …`: the policy commands that need no server.

`sample` prints the shipped policy, `check FILE` validates one (exit 1 naming the
line and field), `explain-step FILE STEPS.jsonl` shows every rule against one
step, and `test FILE EVENTS.jsonl` is a dry run of a candidate policy over
recorded steps (without EVENTS.jsonl, over the event store: api/policy_record.py,
with `explain RUN/STEP`; `publish`, `show` and `versions`, which need the database,
are api/policy_admin.py). Steps are contract events, one JSON object a line, read
through the same codec (and limits) as ingest. `add_commands(sub)` hangs them under
`receipts`; `main(argv)` runs them on their own (and in tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path

from api import policy_admin, policy_record
from api.incident_cli import when
from api.policy_text import explained, trial_json, trial_text
from domain.errors import ReceiptsError
from domain.policy import Policy, PolicyError, load_policy, sample_text
from domain.routing import Router, RunContext, to_route
from domain.steps import ActionEdited, ActionProposed, StepEvent
from domain.trial import trial
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
    print("\n".join(explained(explanation, step)))
    return 0


@_reported
def cmd_test(settings: object, args: argparse.Namespace) -> int:
    policy = _policy(args.file)
    if args.events is None:  # the steps recorded in the event store
        result = policy_record.trial_recorded(settings, policy, args.since, args.examples)
    else:
        result = trial(Router(policy), _events(args.events), examples=args.examples, since=args.since)
    print(json.dumps(trial_json(result), indent=2) if args.json else "\n".join(trial_text(result)))
    return 0


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
        "test",
        help="dry run: which recorded steps a candidate policy would route otherwise",
        description="A dry run of a candidate policy over recorded steps, before it is published: how "
        "many would change lane, which way, with examples. Reads the event store, or a JSONL file.",
    )
    test.add_argument("file", help="the candidate policy (TOML)")
    test.add_argument(
        "events",
        nargs="?",
        help="JSONL contract events of recorded runs, in recording order; "
        "without it, every step recorded in the event store (needs the database)",
    )
    test.add_argument(
        "--since",
        type=when,
        help="count only steps proposed or edited at or after this time (ISO 8601; UTC if no offset); "
        "earlier steps of their runs still give them their context",
    )
    test.add_argument("--json", action="store_true", help="the counts and examples as JSON")
    test.add_argument("--examples", type=int, default=5, help="at most this many examples (default 5)")
    test.set_defaults(func=cmd_test)
    policy_admin.add_commands(commands)
    policy_record.add_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="receipts")
    add_commands(top.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = top.parse_args(argv)
    try:
        return int(args.func(None, args))
    except ReceiptsError as error:  # as `receipts` itself reports them
        print(f"receipts: {error.detail}", file=sys.stderr)
        return error.exit_code
