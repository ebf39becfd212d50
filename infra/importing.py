"""Importing history: files of past agent runs, published on `agent-steps` — the path live
events take, so the same code records them and builds their receipts.

This module reads **contract events as JSONL** (one step a line, in our wire shape: what a
platform already logging our contract has), streamed a line at a time, so a file of any
size imports in constant memory. Each line goes through the same codec and limits as
ingest; a line that is not a step is skipped with its number and reason, never stops the
import. Event ids are the file's own, so importing the same file again records nothing
new (ingest counts them as duplicates).

Transcripts and traces (OpenAI-style chat, OpenTelemetry GenAI spans) need a mapping of
their tools to targets and classes; they are refused here with a sentence saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from domain.errors import Invalid
from domain.steps import StepEvent
from schemas import Codec, DecodeError

FLUSH_EVERY = 5_000  # events between waits for the broker: memory stays flat on any file


class StepSender(Protocol):
    def publish(self, step: StepEvent) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


@dataclass
class Imported:
    """What an import did: the runs and events it published, and each line it skipped."""

    events: int = 0
    runs: set[tuple[str, str]] = field(default_factory=set)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)

    def summary(self) -> list[str]:
        runs, skipped = len(self.runs), len(self.skipped)
        lines = [f"published {self.events:,} events of {runs:,} runs; skipped {skipped:,} lines"]
        lines += [f"  {name}:{number}: {reason}" for name, number, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  … and {len(self.skipped) - 20:,} more")
        return lines


class UnsupportedFormat(Invalid):
    title = "Unsupported file format"


def detect(path: Path) -> str:
    """The file's format, from its first non-blank line: `contract-jsonl`, or a sentence why not."""
    with path.open("rb") as lines:
        for raw in lines:
            if raw.strip():
                return _format_of(path, raw.strip())
    raise UnsupportedFormat(str(path), "the file is empty")


def _format_of(path: Path, first: bytes) -> str:
    try:
        value = json.loads(first)
    except ValueError:
        value = None
    if isinstance(value, dict) and "event_id" in value and "type" in value and "run_id" in value:
        return "contract-jsonl"
    if first.startswith(b"[") or (
        isinstance(value, dict) and ("messages" in value or "resourceSpans" in value)
    ):
        raise UnsupportedFormat(
            str(path),
            "chat transcripts and OpenTelemetry traces need a mapping of their tools and are not "
            "imported by this version; contract events as JSONL (one step a line) are",
        )
    raise UnsupportedFormat(str(path), "not contract events as JSONL: the first line is not a step")


def import_file(
    path: Path,
    publisher: StepSender,
    imported: Imported,
    advance: Callable[[int, int], None] = lambda done, count: None,
    codec: Codec | None = None,
) -> None:
    """Publish every step of a JSONL file of contract events; `advance(bytes, events)` as it goes."""
    detect(path)
    codec = codec or Codec()
    for number, raw in _lines(path):
        advance(len(raw), 0)
        if not raw.strip():
            continue
        try:
            step = codec.decode(raw.strip())
        except DecodeError as error:
            imported.skipped.append((path.name, number, str(error)))
            continue
        publisher.publish(step)
        imported.events += 1
        imported.runs.add((step.tenant, step.run_id))
        advance(0, 1)
        if imported.events % FLUSH_EVERY == 0:
            publisher.flush()  # the publisher keeps what it sent until the broker has it
    publisher.flush()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as lines:
        yield from enumerate(lines, start=1)
