"""Small builders for step events and recorded entries, with sensible defaults.

Every builder takes the envelope as keywords: `run_id`, `tenant`, `at` (occurred_at),
`by` (actor), `event_id` and, for step-scoped types, `step_id`. Event ids are unique
per call. Defaults describe one clean, complete run: `clean_run()` yields no findings.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.run import Entry, RunHead
from domain.step_values import Actor
from domain.steps import SERVICE, StepEvent, content_hash, step_adapter
from schemas.codec import encode_json

RUN = "run-1"
STEP = "run-1/step-1"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
DRAFT = "Hi Ana,\nthanks for your interest.\nOur plan costs 40 EUR.\n"
AGENT = Actor(kind="agent", id="lead-bot", role="drafter")
REVIEWER = Actor(kind="human", id="maria", role="sales-lead")
POLICY = Actor(kind="system", id="policy-engine")
INPUT = {
    "system": "hubspot",
    "kind": "form",
    "id": "lead-42",
    "uri": "https://crm.example/lead-42",
    "hash": content_hash("form body"),
}
TARGET = {"system": "gmail", "kind": "contact", "id": "ana@example.com"}
ROLLBACK = {
    "method": "correct",
    "ref": "gmail:follow-up",
    "prior_version": "none-sent-before",
    "runbook": "https://wiki.example/undo-email",
}

_ids = itertools.count(1)
_DEFAULT: Any = object()


def at(minutes: float) -> datetime:
    """A moment `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


def new_event_id() -> str:
    return f"evt-{next(_ids):06d}"


def _step(
    type_: str,
    data: dict[str, Any],
    *,
    run_id: str = RUN,
    tenant: str = "default",
    at: datetime = T0,
    by: Actor | dict[str, Any] = AGENT,
    event_id: str | None = None,
    step_id: str | None = None,
) -> StepEvent:
    step: StepEvent = step_adapter.validate_python(
        {
            "event_id": event_id or new_event_id(),
            "run_id": run_id,
            "tenant": tenant,
            "type": type_,
            "occurred_at": at,
            "actor": by,
            "step_id": step_id,
            "data": data,
        }
    )
    return step


def started(
    run_id: str = RUN,
    *,
    workflow: str = "lead-followup",
    input: Any = _DEFAULT,
    agent: Any = _DEFAULT,
    model: Any = _DEFAULT,
    origin: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    """`origin`: the v4 field an importer sets ({format, approvals_recorded})."""
    data = {
        "origin": origin,
        "workflow": workflow,
        "input": INPUT if input is _DEFAULT else input,
        "agent": {"name": "lead-bot", "version": "1.4.0"} if agent is _DEFAULT else agent,
        "model": {"provider": "acme", "name": "writer", "version": "2025-01"} if model is _DEFAULT else model,
    }
    return _step("run.started", data, run_id=run_id, **kw)


def source(
    source_id: str = "pricing",
    *,
    retrieved_at: datetime | None = None,
    version: str | None = "v12",
    system: str = "cms",
    kind: str = "page",
    contains: Sequence[dict[str, str]] = (),
    **kw: Any,
) -> StepEvent:
    """`contains`: the v4 records that are part of the source."""
    data = {
        "contains": list(contains),
        "source": {
            "system": system,
            "kind": kind,
            "id": source_id,
            "uri": f"https://cms.example/{source_id}",
            "version": version,
            "retrieved_at": retrieved_at,
            "excerpt": "Plan: 40 EUR",
            "hash": content_hash("Plan: 40 EUR"),
        },
    }
    return _step("source.used", data, **kw)


def proposed(
    step_id: str = STEP,
    *,
    output: str = DRAFT,
    sources: Sequence[str] = ("pricing",),
    rollback: Any = _DEFAULT,
    confidence: float | None = None,
    reason_code: str | None = None,
    flags: Sequence[str] = (),
    verb: str = "send_email",
    target: Any = _DEFAULT,
    params: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    data = {
        "action": {
            "verb": verb,
            "target": TARGET if target is _DEFAULT else target,
            "tool": "gmail.send",
            "params": params or {},
            "output": output,
            "output_hash": content_hash(output),
        },
        "signal": {"confidence": confidence, "reason_code": reason_code, "flags": list(flags)},
        "source_ids": list(sources),
        "rollback": ROLLBACK if rollback is _DEFAULT else rollback,
    }
    return _step("action.proposed", data, step_id=step_id, **kw)


def policy(
    step_id: str = STEP,
    lane: str = "review",
    *,
    rule_id: str = "R-lead-email",
    policy_version: str = "2025.03",
    required_role: str | None = "sales-lead",
    reasons: Sequence[str] = ("public-facing email",),
    missing_fields: Sequence[str] = (),
    decision_id: str | None = None,
    matched_rules: Sequence[str] = (),
    source: str | None = None,
    by: Actor = POLICY,
    **kw: Any,
) -> StepEvent:
    """A lane decision; the platform's unless `source="service"` and `by=SERVICE`."""
    data = {
        "rule_id": rule_id,
        "policy_version": policy_version,
        "lane": lane,
        "reasons": list(reasons),
        "missing_fields": list(missing_fields),
        "required_role": required_role,
        "decision_id": decision_id,
        "matched_rules": list(matched_rules),
        "source": source,
    }
    return _step("policy.decided", data, step_id=step_id, by=by, **kw)


def edited(
    step_id: str = STEP,
    output: str = DRAFT + "Best, Maria\n",
    *,
    base: str = DRAFT,
    base_hash: str | None = None,
    by: Actor = REVIEWER,
    **kw: Any,
) -> StepEvent:
    data = {
        "output": output,
        "output_hash": content_hash(output),
        "base_hash": base_hash or content_hash(base),
    }
    return _step("action.edited", data, step_id=step_id, by=by, **kw)


def reviewed(
    step_id: str = STEP,
    decision: str = "approved",
    *,
    output: str = DRAFT,
    reviewed_hash: str | None = None,
    comment: str | None = None,
    by: Actor = REVIEWER,
    **kw: Any,
) -> StepEvent:
    """A review of the version whose text is `output` (or exactly `reviewed_hash`)."""
    data = {"decision": decision, "reviewed_hash": reviewed_hash or content_hash(output), "comment": comment}
    return _step("action.reviewed", data, step_id=step_id, by=by, **kw)


def executed(
    step_id: str = STEP,
    *,
    output: str = DRAFT,
    executed_hash: str | None = None,
    state: str = "sent",
    external_ref: str | None = "msg-123",
    url: str | None = None,
    authorization: str | None = None,
    **kw: Any,
) -> StepEvent:
    """An execution; `authorization` is the event id of the decision it relied on."""
    data = {
        "executed_hash": executed_hash or content_hash(output),
        "state": state,
        "external_ref": external_ref,
        "url": url,
        "authorization_ref": authorization,
    }
    return _step("action.executed", data, step_id=step_id, **kw)


def held(
    step_id: str = STEP,
    reason: str = "missing account owner",
    *,
    missing_fields: Sequence[str] = ("account.owner",),
    **kw: Any,
) -> StepEvent:
    return _step(
        "action.held", {"reason": reason, "missing_fields": list(missing_fields)}, step_id=step_id, **kw
    )


def failed(step_id: str = STEP, error: str = "SMTP 550", **kw: Any) -> StepEvent:
    return _step("action.failed", {"error": error}, step_id=step_id, **kw)


def rollback_requested(
    step_id: str | None = STEP,
    reason: str = "wrong price",
    *,
    scope: str = "step",
    by: Actor = REVIEWER,
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    """`extra`: the v3 fields (rollback_id, steps, requested_by)."""
    data = {"reason": reason, "scope": scope, **(extra or {})}
    return _step("rollback.requested", data, step_id=step_id, by=by, **kw)


def reverted(
    step_id: str = STEP,
    method: str = "correct",
    *,
    reverse_ref: str | None = "msg-124",
    note: str | None = "sent a correction",
    by: Actor = POLICY,
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    """`extra`: the v3 fields (verified, rollback_id, reverse_id)."""
    data = {"method": method, "reverse_ref": reverse_ref, "note": note, **(extra or {})}
    return _step("action.reverted", data, step_id=step_id, by=by, **kw)


def rollback_failed(
    step_id: str = STEP,
    error: str = "mailbox gone",
    *,
    by: Actor = POLICY,
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    """`extra`: the v3 fields (retryable, rollback_id, reverse_id)."""
    return _step("rollback.failed", {"error": error, **(extra or {})}, step_id=step_id, by=by, **kw)


def rollback_stands(
    step_id: str = STEP,
    runbook: str = "call the customer",
    *,
    by: Actor = POLICY,
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    return _step("rollback.stands", {"runbook": runbook, **(extra or {})}, step_id=step_id, by=by, **kw)


def corrected(
    corrects: str = STEP,
    correction: str = "price was 45 EUR",
    *,
    reason: str = "typo",
    by: Actor = REVIEWER,
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> StepEvent:
    data = {"corrects": corrects, "correction": correction, "reason": reason, **(extra or {})}
    return _step("record.corrected", data, by=by, **kw)


CUSTOMER = Actor(kind="human", id="cust-7", role="customer")


def consent(
    step_id: str = STEP,
    text: str = "yes, go ahead",
    *,
    pattern: str | None = r"(?i)\b(yes|go ahead)\b",
    by: Actor = CUSTOMER,
    **kw: Any,
) -> StepEvent:
    """The customer's consent to `step_id`, in their words (wire v4)."""
    return _step("consent.given", {"text": text, "pattern": pattern}, step_id=step_id, by=by, **kw)


def expired(step_id: str = STEP, *, deadline: datetime, since: datetime = T0, **kw: Any) -> StepEvent:
    """The service's record that a step's wait for a person ended at its deadline."""
    data = {"deadline": deadline, "waiting_since": since}
    return _step("action.expired", data, step_id=step_id, by=SERVICE, **kw)


def refused(
    step_id: str = STEP, rule: str = "four_eyes", *, tried_by: Actor = AGENT, version: str = DRAFT, **kw: Any
) -> StepEvent:
    """The service's record of a decision the approval queue refused."""
    data = {
        "decision": "approve",
        "version_hash": content_hash(version),
        "rule": rule,
        "detail": f"{tried_by.id} may not",
        "tried_by": tried_by,
    }
    return _step("decision.refused", data, step_id=step_id, by=SERVICE, **kw)


def finished(final_state: str = "sent", **kw: Any) -> StepEvent:
    return _step("run.finished", {"final_state": final_state}, **kw)


def clean_run(step_id: str = STEP) -> list[StepEvent]:
    """A complete run that leaves no gap: every detector stays quiet on it."""
    return [
        started(at=at(0)),
        source("pricing", retrieved_at=at(-60), at=at(1)),
        proposed(step_id, confidence=0.92, reason_code="pricing-question", at=at(2)),
        policy(step_id, "review", at=at(3)),
        approval := reviewed(step_id, at=at(10)),
        executed(step_id, authorization=approval.event_id, at=at(11)),
        finished("sent", at=at(12)),
    ]


def entries(*steps: StepEvent | Iterable[StepEvent]) -> list[Entry]:
    """Record steps in order, as the Run aggregate would: JSON wire, chained from GENESIS."""
    flat: list[StepEvent] = []
    for item in steps:
        flat.extend([item] if isinstance(item, StepEvent) else item)
    head = RunHead()
    recorded = [head.record(step, encode_json(step), step.occurred_at) for step in flat]
    return [entry for entry in recorded if entry is not None]
