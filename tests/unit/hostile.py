"""Builders of values a hostile or careless publisher could send, in either encoding.

Avro values are written with the current schema's logical types dropped, so a
timestamp can be any long (even one Python's datetime cannot hold); the bytes are
the same as a real writer's, under the current schema's fingerprint.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from domain.steps import StepEvent
from schemas.codec import AVRO_DATA_RECORD, AVRO_MAGIC, CURRENT_SCHEMA_FILE, Codec, _lists

CODEC = Codec()
Change = Callable[[dict[str, Any]], None]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _plain(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


PLAIN_SCHEMA = fastavro.parse_schema(_plain(json.loads(CURRENT_SCHEMA_FILE.read_text())))


def micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def record(step: StepEvent) -> dict[str, Any]:
    """A step as the Avro writer takes it: lists, params as JSON text, timestamps as micros."""
    value: dict[str, Any] = _lists(step.model_dump(mode="python"))
    value["occurred_at"] = micros(step.occurred_at)
    data = value["data"]
    if data.get("source") and data["source"]["retrieved_at"] is not None:
        data["source"]["retrieved_at"] = micros(data["source"]["retrieved_at"])
    if "action" in data:
        data["action"]["params"] = json.dumps(data["action"]["params"])
    return value


def write_avro(value: dict[str, Any], branch: str | None = None) -> bytes:
    """`branch`: the data record to write (by default the one of the value's type)."""
    value = {**value, "data": (branch or AVRO_DATA_RECORD[value["type"]], value["data"])}
    out = io.BytesIO()
    out.write(AVRO_MAGIC + CODEC.fingerprint)
    fastavro.schemaless_writer(out, PLAIN_SCHEMA, value)
    return out.getvalue()


def avro(step: StepEvent, change: Change | None = None) -> bytes:
    value = record(step)
    if change:
        change(value)
    return write_avro(value)


def as_json(step: StepEvent, change: Change | None = None) -> bytes:
    value: dict[str, Any] = json.loads(step.model_dump_json())
    if change:
        change(value)
    return json.dumps(value).encode()


def at(*path: str | int, value: Any) -> Change:
    """Set the field at `path` (keys and list indexes) to `value`."""

    def change(target: Any) -> None:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def nested(depth: int, leaf: str = "1", kind: str = "object") -> str:
    """JSON text `depth` levels deep: objects ({"a": ...}) or arrays ([...])."""
    if kind == "object":
        return '{"a":' * depth + leaf + "}" * depth
    return "[" * depth + leaf + "]" * depth


def with_params_text(step: StepEvent, params: str) -> bytes:
    """A JSON step whose params are the given JSON text, spliced in as text (so it can
    be deeper than json.dumps recurses, or hold NaN)."""
    marker = "__params__"
    raw = as_json(step, at("data", "action", "params", value=marker))
    return raw.replace(json.dumps(marker).encode(), params.encode())
