"""A person's decision on a waiting step, for HTTP and the CLI alike.

The step is read from the event store (not a view: a decision must see every
recorded step, not what a projection has applied), the rules of
domain/approvals.py judge the decision, and a decision that stands is published
to `agent-steps` as the step event it is — `action.reviewed` (approve, reject,
escalate) or `action.edited` — with the deciding principal as its actor. The
queue and the receipt show it once ingest has recorded it.

Its event id derives from who decided what about which version, so a decision
sent twice (a double click, a retried request) is recorded once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.persistence import IntegrityError
from pydantic import Field

from domain.approvals import Decider, Decision, Refusal, current_version, deciding_role, refusal
from domain.contracts import run_contract
from domain.errors import Forbidden, NotFound
from domain.policy import Contract
from domain.principals import Principal
from domain.receipt import checked
from domain.receipt_model import StepReceipt
from domain.rollback import RollbackPlan
from domain.run import Entry
from domain.step_values import Actor
from domain.steps import SERVICE, StepEvent, content_hash, step_adapter
from infra.publisher import Publisher
from infra.retry import Backoff
from infra.rollback.requests import request_rollback
from infra.store import RunNotFound, RunStore
from projections.bounds import Answer

_DECISION_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/decision")
_REVIEWED = {"approve": "approved", "reject": "rejected", "escalate": "escalated"}


class StepNotFound(NotFound, LookupError):
    title = "Step not found"


class DecisionRefused(Forbidden):
    """A decision that breaks one of the queue's rules (the rule is named)."""

    title = "Decision refused"

    def __init__(self, found: Refusal) -> None:
        super().__init__(f"{found.rule}: {found.detail}")
        self.rule = found.rule


class Decided(Answer):
    """A decision that stands, as published (the answer of `POST …/decision`, 202)."""

    event_id: str = Field(description="the recorded decision's event id (stable: a repeat is one decision)")
    type: str
    run_id: str
    step_id: str
    decision: str
    version_hash: str
    decided_by: Actor


class StepSender(Protocol):
    """What deciding asks of the publisher (infra.publisher.Publisher): send a step, and
    wait until the broker has it."""

    def publish(self, step: StepEvent) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


def splits(reference: str) -> Iterator[tuple[str, str]]:
    """Each way RUN/STEP may read, as (run id, rest): run ids and step ids may hold '/'."""
    for at, char in enumerate(reference):
        if char == "/" and 0 < at < len(reference) - 1:
            yield reference[:at], reference[at + 1 :]


def step_named(store: RunStore, tenant: str, reference: str) -> tuple[str, StepReceipt]:
    """The run id and the step RUN/STEP names in `tenant` (STEP may be the whole reference:
    step ids are often RUN/step-N)."""
    for run_id, rest in splits(reference):
        try:
            steps, _ = _steps(store, tenant, run_id)
        except RunNotFound:
            continue
        for step_id in (rest, reference):
            if step_id in steps:
                return run_id, steps[step_id]
        raise StepNotFound(f"run '{run_id}' has no step '{rest}'")
    raise StepNotFound(f"'{reference}' names no run and step (RUN/STEP) in tenant '{tenant}'")


def _steps(store: RunStore, tenant: str, run_id: str) -> tuple[dict[str, StepReceipt], Contract | None]:
    """The run's steps as every recorded event leaves them (from the store, not a view),
    and the lane contract that governs them."""
    return _steps_of(store.run(tenant, run_id).entries, store)


def _steps_of(entries: Sequence[Entry], store: RunStore) -> tuple[dict[str, StepReceipt], Contract | None]:
    receipt, contract = checked(entries, store.contract)
    return {s.step_id: s for s in receipt.steps}, contract


def _named_version(store: RunStore, entries: Sequence[Entry], step_id: str, version_hash: str) -> str:
    """The version a decision names, as the run stores it: a reader who hashed the text it
    was shown names the plain `sha256:` hash, which a run with sealed personal data keeps
    keyed by the step's subject."""
    subject = next((e.step.subject for e in entries if e.step.step_id == step_id and e.step.subject), None)
    if subject is None or not version_hash.startswith("sha256:"):
        return version_hash
    key = store.steps.keyring.key_of(entries[0].step.tenant, subject)
    return version_hash if key.erased else key.keyed(version_hash)


def decide(
    store: RunStore,
    publisher: StepSender,
    principal: Principal,
    run_id: str,
    step_id: str,
    decision: Decision,
    now: datetime | None = None,
) -> Decided:
    """Judge and publish `principal`'s decision on step `step_id` of its tenant's run `run_id`."""
    now = now or datetime.now(UTC)
    tenant = principal.tenant
    entries = store.run(tenant, run_id).entries
    steps, contract = _steps_of(entries, store)
    step = steps.get(step_id)
    if step is None:
        raise StepNotFound(f"run '{run_id}' has no step '{step_id}'")
    decision = replace(decision, version_hash=_named_version(store, entries, step_id, decision.version_hash))
    deadline = contract.review_deadline if contract else None
    second_eyes = contract.second_eyes_after_edit if contract else False
    escalation_role = contract.escalation_role if contract else None
    actor = Actor(kind="human", id=principal.id, role=_role(deciding_role(step, escalation_role), principal))
    decider = Decider(principal.id, principal.roles)
    accepts_consent = contract.accepts_consent if contract else False
    found = refusal(step, decider, decision, now, deadline, second_eyes, escalation_role, accepts_consent)
    if found is not None:
        asked = (decision.verdict, decision.version_hash)
        record_service_step(store, _refused(tenant, run_id, step.step_id, asked, found, actor, now))
        raise DecisionRefused(found)
    event = _step_event(tenant, run_id, step, decision, actor, now)
    publisher.publish(event)
    publisher.flush()
    return Decided(
        event_id=event.event_id,
        type=event.type,
        run_id=run_id,
        step_id=step_id,
        decision=decision.verdict,
        version_hash=decision.version_hash,
        decided_by=actor,
    )


