"""A run of a transcript or a trace as contract events: the pure part of importing, shared by
every reader (no Kafka, no file). Readers feed what the source says in order — the customer's
words, tool calls, their results — and get the run's events back, ids derived from the source's
run id and each event's place in it.

What the mapping says each tool is decides what a call becomes:
- read: a `source.used` for the record it read (only once it succeeded), listing under
  `contains` the ids the mapping says are part of that record;
- write: `action.proposed` (then `consent.given` when the customer's message just before it
  matches a confirmation pattern), then `action.executed` or `action.failed` from its result;
- escalation: a hand-off (`signal.flags` has `handoff`), executed as `routed`;
- internal: nothing (it touches nothing).
A call the customer made on their side is theirs (actor human, role customer), not the agent's.
The formats record no approvals: `run.started` says so (`origin.approvals_recorded: false`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from domain.record_findings import MALFORMED_ARGUMENTS
from domain.step_values import Actor
from domain.steps import StepEvent, content_hash, step_adapter
from infra.importing.base import event_id
from infra.importing.mapping import IdFrom, Mapping, ToolMap, as_text, field_at

# Signal flags an imported proposal may carry: what the source could not say.
SYNTHETIC_CLOCK = "synthetic_clock"
HANDOFF = "handoff"
EXCERPT = 2_000  # characters of a read's result kept as the source's excerpt


@dataclass
class Call:
    position: str
    call_id: str | None
    name: str
    tool: ToolMap
    params: dict[str, Any]
    malformed: bool
    at: datetime
    by: Actor
    consent: tuple[str, datetime, str] | None = None  # (words, time, pattern)


@dataclass
class RunBuilder:
    mapping: Mapping
    tenant: str
    run_id: str
    agent: Actor
    customer: Actor
    synthetic_clock: bool = False
    events: list[StepEvent] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    notes: list[str] = field(default_factory=list)
    _open: dict[str | None, deque[Call]] = field(default_factory=dict)
    _read: dict[str, Any] = field(default_factory=dict)  # target key -> the result it read
    _as_read: dict[str, dict[str, Any]] = field(default_factory=dict)  # record key -> the source as read
    _said: tuple[str, datetime] | None = None

    # --- what readers feed -------------------------------------------------

    def start(self, at: datetime, workflow: str, meta: dict[str, Any], format_: str) -> None:
        """`format_` names the source format; none of those imported records approvals."""
        data: dict[str, Any] = {
            "workflow": workflow,
            "origin": {"format": format_, "approvals_recorded": False},
        }
        for key in ("input", "agent", "model"):
            if meta.get(key) is not None:
                data[key] = meta[key]
        self._emit("start", "run.started", at, self.agent, None, data)

    def customer_said(self, text: str, at: datetime) -> None:
        self._said = (text, at)

    def call(
        self, position: str, call_id: str | None, name: str, arguments: Any, at: datetime, by_customer: bool
    ) -> None:
        tool = self.mapping.tool(name)
        if tool is None:
            self.skipped.append((position, f"tool {name!r} is not in the mapping"))
            return
        if tool.class_ == "internal":
            self.notes.append("calls of internal tools (they touch nothing: not recorded)")
            return
        params, malformed = _params(arguments)
        if malformed:
            self.notes.append("tool calls with malformed arguments imported as text")
        call = Call(
            position, call_id, name, tool, params, malformed, at, self.customer if by_customer else self.agent
        )
        if tool.class_ == "write" and self._said is not None and not by_customer:
            call.consent = self._consent(tool, *self._said)
        if tool.class_ == "write":
            self._said = None  # the customer's words cover one write, the next
        self._open.setdefault(call_id, deque()).append(call)

    def result(
        self, position: str, call_id: str | None, content: Any, at: datetime, failed: bool | None
    ) -> None:
        """The result of the oldest call with this id still unanswered (ids repeat within a run)."""
        waiting = self._open.get(call_id)
        if not waiting:
            self.skipped.append((position, f"a tool result for {call_id!r} answers no call"))
            return
        call = waiting.popleft()
        text = as_text(content) if content is not None else ""
        parsed = _parsed(content)
        rules = call.tool.errors if call.tool.errors is not None else self.mapping.errors
        if failed is None:
            failed = any(rule.failed(text, parsed) for rule in rules)
        self._conclude(call, text, parsed, at, failed)

    def retrieved(self, position: str, system: str, kind: str, id_: str, at: datetime) -> None:
        """A record the agent retrieved outside any tool (a retrieval step): a source."""
        key = self._key(system, kind, id_)
        source = {**_ref(key), "retrieved_at": at}
        self._read.setdefault(key, None)
        self._as_read[key] = source
        self._emit(f"{position}/source", "source.used", at, self.agent, None, {"source": source})

    def finish(self, at: datetime, outcome: str | None) -> list[StepEvent]:
        """The run's remaining events: calls never answered are proposed, not executed."""
        for waiting in self._open.values():
            for call in waiting:
                if call.tool.class_ != "read":
                    self._propose(call, None)
                else:
                    self.notes.append("reads never answered (no source recorded)")
        self._open.clear()
        if outcome is not None:
            state = self.mapping.outcomes.get(outcome, outcome)
            self._emit("finish", "run.finished", at, self.agent, None, {"final_state": state})
        return self.events

    # --- what a call becomes -------------------------------------------------

    def _conclude(self, call: Call, text: str, parsed: Any, at: datetime, failed: bool) -> None:
        if call.tool.class_ == "read":
            if not failed:
                self._source(call, text, parsed, at)
            else:
                self.notes.append("failed reads (no source recorded)")
            return
        step_id = self._propose(call, parsed if not failed else None)
        if failed:
            self._emit(
                f"{call.position}/failed", "action.failed", at, call.by, step_id, {"error": text or "failed"}
            )
            return
        state = call.tool.state or ("routed" if call.tool.class_ == "escalation" else "written")
        ref = self._target_id(call, parsed) if call.tool.target and call.tool.target.id else None
        data = {"executed_hash": content_hash(_output(call)), "state": state, "external_ref": ref}
        self._emit(f"{call.position}/executed", "action.executed", at, call.by, step_id, data)

    def _source(self, call: Call, text: str, parsed: Any, at: datetime) -> None:
        assert call.tool.target is not None
        key = self._key(call.tool.target.system, call.tool.target.kind, self._target_id(call, parsed))
        self._read[key] = parsed
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        source = {**_ref(key), "retrieved_at": at, "excerpt": text[:EXCERPT], "hash": digest}
        self._as_read[key] = source
        contains = [
            _ref(self._key(part.system, part.kind, as_text(value)))
            for part in call.tool.contains
            for value in field_at(parsed, part.path)
        ]
        data = {"source": source, "contains": contains}
        self._emit(f"{call.position}/source", "source.used", at, call.by, None, data)
        for inner in contains:
            self._read.setdefault(self._key(inner["system"], inner["kind"], inner["id"]), None)

    def _propose(self, call: Call, parsed: Any) -> str:
        tool = call.tool
        step_id = f"{self.run_id}/{call.position}"
        target = self._target(call, parsed)
        flags: list[str] = []
        if tool.class_ == "escalation":
            flags.append(HANDOFF)
        if call.malformed:
            flags.append(MALFORMED_ARGUMENTS)
        if self.synthetic_clock:
            flags.append(SYNTHETIC_CLOCK)
        output = _output(call)
        data: dict[str, Any] = {
            "action": {
                "verb": tool.verb or call.name,
                "target": target,
                "tool": call.name,
                "params": call.params,
                "output": output,
                "output_hash": content_hash(output),
            },
            "signal": {"flags": flags},
            "source_ids": self._sources(call, target),
        }
        if tool.rollback is not None:
            data["rollback"] = self._rollback(call, parsed, target)
        self._emit(f"{call.position}/proposed", "action.proposed", call.at, call.by, step_id, data)
        if call.consent is not None:
            words, said_at, pattern = call.consent
            consent = {"text": words, "pattern": pattern}
            self._emit(f"{call.position}/consent", "consent.given", said_at, self.customer, step_id, consent)
        return step_id

    def _target(self, call: Call, parsed: Any) -> dict[str, str]:
        tool = call.tool
        if tool.target is None:  # a hand-off desk: the tool itself
            return {"system": "handoff", "kind": "desk", "id": call.name}
        found = self._target_id(call, parsed) if tool.target.id else call.name
        return {"system": tool.target.system, "kind": tool.target.kind, "id": found or "(not created)"}

    def _target_id(self, call: Call, parsed: Any) -> str:
        assert call.tool.target is not None
        if call.tool.target.id is None:
            return call.name
        return self._derive(call.tool.target.id, call, parsed) or "(unknown)"

    def _derive(self, how: IdFrom, call: Call, parsed: Any) -> str | None:
        if how.value is not None:
            return how.value
        if how.result is not None:
            values = field_at(parsed, how.result) if parsed is not None else []
        elif how.prior is not None:
            assert call.tool.target is not None
            prior = self._read.get(
                self._key(call.tool.target.system, call.tool.target.kind, self._target_id(call, None))
            )
            values = field_at(prior, how.prior) if prior is not None else []
        else:
            names = [how.argument] if how.argument else list(how.arguments)
            parts = [field_at(call.params, name) for name in names]
            if not all(parts):
                return None
            return how.join.join(as_text(found[0]) for found in parts)
        return as_text(values[0]) if values else None

    def _sources(self, call: Call, target: dict[str, str]) -> list[str]:
        keys: list[str] = []
        own = self._key(target["system"], target["kind"], target["id"])
        if own in self._read:
            keys.append(own)  # the write acts on a record the run read
        for arg in call.tool.sources:
            for value in field_at(call.params, arg.path):
                key = self._key(arg.system, arg.kind, as_text(value))
                if arg.contained_in is not None and key not in self._read:
                    self._contained(call, key, f"{arg.contained_in.system}/{arg.contained_in.kind}/")
                if key not in keys:
                    keys.append(key)
        return keys

    def _contained(self, call: Call, key: str, container: str) -> None:
        """An id the mapping says is part of a record of `container`'s kind: when the run read
        such a record and the id is in what it read, that source is stated again as containing
        it (as it was read: its time and digest), so the step relies on a record the agent saw;
        else the id stays unknown."""
        id_ = key.split("/", 2)[2]
        read = [
            (k, source)
            for k, source in self._as_read.items()
            if k.startswith(container) and _mentions(self._read.get(k), id_)
        ]
        if not read:
            return
        self._read[key] = None
        data = {"source": read[-1][1], "contains": [_ref(key)]}
        self._emit(f"{call.position}/source/{key}", "source.used", call.at, call.by, None, data)

    def _rollback(self, call: Call, parsed: Any, target: dict[str, str]) -> dict[str, Any]:
        how = call.tool.rollback
        assert how is not None
        link: dict[str, Any] = {"method": how.method, "runbook": how.runbook}
        if how.inverse is not None:
            arguments = {name: self._derive(source, call, parsed) for name, source in how.arguments.items()}
            link["ref"] = how.inverse
            link["runbook"] = how.runbook or f"call {how.inverse} with {as_text(arguments)}"
            prior = self._read.get(self._key(target["system"], target["kind"], target["id"]))
            if prior is not None:
                link["prior_version"] = "sha256:" + hashlib.sha256(as_text(prior).encode()).hexdigest()
        return link

    def _consent(self, tool: ToolMap, words: str, at: datetime) -> tuple[str, datetime, str] | None:
        patterns = tool.confirmations if tool.confirmations is not None else self.mapping.confirmations
        for pattern in patterns:
            if re.search(pattern, words):
                return (words, at, pattern)
        return None

    def _key(self, system: str, kind: str, id_: str) -> str:
        return f"{system}/{kind}/{id_}"

    def _emit(
        self, position: str, type_: str, at: datetime, actor: Actor, step_id: str | None, data: dict[str, Any]
    ) -> None:
        raw = {
            "type": type_,
            "event_id": event_id(self.tenant, self.run_id, position),
            "run_id": self.run_id,
            "tenant": self.tenant,
            "occurred_at": at,
            "actor": actor,
            "step_id": step_id,
            "data": data,
        }
        try:
            self.events.append(step_adapter.validate_python(raw))
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(p) for p in problem["loc"][1:])
            self.skipped.append((position, f"{type_} not a valid step: {where}: {problem['msg']}"))


def _ref(key: str) -> dict[str, str]:
    system, kind, id_ = key.split("/", 2)
    return {"system": system, "kind": kind, "id": id_}


def _mentions(value: Any, id_: str) -> bool:
    """Whether `id_` is one of the values of a read's result (iteratively: results nest)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif node == id_ or (isinstance(node, int | float) and str(node) == id_):
            return True
    return False


def _params(arguments: Any) -> tuple[dict[str, Any], bool]:
    """A call's arguments as params: a JSON string or an object. Text that is not a JSON object is
    kept as it was (`unparsed_arguments`), never dropped."""
    if isinstance(arguments, dict):
        return arguments, False
    if arguments is None or arguments == "":
        return {}, False
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return {"unparsed_arguments": arguments}, True
        if isinstance(value, dict):
            return value, False
    return {"unparsed_arguments": as_text(arguments)}, True


def _parsed(content: Any) -> Any:
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def _output(call: Call) -> str:
    """What the call sends, as the step's output: its arguments, canonical."""
    return as_text(call.params)
