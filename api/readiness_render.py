"""The readiness report as text for a terminal, or Markdown for a review document."""

from __future__ import annotations

from domain.readiness import FindingCount, LaneReadiness, Readiness, WorkflowReadiness

NOTHING = "No run with a proposed action yet."
COLUMNS = [
    "lane",
    "verdict",
    "why",
    "runs",
    "steps",
    "complete",
    "consent",
    "edits",
    "failures",
    "hand-offs",
    "reverts",
]
HEADER = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]


def _workflow(workflow: WorkflowReadiness) -> str:
    return f"{workflow.workflow}: {workflow.runs} runs, complete receipts {workflow.complete_receipts:.0%}"


def _rates(lane: LaneReadiness) -> str:
    return (
        f"consent {lane.consent_rate:.0%}, edits {lane.edit_rate:.0%}, failures {lane.failure_rate:.0%}, "
        f"hand-offs {lane.handoff_rate:.0%}, reverts {lane.revert_rate:.0%}"
    )


def _finding(f: FindingCount) -> str:
    return f"{f.code}: {f.count} (e.g. {', '.join(f.examples)})"


def readiness_text(report: Readiness) -> list[str]:
    if not report.workflows:
        return [NOTHING]
    lines = []
    for workflow in report.workflows:
        lines.append(_workflow(workflow))
        for lane in workflow.lanes:
            lines += [
                f"  {lane.workflow} / {lane.lane}: {lane.verdict} ({lane.why})",
                f"    {lane.runs} runs, {lane.steps} steps; complete receipts {lane.complete_receipts:.0%}; "
                + _rates(lane),
                *(f"    {_finding(f)}" for f in lane.findings),
            ]
    return lines


def readiness_markdown(report: Readiness) -> str:
    t = report.thresholds
    out = ["## Lane readiness", ""]
    if not report.workflows:
        return "\n".join([*out, NOTHING, ""])
    out += [
        f"Thresholds: at least {t.min_runs} runs; review-gated execution from {t.review_gated_complete:.0%} "
        f"complete receipts; auto-execution from {t.auto_complete:.0%} with edits at most "
        f"{t.auto_max_edit_rate:.0%}, failures at most {t.auto_max_failure_rate:.0%}, reverts at most "
        f"{t.auto_max_revert_rate:.0%}.",
        "",
    ]
    for workflow in report.workflows:
        out += [
            f"### {_workflow(workflow)}",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---" * len(COLUMNS) + "|",
        ]
        out += [
            f"| {lane.lane} | {lane.verdict} | {lane.why.replace('|', '/')} | {lane.runs} | {lane.steps} "
            f"| {lane.complete_receipts:.0%} | {lane.consent_rate:.0%} | {lane.edit_rate:.0%} "
            f"| {lane.failure_rate:.0%} | {lane.handoff_rate:.0%} | {lane.revert_rate:.0%} |"
            for lane in workflow.lanes
        ]
        out += ["", *(f"- {_finding(f)}" for f in workflow.findings), ""]
    return "\n".join(out)
