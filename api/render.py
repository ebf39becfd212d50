"""A receipt as text a person reads in a terminal or pastes into an incident doc."""

from __future__ import annotations

from datetime import datetime

from domain.chain import Integrity
from domain.evidence import Finding
from domain.receipt_model import PolicyRule, Receipt, StepReceipt
from domain.step_values import Reference

MISSING = "MISSING"


def _t(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "—"


def _ref(ref: Reference | None) -> str:
    if ref is None:
        return "—"
    return ref.key + (f" <{ref.uri}>" if ref.uri else "")


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def _model(receipt: Receipt) -> str:
    model = receipt.model
    return f"{model.provider}/{model.name} {model.version}" if model else MISSING


def receipt_text(receipt: Receipt) -> str:
    gaps = set(receipt.gaps())
    out: list[str] = []
    add = out.append
    add(f"Receipt for run {receipt.run_id}  (tenant {receipt.tenant}, workflow {receipt.workflow or '—'})")
    add("")
    add(
        "1. Input reference: "
        + (_ref(receipt.input) if receipt.input else f"{MISSING}: the run does not say what it worked from")
    )
    add("2. Sources used:" + (f" {MISSING}: no source evidence" if "sources" in gaps else ""))
    for source in receipt.sources:
        version = f" version {source.version}" if source.version else ""
        add(f"   - {_ref(source)}{version}, retrieved {_t(source.retrieved_at)}")
        if source.excerpt:
            add(f'     "{source.excerpt}"')
    agent = f"{receipt.agent.name} {receipt.agent.version}" if receipt.agent else MISSING
    add(f"3. Model and tool action: agent {agent}, model {_model(receipt)}")
    vouches = _vouches(receipt)
    for n, step in enumerate(receipt.steps, start=1):
        out.extend(_step_lines(n, step, vouches))
    add(f"10. Final state: {receipt.final_state or MISSING + ': no run.finished recorded'}")
    ts = receipt.timestamps
    add(
        f"    started {_t(ts.started)}  first proposal {_t(ts.first_proposed)}  "
        f"last review {_t(ts.last_reviewed)}  last execution {_t(ts.last_executed)}  "
        f"finished {_t(ts.finished)}"
    )
    out.extend(_recovery_lines(receipt))
    add("")
    add(f"Findings ({len(receipt.findings)}):" if receipt.findings else "Findings: none")
    for finding in receipt.findings:
        add(f"  {finding.severity.upper():8} {finding.code}{_where(finding)}: {finding.message}")
    out.extend(_vouched_lines(receipt))
    integrity = receipt.integrity
    head = (integrity.head or "")[:16]
    if integrity.verified:
        add(f"Integrity: {integrity.events} events, chain verifies, head {head}…")
    else:
        add(
            f"Integrity: BROKEN at event #{integrity.first_bad_version} "
            f"({integrity.first_bad_event_id}): {integrity.reason}"
        )
    return "\n".join(out)


def _vouched_lines(receipt: Receipt) -> list[str]:
    """Which publisher vouched for each event (signed it as it was sent); unsigned events too."""
    if not any(v.publisher for v in receipt.vouched):
        return ["Vouched by: no event was signed"] if receipt.vouched else []
    lines = ["Vouched by:"]
    for n, vouched in enumerate(receipt.vouched, start=1):
        lines.append(f"  #{n:<3} {vouched.type:20} {vouched.event_id}  {vouched.publisher or 'unsigned'}")
    return lines


def vouched_summary(receipt: Receipt) -> str:
    """`service (3), crm-bot (7), unsigned (1)`: who vouched for how many of the run's events."""
    counts: dict[str, int] = {}
    for vouched in receipt.vouched:
        name = vouched.publisher or "unsigned"
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} ({count})" for name, count in counts.items()) or MISSING


def _vouches(receipt: Receipt) -> dict[str, str | None]:
    """Who vouched for each event, when any event of the run was signed (else nothing to say)."""
    if not any(v.publisher for v in receipt.vouched):
        return {}
    return {v.event_id: v.publisher for v in receipt.vouched}


def _vouched_by(vouches: dict[str, str | None], event_id: str) -> str:
    if not vouches:
        return ""
    return f" (vouched by: {vouches.get(event_id) or 'nobody, unsigned'})"


