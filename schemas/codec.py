"""The one mapper between wire bytes and step facts.

A value is Avro single-object encoding (`C3 01` + 8-byte CRC-64-AVRO
fingerprint + Avro binary) or JSON (`{`), told apart by its first bytes. Avro
written with an older schema is resolved against the current one by its
fingerprint; values in the current schema are read by a reader compiled from
it (schemas/avro_reader.py), with fastavro the judge of any it cannot read.
Every way a value can be wrong is a typed `DecodeError` whose message says
what to fix, and nothing else escapes `Codec.decode`: one hostile value must
never stop the ingest loop. What a step may hold (lengths, NUL,
timestamps, nesting) is defined once, in `domain.step_values`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pydantic_core
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import ValidationError

from domain.step_values import EARLIEST, LATEST, NO_NUL, NUL_MESSAGE
from domain.steps import SERVICE_TYPES, STEP_TYPES, StepEvent, step_adapter
from schemas.avro_reader import Unreadable, compile_reader

log = logging.getLogger(__name__)

AVRO_MAGIC = b"\xc3\x01"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEADER = len(AVRO_MAGIC) + 8
SCHEMA_DIR = Path(__file__).parent
# The schema this service writes and reads into; every other *.avsc here is an
# older writer schema that values may still arrive in (resolved by fingerprint).
CURRENT_SCHEMA_FILE = SCHEMA_DIR / "step-v4.avsc"
_NAMESPACE = "dev.agentreceipts.v1"

# Wire type -> the Avro record that carries its data.
AVRO_DATA_RECORD = {
    wire: f"{_NAMESPACE}.{'ErrorData' if wire.endswith('.failed') else cls.__name__ + 'Data'}"
    for wire, cls in STEP_TYPES.items()
}


# A message travels as a dead letter's header: a hostile value (a 100 KB type
# name) must not make it larger than the broker takes.
MAX_MESSAGE = 2_000


class DecodeError(ValueError):
    """A value that is not a valid step. `reason` is a stable short code."""

    reason = "undecodable"

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = f"{message[: MAX_MESSAGE - 30]}… ({len(message):,} characters)"
        super().__init__(message)


class NotAStep(DecodeError):
    reason = "not_a_step"


class UnknownSchema(DecodeError):
    reason = "unknown_schema"


class TruncatedValue(DecodeError):
    reason = "truncated"


class InvalidStep(DecodeError):
    reason = "invalid"


class UnknownStepType(InvalidStep):
    reason = "unknown_type"


def schema_fingerprint(parsed_schema: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed_schema), "CRC-64-AVRO"))


def load_schema(path: Path) -> Any:
    return fastavro.parse_schema(json.loads(path.read_text()))


class Codec:
    """Decodes either encoding; encodes to either. Holds the known writer schemas."""

    def __init__(self, extra_writer_schemas: Iterable[Any] = (), *, compiled: bool = True) -> None:
        """`compiled=False`: every Avro value read by fastavro (what the fast path is checked against)."""
        self.reader_schema = load_schema(CURRENT_SCHEMA_FILE)
        self._read_current: Callable[[bytes, int], dict[str, Any]] | None = None
        try:
            if compiled:
                self._read_current = compile_reader(json.loads(CURRENT_SCHEMA_FILE.read_text()))
        except NotImplementedError as error:
            log.warning("Avro values are read by fastavro only: %s", error)
        self.fingerprint = schema_fingerprint(self.reader_schema)
        self._writers: dict[bytes, Any] = {}
        for path in sorted(SCHEMA_DIR.glob("*.avsc")):
            if path != CURRENT_SCHEMA_FILE:
                self.register(load_schema(path))
        self.register(self.reader_schema)
        for schema in extra_writer_schemas:
            self.register(fastavro.parse_schema(schema))

    def register(self, parsed_schema: Any) -> bytes:
        """Accept values written with this (older or newer) schema."""
        fp = schema_fingerprint(parsed_schema)
        self._writers[fp] = parsed_schema
        return fp

    # --- decoding --------------------------------------------------------

    def decode(self, raw: bytes) -> StepEvent:
        try:
            return self._decode(raw)
        except DecodeError:
            raise
        except MemoryError:
            raise  # the process is short of memory, not the value wrong: let it retry
        except Exception as error:
            # The limits in domain.step_values are meant to make this unreachable; if a
            # parser still finds a way to fail, the value is dead-lettered, and the
            # loop goes on, rather than the loop stopping on it for good.
            raise InvalidStep(f"value could not be decoded: {type(error).__name__}: {error}") from None

    def _decode(self, raw: bytes) -> StepEvent:
        if raw[:2] == AVRO_MAGIC:
            return self._validate(lambda: step_adapter.validate_python(self._read_avro(raw)))
        if raw[:1] == b"{" or raw.lstrip()[:1] == b"{":
            return self._validate(lambda: step_adapter.validate_json(raw))
        preview = raw[:16].hex(" ")
        raise NotAStep(
            f"value is neither Avro single-object encoding (starts C3 01) nor a JSON object "
            f"(starts '{{'): {len(raw)} bytes starting {preview or '(empty)'}"
        )

    def _read_avro(self, raw: bytes) -> dict[str, Any]:
        if len(raw) < _HEADER:
            raise TruncatedValue(f"Avro value is {len(raw)} bytes, shorter than its 10-byte header")
        fp = raw[2:_HEADER]
        writer = self._writers.get(fp)
        if writer is None:
            raise UnknownSchema(
                f"Avro value written with unknown schema fingerprint {fp.hex()}; known: "
                f"{', '.join(k.hex() for k in self._writers)}. Register the writer schema or "
                "publish with a schema this service knows."
            )
        record: Any = None
        if fp == self.fingerprint and self._read_current is not None:
            with contextlib.suppress(Unreadable):  # fastavro reads it again, and judges it
                record = self._read_current(raw, _HEADER)
        if record is None:
            record = self._read_with_fastavro(raw, fp, writer)
        return self._with_params(record)

    def _read_with_fastavro(self, raw: bytes, fp: bytes, writer: Any) -> dict[str, Any]:
        body = BytesIO(raw)
        body.seek(_HEADER)
        # Schema resolution costs ~3x a plain read: only pay it for older writers.
        reader = None if fp == self.fingerprint else self.reader_schema
        try:
            record: Any = fastavro.schemaless_reader(body, writer, reader)
        except EOFError as error:
            raise TruncatedValue(f"Avro value ends early ({len(raw)} bytes): {error}") from None
        except (StopIteration, IndexError) as error:
            # fastavro raises these both for a short value and for a bad union or
            # enum index: only a value read to its end is a truncation.
            if body.tell() >= len(raw):
                raise TruncatedValue(f"Avro value ends early ({len(raw)} bytes)") from None
            raise InvalidStep(
                f"Avro body does not match its schema at byte {body.tell()}: {error!r}"
            ) from None
        except Exception as error:
            # fastavro raises many types on bad bytes (ValueError, UnicodeDecodeError,
            # OverflowError for an impossible date...): each means the value is not a
            # step, never that ingest must stop.
            raise InvalidStep(
                _timestamp_out_of_range(raw, writer)
                or f"Avro body does not match its schema: {type(error).__name__}: {error}"
            ) from None
        if not isinstance(record, dict):
            raise InvalidStep("the Avro value is not a record")
        if body.tell() != len(raw):
            raise InvalidStep(f"{len(raw) - body.tell()} bytes left over after the Avro record")
        return record

    @staticmethod
    def _with_params(record: dict[str, Any]) -> dict[str, Any]:
        """The action's params, JSON text on the Avro wire, parsed."""
        data = record.get("data")
        if isinstance(data, dict) and isinstance(data.get("action"), dict):
            action = data["action"]
            # pydantic's own JSON parser, so Avro params meet the same parser as JSON
            # values: no NaN, no lone surrogates, at most 4,300 digits a number, and
            # a recursion limit that raises ValueError (json.loads: RecursionError).
            try:
                action["params"] = pydantic_core.from_json(action.get("params") or "{}", allow_inf_nan=False)
            except (ValueError, RecursionError) as error:
                raise InvalidStep(f"data.action.params is not JSON text: {error}") from None
        return record

    @staticmethod
    def _validate(validate: Any) -> StepEvent:
        try:
            step: StepEvent = validate()
        except ValidationError as error:
            raise _invalid(error) from None
        return step

    # --- encoding --------------------------------------------------------

    def encode(self, step: StepEvent, encoding: str = "avro") -> bytes:
        if encoding == "json":
            return encode_json(step)
        if encoding == "avro":
            return self.encode_avro(step)
        raise ValueError(f"unknown encoding {encoding!r}: use 'avro' or 'json'")

    def encode_avro(self, step: StepEvent, schema: Any = None) -> bytes:
        record = _lists(step.model_dump(mode="python"))
        data = record["data"]
        if "action" in data:
            data["action"]["params"] = json.dumps(data["action"]["params"], sort_keys=True)
        # Name the union branch: several data records could fit the same dict.
        record["data"] = (AVRO_DATA_RECORD[record["type"]], data)
        out = BytesIO()
        writer = self.reader_schema if schema is None else schema
        # The CRC-64 is pure Python (~0.7 ms): never recompute it for the current schema.
        out.write(AVRO_MAGIC + (self.fingerprint if schema is None else schema_fingerprint(writer)))
        fastavro.schemaless_writer(out, writer, record)
        return out.getvalue()


