"""The incident questions from the command line: `runs`, `touched`, `relied-on`, `findings`.

They read the same views, through the same queries, as the HTTP API, as the
principal the CLI's token names (api/auth.py), in its own tenant only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from eventsourcing.persistence import PersistenceError
from pydantic import BaseModel, ValidationError

from api.auth import cli_admin, cli_principal
from api.bootstrap import build_queries, build_status, open_store
from api.readiness_render import readiness_markdown, readiness_text
from domain.principals import Principal
from infra.settings import Settings
from projections.answers import RelatedRuns, RunFilter, RunQuery
from projections.bounds import in_window
from projections.queries import BadQuery, Queries
from projections.status import report_text


def when(text: str) -> datetime:
    """An ISO 8601 time for argparse; without an offset it is read as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        example = "2026-11-25T14:02Z"
        raise argparse.ArgumentTypeError(f"'{text}' is not an ISO 8601 time (e.g. {example})") from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return in_window(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"'{text}' {error}") from None


def record_path(text: str) -> tuple[str, str, str]:
    parts = text.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not SYSTEM/KIND/ID (e.g. hubspot/contact/c-1)")
    return parts[0], parts[1], parts[2]


@contextmanager
def asking(settings: Settings) -> Iterator[tuple[Queries, Principal]]:
    """The queries, and who is asking (the CLI's token): every question goes through it."""
    settings = settings.resolved()
    store = open_store(settings)
    try:
        yield build_queries(settings, store), cli_principal(settings, store)
    finally:
        store.close()


