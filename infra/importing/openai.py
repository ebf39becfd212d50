"""OpenAI-style chat transcripts: a JSON array or JSONL of runs, each `{id?, model?, agent?,
workflow?, customer?, input?, started_at?, outcome?, messages: [...]}` or a bare array of
messages. `system`/`user`/`assistant`/`tool` messages; the assistant's `tool_calls[{id,
function{name, arguments}}]` with `arguments` a JSON string or an object; results (`role: tool`)
link by `tool_call_id` (or `id`) to the oldest unanswered call with that id. A call the customer
made on their side (`requestor: "user"` on the call or its message, or a user message carrying
`tool_calls`) is the customer's action."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domain.step_values import Actor
from infra.importing.base import JsonValues, Runs
from infra.importing.clock import fill, time_of
from infra.importing.mapping import Mapping, field_at
from infra.importing.runs import SYNTHETIC_CLOCK, RunBuilder

FORMAT = "openai-chat"  # run.started origin.format


class RunProblem(ValueError):
    """A run that cannot be imported at all (no messages, no workflow)."""


def runs_of(values: JsonValues) -> Iterator[Any]:
    """Each run of the file: a top-level array of messages is one run, read whole."""
    if values.peek() == "[":
        elements = values.elements()
        first = next(elements, None)
        if first is None:
            return
        if isinstance(first, dict) and "role" in first:
            yield [first, *elements]
            return
        yield first
        yield from elements
        return
    yield from values.values()


def transcript_runs(
    values: JsonValues, path: Path, mapping: Mapping, tenant: str, workflow: str | None
) -> Runs:
    for index, run in enumerate(runs_of(values), start=1):
        try:
            yield f"run {index}", transcript_events(run, index, path, mapping, tenant, workflow)
        except RunProblem as error:
            yield f"run {index}", str(error)


def transcript_events(
    run: Any, index: int, path: Path, mapping: Mapping, tenant: str, workflow: str | None
) -> RunBuilder:
    """One run's events (and what was skipped or noted in it). Raises RunProblem."""
    meta: dict[str, Any] = run if isinstance(run, dict) else {}
    messages = run if isinstance(run, list) else meta.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RunProblem("not a run: no messages")
    run_id = str(meta.get("id") or meta.get("run_id") or f"{path.stem}-{index}")
    flow = workflow or meta.get("workflow") or mapping.workflow
    if not flow:
        raise RunProblem(f"run {run_id}: no workflow (give --workflow or `workflow:` in the mapping)")
    zone = mapping.zone
    times, synthetic = fill([time_of(m, zone) for m in messages], time_of(meta, zone))
    start = time_of(meta, zone) or times[0]
    customer_id = meta.get("customer") or meta.get("customer_id") or meta.get("user_id") or "customer"
    builder = RunBuilder(
        mapping,
        tenant,
        run_id,
        agent=Actor(kind="agent", id=_agent(meta)[0]),
        customer=Actor(kind="human", id=str(customer_id), role="customer"),
        synthetic_clock=synthetic,
    )
    if synthetic:
        builder.notes.append(f"runs without timestamps (on the synthetic clock, flagged {SYNTHETIC_CLOCK})")
    builder.start(start, str(flow), _run_meta(meta, mapping), FORMAT)
    for number, (message, at) in enumerate(zip(messages, times, strict=True)):
        _message(builder, f"m{number}", message, at)
    outcome = meta.get("outcome") or meta.get("final_state")
    builder.finish(times[-1], str(outcome) if outcome is not None else None)
    return builder


def _message(builder: RunBuilder, position: str, message: Any, at: Any) -> None:
    if not isinstance(message, dict):
        builder.skipped.append((position, "a message is not an object"))
        return
    role = message.get("role")
    customer_side = role == "user" or message.get("requestor") == "user"
    if role == "user" and not message.get("tool_calls"):
        builder.customer_said(_text(message.get("content")), at)
    for number, call in enumerate(message.get("tool_calls") or ()):
        where = f"{position}.{number}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            builder.skipped.append((where, "a tool call without a function name"))
            continue
        by_customer = customer_side or call.get("requestor") == "user"
        builder.call(
            where, _id(call.get("id")), str(function["name"]), function.get("arguments"), at, by_customer
        )
    if role == "tool":
        failed = message.get("is_error") if isinstance(message.get("is_error"), bool) else None
        call_id = _id(message.get("tool_call_id", message.get("id")))
        content = message.get("content")
        builder.result(
            position, call_id, _text(content) if isinstance(content, list) else content, at, failed
        )


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(content: Any) -> str:
    """A message's words: text, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _agent(meta: dict[str, Any]) -> tuple[str, str]:
    agent = meta.get("agent")
    if isinstance(agent, dict):
        return str(agent.get("name") or "agent"), str(agent.get("version") or "")
    return (str(agent), "") if agent else ("agent", "")


def _run_meta(meta: dict[str, Any], mapping: Mapping) -> dict[str, Any]:
    found: dict[str, Any] = {}
    name, version = _agent(meta)
    if meta.get("agent"):
        found["agent"] = {"name": name, "version": version}
    model = meta.get("model")
    if isinstance(model, dict):
        found["model"] = {"provider": mapping.model_provider, "version": "", **model}
    elif model:
        found["model"] = {"provider": mapping.model_provider, "name": str(model), "version": ""}
    if isinstance(meta.get("input"), dict):
        found["input"] = meta["input"]
    elif mapping.input is not None and mapping.input.id is not None and mapping.input.id.argument:
        ids = field_at(meta, mapping.input.id.argument)
        if ids:
            found["input"] = {"system": mapping.input.system, "kind": mapping.input.kind, "id": str(ids[0])}
    return found