def _step_lines(n: int, step: StepReceipt, vouches: dict[str, str | None]) -> list[str]:
    lines = [f"   Step {n}: {step.step_id}"]
    add = lines.append
    if step.action:
        by = f" by {step.proposed_by.kind} {step.proposed_by.id}" if step.proposed_by else ""
        add(f"   - action: {step.action.verb} on {_ref(step.action.target)} via {step.action.tool}{by}")
        if step.action.params:
            add(f"     params: {step.action.params}")
    else:
        add(f"   - action: {MISSING}: events for a step that was never proposed")
    if step.source_ids:
        add(f"     relied on: {', '.join(step.source_ids)}")
    lines.extend(_policy_lines(step))
    if step.reviews:
        for review in step.reviews:
            comment = f' "{review.comment}"' if review.comment else ""
            add(
                f"   5. reviewer: {review.reviewer.id} ({review.reviewer.role or review.reviewer.kind})"
                f" {review.decision} the {review.reviewed_version} at {_t(review.at)}{comment}"
                + _vouched_by(vouches, review.event_id)
            )
    elif not step.consents:
        add(f"   5. reviewer: {MISSING}: nobody reviewed this step")
    for consent in step.consents:
        pattern = f" (matched {consent.pattern})" if consent.pattern else ""
        who = consent.given_by
        said = f'said "{consent.text}" at {_t(consent.at)}{pattern}'
        said += _vouched_by(vouches, consent.event_id)
        add(f"   5. consent: {who.id} ({who.role or who.kind}) {said}")
    ts = step.timestamps
    add(
        f"   6. timestamps: proposed {_t(ts.proposed)}, "
        + (f"consented {_t(ts.consented)}, " if ts.consented else "")
        + f"reviewed {_t(ts.reviewed)}, "
        f"executed {_t(ts.executed)}"
    )
    lines.extend(_output_lines(step))
    signal = step.signal
    if signal and (signal.confidence is not None or signal.reason_code or signal.flags):
        add(
            f"   8. signal: confidence {signal.confidence if signal.confidence is not None else '—'}"
            f", reason {signal.reason_code or '—'}, flags {', '.join(signal.flags) or '—'}"
        )
    else:
        add(f"   8. signal: {MISSING}: no confidence or routing signal")
    rollback = step.rollback
    if rollback:
        details = ", ".join(
            f"{k} {v}"
            for k, v in (
                ("ref", rollback.ref),
                ("prior version", rollback.prior_version),
                ("runbook", rollback.runbook),
            )
            if v
        )
        add(f"   9. rollback: {rollback.method}" + (f" ({details})" if details else ""))
    else:
        add(f"   9. rollback: {MISSING}: no rollback link")
    if step.execution:
        ex = step.execution
        add(
            f"     executed: {ex.state}"
            + (f" ref {ex.external_ref}" if ex.external_ref else "")
            + (f" <{ex.url}>" if ex.url else "")
            + _vouched_by(vouches, ex.event_id)
        )
    if step.reversal:
        rv = step.reversal
        outcome = (
            f"reverted by {rv.reverse_ref or rv.reverted_method}" if rv.reverted_method else "not reverted"
        )
        add(
            f"     reversal: {rv.state or 'requested'} ({rv.requested_reason or 'see Recovery'}), {outcome}"
            + (f", failed: {rv.failed_error}" if rv.failed_error else "")
            + (f", stands: {rv.stands}" if rv.stands else "")
        )
    for held in step.held:
        add(f"     held: {held}")
    for failure in step.failures:
        add(f"     failed: {failure}")
    for correction in step.corrections:
        add(
            f"     corrected by {correction.by.id}: {correction.correction} ({correction.reason})"
            + _vouched_by(vouches, correction.event_id)
        )
    return lines


def _recovery_lines(receipt: Receipt) -> list[str]:
    """Each rollback: who asked and why, every reverse action and its outcome, what stands."""
    lines: list[str] = []
    for recovery in receipt.recovery:
        by = recovery.requested_by
        lines.append(
            f"    Recovery {recovery.rollback_id}: {recovery.state.upper()} — asked by {by.id}"
            + (f" ({by.role})" if by.role else "")
            + f" at {_t(recovery.requested_at)}: {recovery.reason}"
        )
        for action in recovery.actions:
            detail = {
                "reverted": f"ref {action.reverse_ref or '—'}" + (", verified" if action.verified else ""),
                "corrected": f"correction: {action.correction}",
                "failed": f"{action.error}"
                + (" (may be retried)" if action.retryable else " (a person must act)"),
                "pending": "not done yet",
            }[action.outcome]
            lines.append(
                f"      - {action.step_id}: {action.method} {action.target} -> {action.outcome}, {detail}"
            )
        for stands in recovery.stands:
            lines.append(f"      - {stands.step_id}: STANDS, a person must act: {stands.runbook}")
    return lines


def short_version(version: str) -> str:
    """A policy version as people quote it: the first 12 hex characters of its SHA-256."""
    return version.removeprefix("sha256:")[:12]


def _decision(policy: PolicyRule) -> str:
    return f"{policy.rule_id} (policy {short_version(policy.policy_version)}) -> lane {policy.lane}" + (
        f", needs {policy.required_role}" if policy.required_role else ""
    )


