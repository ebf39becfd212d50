"""OpenTelemetry GenAI traces in OTLP JSON: the file form of `ExportTraceServiceRequest` (one
request per line, as the Collector's file exporter writes, or one request).

A trace is a run (its id: the `gen_ai.conversation.id` if a span names one, else the trace id).
`invoke_agent` starts it (agent, model, provider); each `execute_tool` span is a call of
`gen_ai.tool.name` (`gen_ai.tool.call.id`, its arguments, its result; span status ERROR: it
failed) started at the span's start and answered at its end; a retrieval span's documents are
sources; chat spans carry the customer's words (what consent is read from). Both shapes in the
wild are read: semantic conventions up to v1.36 (`gen_ai.system`, `gen_ai.prompt.N.*` /
`gen_ai.completion.N.*` attributes or per-message events such as `gen_ai.user.message`) and
v1.37 on (`gen_ai.provider.name`, `gen_ai.input.messages` / `gen_ai.output.messages`).

The conventions are still marked Development: the versions read are SEMCONV_VERSIONS; a scope
or resource whose `schemaUrl` names another is skipped, saying so. Spans are grouped by trace
in memory (spans only; a trace's spans may be spread over the whole file)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from domain.step_values import Actor
from infra.importing.base import BrokenJson, JsonValues, Runs
from infra.importing.mapping import Mapping
from infra.importing.runs import RunBuilder

FORMAT = "otel-genai"  # run.started origin.format
SEMCONV_VERSIONS = (
    "1.26.0",
    "1.27.0",
    "1.28.0",
    "1.29.0",
    "1.30.0",
    "1.31.0",
    "1.32.0",
    "1.33.0",
    "1.34.0",
    "1.35.0",
    "1.36.0",
    "1.37.0",
    "1.38.0",
)
_SCHEMA = re.compile(r"^https://opentelemetry\.io/schemas/(\d+\.\d+\.\d+)$")
_ERROR = (2, "STATUS_CODE_ERROR")
_RETRIEVAL = ("retrieval", "retrieve", "search")


@dataclass
class Span:
    trace: str
    span: str
    name: str
    start: datetime
    end: datetime
    attributes: dict[str, Any]
    events: list[tuple[datetime, str, dict[str, Any]]]
    failed: bool
    error: str

    @property
    def operation(self) -> str:
        named = self.attributes.get("gen_ai.operation.name")
        return str(named) if named else self.name.split(" ", 1)[0]


def trace_runs(values: JsonValues, path: Path, mapping: Mapping, tenant: str, workflow: str | None) -> Runs:
    traces: dict[str, list[Span]] = {}
    refused: list[tuple[str, str]] = []
    try:
        for number, request in enumerate(values.values(), start=1):
            for span in _spans(request, f"request {number}", refused):
                traces.setdefault(span.trace, []).append(span)
    except BrokenJson as error:  # the traces read before it are still imported
        refused.append((f"character {error.offset}", str(error)))
    yield from refused
    for trace, spans in traces.items():
        flow = workflow or mapping.workflow
        if not flow:
            yield f"trace {trace}", "no workflow (give --workflow or `workflow:` in the mapping)"
            continue
        yield f"trace {trace}", _run(sorted(spans, key=lambda s: (s.start, s.end)), mapping, tenant, flow)


def _spans(request: Any, where: str, refused: list[tuple[str, str]]) -> Iterator[Span]:
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
        refused.append((where, "not an OTLP ExportTraceServiceRequest (no resourceSpans)"))
        return
    for resource in request["resourceSpans"]:
        for scope in resource.get("scopeSpans") or ():
            schema = scope.get("schemaUrl") or resource.get("schemaUrl") or ""
            problem = _unsupported(schema)
            if problem:
                refused.append((where, problem))
                continue
            for raw in scope.get("spans") or ():
                yield _span(raw)


def _unsupported(schema: str) -> str | None:
    if not schema:
        return None  # many exporters send none: the attributes say which shape it is
    match = _SCHEMA.match(schema)
    if match and match.group(1) in SEMCONV_VERSIONS:
        return None
    return (
        f"schema {schema!r} is not a version of the OpenTelemetry semantic conventions this importer "
        f"reads ({SEMCONV_VERSIONS[0]} to {SEMCONV_VERSIONS[-1]}); its spans are skipped"
    )


def _span(raw: dict[str, Any]) -> Span:
    status = raw.get("status") or {}
    attributes = _attributes(raw.get("attributes"))
    return Span(
        trace=str(raw.get("traceId") or "trace"),
        span=str(raw.get("spanId") or ""),
        name=str(raw.get("name") or ""),
        start=_time(raw.get("startTimeUnixNano")),
        end=_time(raw.get("endTimeUnixNano") or raw.get("startTimeUnixNano")),
        attributes=attributes,
        events=[
            (_time(e.get("timeUnixNano")), str(e.get("name") or ""), _attributes(e.get("attributes")))
            for e in raw.get("events") or ()
        ],
        failed=status.get("code") in _ERROR,
        error=str(status.get("message") or attributes.get("error.type") or "failed"),
    )


def _time(nanos: Any) -> datetime:
    return datetime.fromtimestamp(int(nanos or 0) // 1000 / 1_000_000, UTC)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {str(p.get("key")): _value(p.get("value") or {}) for p in pairs or () if isinstance(p, dict)}


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values"))
    return None


def _run(spans: list[Span], mapping: Mapping, tenant: str, workflow: str) -> RunBuilder:
    agent_span = next((s for s in spans if s.operation == "invoke_agent"), spans[0])
    attrs = {k: v for s in reversed(spans) for k, v in s.attributes.items()} | agent_span.attributes
    run_id = str(attrs.get("gen_ai.conversation.id") or spans[0].trace)
    agent = str(attrs.get("gen_ai.agent.name") or attrs.get("gen_ai.agent.id") or "agent")
    customer = str(attrs.get("user.id") or attrs.get("enduser.id") or "customer")
    builder = RunBuilder(
        mapping,
        tenant,
        run_id,
        agent=Actor(kind="agent", id=agent),
        customer=Actor(kind="human", id=customer, role="customer"),
    )
    meta: dict[str, Any] = {"agent": {"name": agent, "version": str(attrs.get("gen_ai.agent.version") or "")}}
    model = attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model")
    if model:
        provider = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or mapping.model_provider
        meta["model"] = {"provider": str(provider), "name": str(model), "version": ""}
    given = mapping.input
    if given is not None and given.id is not None and given.id.argument in attrs:
        meta["input"] = {"system": given.system, "kind": given.kind, "id": str(attrs[given.id.argument])}
    builder.start(agent_span.start, workflow, meta, FORMAT)
    for at, _, act in sorted(_timeline(spans), key=lambda item: (item[0], item[1])):
        act(builder, at)
    builder.finish(spans[-1].end, None)
    return builder


def _timeline(spans: list[Span]) -> Iterator[tuple[datetime, int, Any]]:
    """What happened when: words the customer said, calls at their start, results at their end."""
    heard = 0
    for order, span in enumerate(spans):
        seq = order * 4
        if span.operation == "execute_tool":
            yield from _tool(span, seq)
        elif span.operation in _RETRIEVAL:
            yield span.end, seq, lambda b, at, s=span: _retrieved(b, s, at)
        else:
            said = _customer_words(span)
            if len(said) > heard:  # each chat repeats the conversation: only new words count
                heard = len(said)
                words, when = said[-1]
                yield when, seq, lambda b, at, w=words: b.customer_said(w, at)


def _tool(span: Span, seq: int) -> Iterator[tuple[datetime, int, Any]]:
    attrs = span.attributes
    name = str(attrs.get("gen_ai.tool.name") or span.name.removeprefix("execute_tool").strip())
    call_id = attrs.get("gen_ai.tool.call.id")
    position = f"span-{span.span}"
    arguments = attrs.get("gen_ai.tool.call.arguments", attrs.get("gen_ai.tool.arguments"))
    result = attrs.get("gen_ai.tool.call.result", attrs.get("gen_ai.tool.result"))
    call_key = str(call_id) if call_id is not None else position
    yield span.start, seq, lambda b, at: b.call(position, call_key, name, arguments, at, False)
    failed = True if span.failed else None
    content = span.error if span.failed and result is None else result
    yield span.end, seq + 1, lambda b, at: b.result(f"{position}/end", call_key, content, at, failed)


def _retrieved(builder: RunBuilder, span: Span, at: datetime) -> None:
    attrs = span.attributes
    system = str(attrs.get("gen_ai.data_source.id") or "retrieval")
    documents = attrs.get("gen_ai.retrieval.documents")
    if isinstance(documents, str):
        try:
            documents = json.loads(documents)
        except ValueError:
            documents = None
    ids = [str(d.get("id")) for d in documents or () if isinstance(d, dict) and d.get("id") is not None]
    for number, id_ in enumerate(ids or [str(attrs.get("gen_ai.retrieval.query.text") or span.span)]):
        builder.retrieved(f"span-{span.span}/{number}", system, "document", id_, at)


def _customer_words(span: Span) -> list[tuple[str, datetime]]:
    """The customer's messages a model call was given, oldest first, in either shape."""
    attrs = span.attributes
    words: list[tuple[str, datetime]] = []
    current = attrs.get("gen_ai.input.messages")
    if isinstance(current, str):
        try:
            current = json.loads(current)
        except ValueError:
            current = None
    if isinstance(current, list):  # v1.37 on
        for message in current:
            if isinstance(message, dict) and message.get("role") == "user":
                parts = message.get("parts") or ()
                text = " ".join(str(p.get("content", "")) for p in parts if isinstance(p, dict))
                words.append((text, span.start))
        return words
    index = 0  # up to v1.36: gen_ai.prompt.N.role / .content attributes
    while f"gen_ai.prompt.{index}.role" in attrs:
        if attrs[f"gen_ai.prompt.{index}.role"] == "user":
            words.append((str(attrs.get(f"gen_ai.prompt.{index}.content") or ""), span.start))
        index += 1
    for at, name, event in span.events:  # or one event per message
        if name == "gen_ai.user.message":
            words.append((str(event.get("content") or event.get("gen_ai.event.content") or ""), at))
    return words