def _timestamp_out_of_range(raw: bytes, writer: Any) -> str | None:
    """After a failed Avro read only: fastavro turns timestamps into datetimes and,
    on one Python cannot hold (past 9999), fails without naming the field. Read the
    value again with timestamps as plain longs to name it and the limit."""
    try:
        plain = fastavro.parse_schema(_without_logical_types(writer))
        record = fastavro.schemaless_reader(BytesIO(raw[_HEADER:]), plain, None)
    except Exception:
        return None  # not (only) a timestamp: the caller's message stands
    if not isinstance(record, dict):
        return None
    data = record.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    timestamps = {
        "occurred_at": record.get("occurred_at"),
        "data.source.retrieved_at": source.get("retrieved_at") if isinstance(source, dict) else None,
    }
    earliest, latest = ((t - _EPOCH) // timedelta(microseconds=1) for t in (EARLIEST, LATEST))
    for name, micros in timestamps.items():
        if isinstance(micros, int) and not earliest <= micros < latest:
            return (
                f"1 invalid field(s): {name}: Input should be from {EARLIEST:%Y-%m-%dT%H:%M:%SZ} and before "
                f"{LATEST:%Y-%m-%dT%H:%M:%SZ} (timestamp-micros {micros})"
            )
    return None


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _without_logical_types(v)
            for k, v in schema.items()
            if k not in ("logicalType", "__fastavro_parsed", "__named_schemas")
        }
    if isinstance(schema, list):
        return [_without_logical_types(v) for v in schema]
    return schema


