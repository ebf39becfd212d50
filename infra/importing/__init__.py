"""Importing history: files of past agent runs, published on `agent-steps` — the path live
events take, so the same code records them and builds their receipts.

Three formats, detected from the file: contract events as JSONL (`contract.py`, no mapping),
OpenAI-style chat transcripts (`openai.py`) and OpenTelemetry GenAI traces in OTLP JSON
(`otel.py`); the last two need a mapping of their tools (`mapping.py`) and become contract
events in `runs.py`, the pure part. Every format streams: a file of any size imports in
constant memory (a run at a time).
"""

from __future__ import annotations

from pathlib import Path

from domain.steps import StepEvent
from infra.importing.base import (
    FLUSH_EVERY,
    Advance,
    BrokenJson,
    Imported,
    JsonValues,
    StepSender,
    UnsupportedFormat,
    no_progress,
)
from infra.importing.contract import import_contract
from infra.importing.mapping import Mapping, MappingError, load_mapping
from infra.importing.openai import transcript_runs
from infra.importing.otel import trace_runs
from infra.importing.runs import RunBuilder

__all__ = [
    "CONTRACT",
    "OTLP",
    "TRANSCRIPT",
    "Imported",
    "Mapping",
    "MappingError",
    "StepSender",
    "UnsupportedFormat",
    "detect",
    "import_file",
    "load_mapping",
]

CONTRACT, TRANSCRIPT, OTLP = "contract-jsonl", "chat-transcript", "otlp-trace"
_HEAD = 64 * 1024


def detect(path: Path) -> str:
    """The file's format, from its first bytes, or UnsupportedFormat saying why not."""
    with path.open("rb") as file:
        head = file.read(_HEAD).lstrip()
    if not head:
        raise UnsupportedFormat(str(path), "the file is empty")
    first = head.splitlines()[0]
    # A contract step may name a role (its actor's), or quote anything in its text: its own
    # three keys on the first line decide first.
    if head.startswith(b"{") and all(f'"{k}"'.encode() in first for k in ("event_id", "run_id", "type")):
        return CONTRACT
    if head.startswith(b"{") and b'"resourceSpans"' in head:
        return OTLP
    if head.startswith(b"[") or (head.startswith(b"{") and (b'"messages"' in head or b'"role"' in head)):
        return TRANSCRIPT  # a pretty-printed run names its messages after its first line
    raise UnsupportedFormat(
        str(path),
        "not a format this version imports: contract events as JSONL (one step a line), "
        "OpenAI-style chat transcripts (a JSON array or JSONL of runs) or OTLP JSON traces",
    )


def import_file(
    path: Path,
    publisher: StepSender,
    imported: Imported,
    advance: Advance = no_progress,
    mapping: Mapping | None = None,
    workflow: str | None = None,
    tenant: str = "default",
) -> None:
    """Publish every run of `path`; `advance(bytes, events)` as it goes."""
    kind = detect(path)
    if kind == CONTRACT:
        import_contract(path, publisher, imported, advance)
        return
    if mapping is None:
        raise UnsupportedFormat(str(path), f"a {kind} file needs a mapping of its tools: give --mapping FILE")
    runs = transcript_runs if kind == TRANSCRIPT else trace_runs
    with path.open(encoding="utf-8") as stream:
        values = JsonValues(stream, advance)
        try:
            for where, built in runs(values, path, mapping, tenant, workflow):
                if isinstance(built, str):
                    imported.skip(path.name, where, built)
                    continue
                _publish(built, path, publisher, imported, advance)
        except BrokenJson as error:  # the runs before it are published and stand
            imported.skip(path.name, f"character {error.offset}", str(error))
    publisher.flush()


def _publish(
    built: RunBuilder, path: Path, publisher: StepSender, imported: Imported, advance: Advance
) -> None:
    for where, reason in built.skipped:
        imported.skip(path.name, f"{built.run_id}/{where}", reason)
    imported.notes.update(built.notes)
    for step in built.events:
        _send(step, publisher, imported)
        advance(0, 1)


def _send(step: StepEvent, publisher: StepSender, imported: Imported) -> None:
    publisher.publish(step)
    imported.events += 1
    imported.runs.add((step.tenant, step.run_id))
    if imported.events % FLUSH_EVERY == 0:
        publisher.flush()