def add_tenant(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--tenant", help="optional: your own tenant; the token decides it (another is refused)")


def _print(model: BaseModel, as_json: bool, text: Callable[[], list[str]]) -> None:
    print(model.model_dump_json(indent=2) if as_json else "\n".join(text()))


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    try:
        f = RunQuery(
            workflow=args.workflow,
            final_state=args.final_state,
            finding=args.finding,
            reviewer=args.reviewer,
            agent=args.agent,
            model=args.model,
            since=args.since,
            until=args.until,
            text=args.text,
            limit=args.limit,
            cursor=args.cursor,
        )
    except ValidationError as error:
        raise BadQuery(str(error.errors()[0]["loc"][0]), error.errors()[0]["msg"]) from None
    with asking(settings) as (queries, principal):
        page = queries.runs(RunFilter(**{**f.model_dump(), "tenant": principal.tenant_for(args.tenant)}))

    def text() -> list[str]:
        lines = [f"{'run':32} {'workflow':16} {'started (UTC)':19} {'final':10} {'steps':>5}  findings"]
        for run in page.runs:
            codes = ", ".join(run.finding_codes) or "—"
            lines.append(
                f"{run.run_id:32} {run.workflow or '—':16} {_t(run.started_at):19} "
                f"{run.final_state or '—':10} {run.steps:>5}  {codes}"
            )
        if not page.runs:
            lines.append("(no runs match)")
        if page.next_cursor:
            lines.append(f"more: --cursor {page.next_cursor}")
        return lines

    _print(page, args.json, text)
    return 0


def _related_text(related: RelatedRuns, what: str) -> list[str]:
    subject = f"{related.system}/{related.kind}/{related.id}" + (
        f" version {related.version}" if related.version else ""
    )
    if not related.runs:
        return [f"No run {what} {subject}."]
    lines = [f"{len(related.runs)} run(s) {what} {subject}:"]
    for run in related.runs:
        lines.append(f"  {run.run_id}  ({run.workflow or '—'}, final {run.final_state or '—'})")
        for touch in run.touches:
            lines.append(f"    {_t(touch.at)}  {touch.verb} {touch.state}  [{touch.step_id}]")
        for use in run.uses:
            version = f"version {use.version}" if use.version else "no version"
            lines.append(f"    {_t(use.used_at)}  {version}  [{use.step_id or 'cited by no step'}]")
    return lines


def cmd_touched(settings: Settings, args: argparse.Namespace) -> int:
    system, kind, entity_id = args.record
    with asking(settings) as (queries, principal):
        tenant = principal.tenant_for(args.tenant)
        related = queries.touched(system, kind, entity_id, tenant=tenant, limit=args.limit)
    _print(related, args.json, lambda: _related_text(related, "touched"))
    return 0


def cmd_relied_on(settings: Settings, args: argparse.Namespace) -> int:
    system, kind, source_id = args.record
    with asking(settings) as (queries, principal):
        tenant = principal.tenant_for(args.tenant)
        related = queries.relied_on(
            system, kind, source_id, tenant=tenant, version=args.version, limit=args.limit
        )
    _print(related, args.json, lambda: _related_text(related, "relied on"))
    return 0


def cmd_findings(settings: Settings, args: argparse.Namespace) -> int:
    with asking(settings) as (queries, principal):
        page = queries.findings(
            tenant=principal.tenant_for(args.tenant),
            code=args.code,
            severity=args.severity,
            workflow=args.workflow,
            since=args.since,
            until=args.until,
            limit=args.limit,
            cursor=args.cursor,
        )

    def text() -> list[str]:
        lines = [
            f"{rf.run_id:32} {rf.finding.severity.upper():8} {rf.finding.code}"
            + (f" (x{rf.finding.count})" if rf.finding.count > 1 else "")
            + f": {rf.finding.message}"
            for rf in page.findings
        ] or ["(no findings match)"]
        if page.next_cursor:
            lines.append(f"more: --cursor {page.next_cursor}")
        return lines

    _print(page, args.json, text)
    return 0


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """The /health report; exit status 1 when degraded (for scripts and probes). It is
    service-wide (every tenant's processes and incidents): administration."""
    given, settings = settings, settings.resolved()
    try:
        store = open_store(settings)
    except PersistenceError as error:
        print(f"DEGRADED: the database does not answer: {error}")
        return 1
    try:
        cli_admin(given, store)
        status = build_status(settings, store)
        try:
            report = status.report()
        finally:
            status.close()
    finally:
        store.close()
    _print(report, args.json, lambda: report_text(report))
    return 0 if report.status == "ok" else 1


def cmd_readiness(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown and args.json:
        raise SystemExit("receipts readiness: choose one of --json and --markdown")
    with asking(settings) as (queries, principal):
        report = queries.readiness(principal.tenant_for(args.tenant), args.workflow, args.since)
    if args.markdown:
        print(readiness_markdown(report))
    else:
        _print(report, args.json, lambda: readiness_text(report))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        name: str, func: Callable[[Settings, argparse.Namespace], int], text: str, limit: int | None = 100
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text, description=text)
        add_tenant(cmd)
        if limit is not None:
            cmd.add_argument("--limit", type=int, default=limit, help=f"at most this many (default {limit})")
        cmd.add_argument("--json", action="store_true", help="the answer as JSON (as the HTTP API gives it)")
        cmd.set_defaults(func=func)
        return cmd

    runs = command("runs", cmd_runs, "list runs, newest first; filters combine", limit=50)
    for flag, text in (
        ("--workflow", "e.g. lead-followup"),
        ("--final-state", "e.g. sent, reverted"),
        ("--finding", "runs with this finding code, e.g. no_source_evidence"),
        ("--reviewer", "runs this person reviewed"),
        ("--agent", "agent name"),
        ("--model", "model name"),
        ("--text", "text in the input reference (system/kind/id)"),
        ("--cursor", "continue from a previous page"),
    ):
        runs.add_argument(flag, help=text)
    for cmd in (
        runs,
        findings := command("findings", cmd_findings, "receipt gaps across runs, newest runs first"),
    ):
        cmd.add_argument("--since", type=when, help="runs started at or after (ISO 8601; UTC if no offset)")
        cmd.add_argument("--until", type=when, help="runs started before")
    for flag, text in (
        ("--code", "e.g. executed_without_approval"),
        ("--severity", "info, warning, critical"),
        ("--workflow", "e.g. lead-followup"),
        ("--cursor", "continue from a previous page"),
    ):
        findings.add_argument(flag, help=text)
    touched = command(
        "touched", cmd_touched, "which runs proposed, executed or reverted something on a record"
    )
    touched.add_argument("record", type=record_path, metavar="SYSTEM/KIND/ID")
    relied = command("relied-on", cmd_relied_on, "which runs relied on a document or record")
    relied.add_argument("record", type=record_path, metavar="SYSTEM/KIND/ID")
    relied.add_argument("--version", help="only runs that used this version of it")
    ready = command(
        "readiness",
        cmd_readiness,
        "per workflow and lane: is it ready for more autonomy, and why",
        limit=None,
    )
    ready.add_argument("--workflow", help="e.g. lead-followup")
    ready.add_argument("--since", type=when, help="runs started at or after (ISO 8601; UTC if no offset)")
    ready.add_argument(
        "--markdown", action="store_true", help="the report as Markdown, for a review document"
    )
    health = sub.add_parser(
        "health",
        help="processes, view lag, quarantined events, incidents; exit 1 when degraded",
        description="The report GET /health gives; exit status 1 when degraded.",
    )
    health.add_argument("--json", action="store_true", help="the report as JSON (as GET /health gives it)")
    health.set_defaults(func=cmd_health)