def _policy_lines(step: StepReceipt) -> list[str]:
    """The rule that routed the step, its policy's short version and reasons; and the
    platform's own decision beside it when it routed the step otherwise."""
    policy = step.policy
    if policy is None:
        return [f"   4. policy rule: {MISSING}: no policy rule routed this step"]
    by = "the service's policy" if policy.source == "service" else "the platform's decision"
    lines = [f"   4. policy rule: {_decision(policy)}, by {by}"]
    lines += [f"      reason: {reason}" for reason in policy.reasons]
    if policy.missing_fields:
        lines.append(f"      missing: {', '.join(policy.missing_fields)}")
    theirs = step.platform_policy
    if theirs is not None and theirs is not policy and _differ(policy, theirs):
        lines.append(f"      the platform decided otherwise: {_decision(theirs)}")
        lines += [f"        reason: {reason}" for reason in theirs.reasons]
    return lines


def _differ(ours: PolicyRule, theirs: PolicyRule) -> bool:
    # Rule ids are each side's own names: a decision differs in where it sends the step.
    return (ours.lane, ours.required_role) != (theirs.lane, theirs.required_role)


def _output_lines(step: StepReceipt) -> list[str]:
    output = step.output
    if output.draft is None:
        return [f"   7. output: {MISSING}: no draft recorded"]
    lines = ["   7. output:", "      draft:", _indent(output.draft, "        ")]
    for number, edit in enumerate(output.edits, start=1):
        lines += [f"      edit {number} by {edit.editor.id}:", _indent(edit.output, "        ")]
    if output.draft_to_approved_diff:
        lines += ["      draft -> approved:", _indent(output.draft_to_approved_diff, "        ")]
    if output.executed_hash and output.executed is None:
        lines.append(f"      executed: {MISSING}: {output.executed_hash[:20]}… matches no recorded version")
    elif output.approved_to_executed_diff:
        lines += ["      approved -> executed:", _indent(output.approved_to_executed_diff, "        ")]
    elif output.executed is not None:
        lines.append(f"      executed: {_executed_as(step)}")
    return lines


def _executed_as(step: StepReceipt) -> str:
    output, execution = step.output, step.execution
    if output.approved_hash == output.executed_hash:
        return "the approved version"
    ref = execution.authorization_ref if execution else None
    consent = next((c for c in step.consents if ref is not None and c.event_id == ref), None)
    if consent is not None:
        # No person reviewed it, but it was not done on nobody's word either.
        return f"on the customer's consent ({consent.given_by.id}, {_t(consent.at)}), no reviewer"
    return "unreviewed"


def _integrity(integrity: Integrity) -> str:
    if integrity.verified:
        said = f"{integrity.events} events, chain verifies"
    elif integrity.first_bad_version:
        said = f"BROKEN at event #{integrity.first_bad_version}: {integrity.reason}"
    else:
        said = f"BROKEN: {integrity.reason}"
    if integrity.checked_at:
        said += f" (checked against the event store {_t(integrity.checked_at)})"
    if integrity.view_current is False:
        said += "; the view that served this receipt does not hold every stored event"
    return said


def _where(finding: Finding) -> str:
    """Its step, or how many times on which steps when the run shows it more than once."""
    if finding.count > 1:
        steps = f" on {', '.join(finding.step_ids)}" if finding.step_ids else ""
        return f" (x{finding.count}{steps})"
    return f" [{finding.step_id}]" if finding.step_id else ""


def receipt_markdown(receipt: Receipt) -> str:
    """For pasting into an incident document: a summary table, the findings, then
    the full receipt verbatim."""
    integrity = receipt.integrity
    rows = [
        ("Run", f"`{receipt.run_id}` (tenant `{receipt.tenant}`)"),
        ("Workflow", receipt.workflow or MISSING),
        ("Input", _ref(receipt.input) if receipt.input else MISSING),
        ("Agent", f"{receipt.agent.name} {receipt.agent.version}" if receipt.agent else MISSING),
        ("Model", _model(receipt)),
        ("Steps", str(len(receipt.steps))),
        ("Final state", receipt.final_state or MISSING),
        ("Started / finished", f"{_t(receipt.timestamps.started)} / {_t(receipt.timestamps.finished)}"),
        ("Integrity", _integrity(integrity)),
        ("Vouched by", vouched_summary(receipt)),
    ]
    out = [f"## Receipt: run `{receipt.run_id}`", "", "| | |", "|---|---|"]
    out += ["| {} | {} |".format(name, value.replace("|", "\\|")) for name, value in rows]
    out += ["", f"### Findings ({len(receipt.findings)})", ""]
    out += [
        f"- **{f.severity}** `{f.code}`{_where(f)}: {f.message} (evidence: {', '.join(f.event_ids) or '—'})"
        for f in receipt.findings
    ] or ["None."]
    out += ["", "### Full receipt", "", "```text", receipt_text(receipt), "```", ""]
    return "\n".join(out)