def encode_json(step: StepEvent) -> bytes:
    return step.model_dump_json(exclude_none=True).encode()


def _lists(value: Any) -> Any:
    """fastavro writes arrays from lists; the domain keeps them as tuples."""
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    return value


# What a publisher may send: the service's own types are not its to name.
_PUBLISHABLE = ", ".join(repr(t) for t in STEP_TYPES if t not in SERVICE_TYPES)


def _invalid(error: ValidationError) -> InvalidStep:
    problems = error.errors(include_url=False)
    first = problems[0]
    if first["type"] == "union_tag_invalid":
        ctx = first.get("ctx", {})
        tag = str(ctx.get("tag"))
        shown_tag = repr(tag) if len(tag) <= 100 else f"{tag[:100]!r}… ({len(tag):,} characters)"
        return UnknownStepType(f"unknown step type {shown_tag}; expected one of {_PUBLISHABLE}")
    if first["type"] == "union_tag_not_found":
        return InvalidStep("missing field 'type' (the step type, e.g. 'action.proposed')")
    if first["type"] in ("json_invalid", "json_type"):
        return InvalidStep(f"not valid JSON: {first['msg']}")
    shown = "; ".join(_describe(p) for p in problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidStep(f"{len(problems)} invalid field(s): {shown}{more}")


def _describe(problem: Mapping[str, Any]) -> str:
    # The first loc item of a discriminated union is the tag; drop it.
    loc = [str(p) for p in problem["loc"]]
    if loc and loc[0] in STEP_TYPES:
        loc = loc[1:]
    message = problem["msg"]
    ctx = problem.get("ctx", {})
    if problem["type"] == "string_pattern_mismatch" and ctx.get("pattern") == NO_NUL:
        message = NUL_MESSAGE
    elif problem["type"] == "value_error":
        message = str(ctx.get("error", message))  # the domain's own sentence, without "Value error, "
    return f"{'.'.join(loc) or '(value)'}: {message}"
