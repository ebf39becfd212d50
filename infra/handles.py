"""The handles a platform records a run through: `RunHandle` for the run's own steps
(sources, proposals, corrections, the finish) and `StepHandle` for one proposed step's
decision, edits, reviews, consent, execution and rollback. `Publisher.run` gives them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, uuid5

from domain.notices import DecisionNotice
from domain.step_data import ActionProposedData
from domain.step_values import Action, Actor, Reference, RollbackLink, Signal, Source
from domain.steps import StepEvent, content_hash, step_adapter

if TYPE_CHECKING:
    from infra.publisher import Publisher

_EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/event")
# Who consents when the platform names nobody: the customer of the conversation.
CUSTOMER = Actor(kind="human", id="customer", role="customer")


class RunHandle:
    def __init__(self, publisher: Publisher, run_id: str, actor: Actor, subject: str | None = None) -> None:
        self.publisher = publisher
        self.run_id = run_id
        self.actor = actor
        self.subject = subject
        self.sequence = 0
        self.finished = False
        self._steps = 0

    def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        step_id: str | None = None,
        by: Actor | None = None,
        at: datetime | None = None,
    ) -> StepEvent:
        self.sequence += 1
        tenant = self.publisher.tenant
        step = step_adapter.validate_python(
            {
                "event_id": str(uuid5(_EVENT_NAMESPACE, f"{tenant}/{self.run_id}/{self.sequence}")),
                "run_id": self.run_id,
                "tenant": tenant,
                "type": type_,
                "occurred_at": at or datetime.now(UTC),
                "actor": by or self.actor,
                "step_id": step_id,
                "subject": self.subject,
                "data": data,
            }
        )
        self.publisher.publish(step)
        return step

    def source(
        self,
        system: str,
        kind: str,
        id: str,
        *,
        by: Actor | None = None,
        at: datetime | None = None,
        **details: Any,
    ) -> str:
        """Record a document or record the agent relied on; returns its id for `propose`."""
        source = Source(system=system, kind=kind, id=id, **details)
        self.emit("source.used", {"source": source}, by=by, at=at)
        return id

    def propose(
        self,
        verb: str,
        target: Reference | dict[str, Any],
        tool: str,
        *,
        output: str = "",
        params: dict[str, Any] | None = None,
        confidence: float | None = None,
        reason_code: str | None = None,
        flags: Sequence[str] = (),
        sources: Sequence[str] = (),
        rollback: RollbackLink | dict[str, Any] | None = None,
        step_id: str | None = None,
        by: Actor | None = None,
        at: datetime | None = None,
    ) -> StepHandle:
        self._steps += 1
        step_id = step_id or f"{self.run_id}/step-{self._steps}"
        action = Action(
            verb=verb,
            target=as_model(Reference, target),
            tool=tool,
            params=params or {},
            output=output,
            output_hash=content_hash(output),
        )
        data = ActionProposedData(
            action=action,
            source_ids=tuple(sources),
            rollback=as_model(RollbackLink, rollback),
            signal=Signal(confidence=confidence, reason_code=reason_code, flags=tuple(flags)),
        )
        proposed = self.emit("action.proposed", data.model_dump(), step_id=step_id, by=by, at=at)
        # Decisions are looked for from when it was sent (its own time may be set in the past).
        return StepHandle(self, step_id, action.output_hash, min(proposed.occurred_at, datetime.now(UTC)))

    def correct(
        self, step: StepHandle | str, correction: str, reason: str, *, by: Actor, at: datetime | None = None
    ) -> None:
        corrects = step.step_id if isinstance(step, StepHandle) else step
        self.emit(
            "record.corrected",
            {"corrects": corrects, "correction": correction, "reason": reason},
            by=by,
            at=at,
        )

    def finish(self, final_state: str, *, by: Actor | None = None, at: datetime | None = None) -> None:
        self.emit("run.finished", {"final_state": final_state}, by=by, at=at)
        self.finished = True


class StepHandle:
    """One proposed action; tracks which version of its output is current."""

    def __init__(self, run: RunHandle, step_id: str, output_hash: str, proposed_at: datetime) -> None:
        self.run = run
        self.step_id = step_id
        self.current_hash = output_hash
        self.proposed_at = proposed_at
        # The decision an execution relies on (authorization_ref): the approval reported
        # here, or the one `wait_for_decision` returned.
        self.authorization: str | None = None

    def _emit(self, type_: str, data: dict[str, Any], by: Actor | None, at: datetime | None) -> StepEvent:
        return self.run.emit(type_, data, step_id=self.step_id, by=by, at=at)

    def wait_for_decision(self, timeout: float = 60.0) -> DecisionNotice:
        """Block until the service's final decision on this step: approved (with the version
        to execute), rejected (with the comment), escalated, expired, or a lane where it
        must not run (draft only, blocked). An approval — a reviewer's, an `auto` lane's or a
        consent the lane contract accepts — becomes the next execution's `authorization_ref`.
        Raises NoDecisionYet after `timeout` seconds."""
        publisher = self.run.publisher
        publisher.flush()  # the proposal must be on its way before anyone can decide on it
        if publisher.decisions is None:
            raise ValueError("this publisher was given no Kafka bootstrap address to read decisions from")
        notice = publisher.decisions.wait(
            publisher.tenant, self.run.run_id, self.step_id, timeout, self.proposed_at
        )
        if notice.outcome == "approved":
            self.authorization = notice.decision_id
        return notice

    def policy(
        self,
        rule_id: str,
        policy_version: str,
        lane: str,
        *,
        reasons: Sequence[str] = (),
        missing_fields: Sequence[str] = (),
        required_role: str | None = None,
        by: Actor | None = None,
        at: datetime | None = None,
    ) -> None:
        self._emit(
            "policy.decided",
            {
                "rule_id": rule_id,
                "policy_version": policy_version,
                "lane": lane,
                "reasons": list(reasons),
                "missing_fields": list(missing_fields),
                "required_role": required_role,
            },
            by or Actor(kind="system", id="policy"),
            at,
        )

    def edit(self, output: str, *, by: Actor, at: datetime | None = None) -> str:
        new_hash = content_hash(output)
        self._emit(
            "action.edited",
            {"output": output, "output_hash": new_hash, "base_hash": self.current_hash},
            by,
            at,
        )
        self.current_hash = new_hash
        return new_hash

    def review(
        self,
        decision: str,
        *,
        by: Actor,
        reviewed_hash: str | None = None,
        comment: str | None = None,
        at: datetime | None = None,
    ) -> None:
        reviewed = self._emit(
            "action.reviewed",
            {"decision": decision, "reviewed_hash": reviewed_hash or self.current_hash, "comment": comment},
            by,
            at,
        )
        self.authorization = reviewed.event_id if decision == "approved" else None

    def consent(
        self,
        text: str,
        *,
        at: datetime | None = None,
        pattern: str | None = None,
        by: Actor | dict[str, Any] | None = None,
    ) -> str:
        """Record the customer's consent to this step: their words and when they said them
        (`at`, often before the proposal; None: now); returns its event id. Where the run's
        lane contract accepts consent, the service decides the step on it and
        `wait_for_decision` returns that approval; elsewhere it is information, and the step
        waits for a reviewer. It authorizes nothing by itself."""
        customer = as_model(Actor, by) or CUSTOMER
        return self._emit("consent.given", {"text": text, "pattern": pattern}, customer, at).event_id

    def hold(
        self,
        reason: str,
        *,
        missing_fields: Sequence[str] = (),
        by: Actor | None = None,
        at: datetime | None = None,
    ) -> None:
        self._emit("action.held", {"reason": reason, "missing_fields": list(missing_fields)}, by, at)

    def executed(
        self,
        state: str,
        *,
        executed_hash: str | None = None,
        external_ref: str | None = None,
        url: str | None = None,
        by: Actor | None = None,
        at: datetime | None = None,
        authorization_ref: str | None = None,
    ) -> None:
        """Record the execution; it names the decision it relied on (default: the approval
        this handle reported or received). One approval authorizes one execution."""
        self._emit(
            "action.executed",
            {
                "executed_hash": executed_hash or self.current_hash,
                "state": state,
                "external_ref": external_ref,
                "url": url,
                "authorization_ref": authorization_ref or self.authorization,
            },
            by,
            at,
        )
        self.authorization = None

    def failed(self, error: str, *, by: Actor | None = None, at: datetime | None = None) -> None:
        self._emit("action.failed", {"error": error}, by, at)

    def rollback_requested(
        self, reason: str, *, scope: str = "step", by: Actor, at: datetime | None = None
    ) -> None:
        self._emit("rollback.requested", {"reason": reason, "scope": scope}, by, at)

    def reverted(
        self,
        method: str,
        *,
        reverse_ref: str | None = None,
        note: str | None = None,
        by: Actor | None = None,
        at: datetime | None = None,
    ) -> None:
        self._emit("action.reverted", {"method": method, "reverse_ref": reverse_ref, "note": note}, by, at)


def as_model(cls: Any, value: Any) -> Any:
    return cls.model_validate(value) if isinstance(value, dict) else value
