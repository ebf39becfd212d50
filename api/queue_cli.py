"""`receipts queue` and `receipts approve|reject|edit|escalate RUN/STEP`: the approval queue
from the command line, as the CLI's principal (api/auth.py), with the HTTP API's rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.auth import cli_principal
from api.bootstrap import build_publisher, build_queries, open_store
from api.incident_cli import add_tenant
from domain.approvals import Decision
from domain.errors import Invalid
from infra.settings import Settings
from projections.queue import QueueFilter, QueuePage
from projections.reveal import reveal
from projections.review import decide, step_named


def cmd_queue(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    try:
        principal = cli_principal(settings, store)
        f = QueueFilter(
            role=args.role,
            workflow=args.workflow,
            lane=args.lane,
            order=args.order,
            limit=args.limit,
            cursor=args.cursor,
        )
        tenant = principal.tenant_for(args.tenant)
        page = build_queries(settings, store).queue(tenant, f)
        page = reveal(store, tenant, page, (item.run_id for item in page.items))
    finally:
        store.close()
    print(page.model_dump_json(indent=2) if args.json else "\n".join(queue_text(page)))
    return 0


def queue_text(page: QueuePage) -> list[str]:
    if not page.items:
        return ["Nothing is waiting for a decision."]
    lines = []
    for item in page.items:
        target = item.action.target
        lines += [
            f"{item.run_id} / {item.step_id}  [{item.lane}, needs {item.required_role or 'any reviewer'}]",
            f"  {item.action.verb} {target.system}/{target.kind}/{target.id} with {item.action.tool}; "
            f"rule {item.rule_id}: {'; '.join(item.reasons) or '(no reason given)'}",
            f"  waiting since {item.waiting_since:%Y-%m-%d %H:%M:%S}Z"
            + (f", expires {item.expires_at:%Y-%m-%d %H:%M:%S}Z" if item.expires_at else "")
            + f"; version {item.version_hash}"
            + (f" (after {item.edits} edit(s))" if item.edits else ""),
            f"  recovery: {item.rollback.method if item.rollback else 'none named'}; "
            f"sources: {', '.join(f'{s.id}@{s.version}' for s in item.sources) or 'none'}",
            *(
                f'  the customer said "{c.text}" at {c.at:%Y-%m-%d %H:%M:%S}Z '
                "(its lane contract does not take consent for a decision)"
                for c in item.consents
            ),
        ]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    return lines


def cmd_decide(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    output = _output(args.output) if args.verdict == "edit" else None
    store = open_store(settings)
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}), as_service=True)
    try:
        principal = cli_principal(settings, store)
        run_id, step = step_named(store, principal.tenant_for(args.tenant), args.step)
        wanted = Decision(args.verdict, args.version, args.comment, output)
        decided = decide(store, publisher, principal, run_id, step.step_id, wanted)
    finally:
        publisher.close()
        store.close()
    print(f"{decided.decision} of {decided.run_id} / {decided.step_id} (version {decided.version_hash}) sent")
    print(f"  recorded as {decided.type} {decided.event_id} by {decided.decided_by.id}")
    return 0


def _output(path: str | None) -> str:
    if path is None:
        raise Invalid("--output", "an edit needs its new text: a file, or - for standard input")
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Invalid("--output", f"{path}: cannot read it: {error}") from None


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = sub.add_parser(
        "queue",
        help="steps waiting for a person's decision, oldest first",
        description="The approval queue GET /queue gives, in your own tenant.",
    )
    add_tenant(queue)
    queue.add_argument("--role", help="only steps that need this reviewer role")
    queue.add_argument("--workflow", help="e.g. lead-followup")
    queue.add_argument("--lane", choices=("review", "escalate"))
    queue.add_argument("--order", choices=("oldest", "expiring"), default="oldest")
    queue.add_argument("--limit", type=int, default=50)
    queue.add_argument("--cursor", help="continue from a previous page")
    queue.add_argument("--json", action="store_true", help="the answer as JSON (as the HTTP API gives it)")
    queue.set_defaults(func=cmd_queue)
    for verdict, text in (
        ("approve", "approve a waiting step's current version"),
        ("reject", "reject a waiting step (--comment says why)"),
        ("edit", "replace a waiting step's text with a new version (--output FILE)"),
        ("escalate", "hand a waiting step to the escalation lane"),
    ):
        cmd = sub.add_parser(
            verdict, help=text, description=f"{text}; refused (exit 3) when a rule forbids it."
        )
        cmd.add_argument("step", metavar="RUN/STEP", help="the run id, '/', the step id (as `queue` shows)")
        cmd.add_argument("--version", required=True, help="the version decided on (`queue` shows it)")
        cmd.add_argument("--comment", help="why (required to reject)")
        if verdict == "edit":
            cmd.add_argument("--output", help="a file with the new text, or - for standard input")
        add_tenant(cmd)
        cmd.set_defaults(func=cmd_decide, verdict=verdict, output=None)
