"""OpenTelemetry GenAI traces in OTLP JSON."""

from __future__ import annotations

from pathlib import Path

from infra.importing.base import JsonValues, Runs, UnsupportedFormat
from infra.importing.mapping import Mapping


def trace_runs(values: JsonValues, path: Path, mapping: Mapping, tenant: str, workflow: str | None) -> Runs:
    raise UnsupportedFormat(str(path), "OTLP traces are not imported yet")