def _refused(
    tenant: str,
    run_id: str,
    step_id: str | None,
    asked: tuple[str, str],
    found: Refusal,
    tried_by: Actor,
    now: datetime,
) -> StepEvent:
    """The record of a refused request: `asked` is (what, on which version)."""
    verdict, version_hash = asked
    # One record per (who, what, which version, which rule): a retried refused request is one.
    key = f"{tenant}/{run_id}/{step_id}/{tried_by.id}/{verdict}/{version_hash}/{found.rule}"
    refused: StepEvent = step_adapter.validate_python(
        {
            "type": "decision.refused",
            "event_id": str(uuid5(_DECISION_NAMESPACE, key)),
            "run_id": run_id,
            "tenant": tenant,
            "occurred_at": now,
            "actor": SERVICE,
            "step_id": step_id,
            "data": {
                "decision": verdict,
                "version_hash": version_hash[:512],
                "rule": found.rule,
                "detail": found.detail,
                "tried_by": tried_by,
            },
        }
    )
    return refused


def record_service_step(store: RunStore, step: StepEvent, attempts: int = 5) -> None:
    """Record a step only the service writes straight into the event store (the wire refuses
    it: `reserved_for_service`). Ingest may append to the same run meanwhile; the store then
    refuses this save, and it is tried again on the run as it is now."""
    backoff = Backoff(first=0.05)
    for attempt in range(attempts):
        try:
            store.record([store.sealed(step)], store.service.vouch if store.service else None)
            return
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            backoff.sleep_after_failure()


def _role(required: str | None, principal: Principal) -> str | None:
    """The role the principal decides in: the one the decision needs, else any it holds."""
    if required and required in principal.roles:
        return required
    return min(principal.roles, default=None)


def _step_event(
    tenant: str, run_id: str, step: StepReceipt, decision: Decision, actor: Actor, now: datetime
) -> StepEvent:
    base = {"run_id": run_id, "tenant": tenant, "occurred_at": now, "actor": actor, "step_id": step.step_id}
    if decision.verdict == "edit":
        assert decision.output is not None  # refusal() requires it
        data: dict[str, Any] = {
            "output": decision.output,
            "output_hash": content_hash(decision.output),
            "base_hash": current_version(step),
        }
        kind, detail = "action.edited", data["output_hash"]
    else:
        data = {
            "decision": _REVIEWED[decision.verdict],
            "reviewed_hash": decision.version_hash,
            "comment": decision.comment,
        }
        kind, detail = "action.reviewed", data["decision"]
    key = f"{tenant}/{run_id}/{step.step_id}/{actor.id}/{decision.version_hash}/{kind}/{detail}"
    event: StepEvent = step_adapter.validate_python(
        {**base, "type": kind, "event_id": str(uuid5(_DECISION_NAMESPACE, key)), "data": data}
    )
    return event


def ask_rollback(
    store: RunStore,
    publisher: Publisher,
    principal: Principal,
    run_id: str,
    reason: str,
    steps: Sequence[str],
    reverse_topic: str,
    key: str | None = None,
) -> RollbackPlan:
    """Record and plan a rollback of `principal`'s tenant's run: only a principal holding the
    role the run's lane contract names for it (`rollback` by default) may ask; a refusal is
    recorded (`decision.refused`) before it is raised. `key`, an Idempotency-Key, makes the
    rollback's id stable, so a repeat plans the same reverse events."""
    tenant = principal.tenant
    entries = store.run(tenant, run_id).entries  # RunNotFound first: another tenant's is unknown
    contract = run_contract([e.step for e in entries], store.contract)
    role = contract.rollback_role if contract else "rollback"
    actor = Actor(kind="human", id=principal.id, role=role if role in principal.roles else None)
    if role not in principal.roles:
        found = Refusal("role_required", f"asking to roll back run '{run_id}' needs the role {role!r}")
        step_id = steps[0] if steps else None
        refused = _refused(tenant, run_id, step_id, ("rollback", ""), found, actor, datetime.now(UTC))
        record_service_step(store, refused)
        raise DecisionRefused(found)
    rollback_id = str(uuid5(_DECISION_NAMESPACE, f"{tenant}/{run_id}/rollback/{key}")) if key else None
    return request_rollback(
        store,
        publisher,
        run_id,
        reason,
        steps,
        actor,
        reverse_topic=reverse_topic,
        tenant=tenant,
        rollback_id=rollback_id,
    )
