"""The wire codec: both encodings round-trip every step type, old writers resolve, bad values are typed."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest

from domain.steps import SERVICE_TYPES, STEP_TYPES, StepEvent, flag, step_adapter
from schemas.codec import (
    AVRO_MAGIC,
    CURRENT_SCHEMA_FILE,
    Codec,
    DecodeError,
    InvalidStep,
    NotAStep,
    TruncatedValue,
    UnknownSchema,
    UnknownStepType,
    encode_json,
)
from tests.unit import factories as f

CODEC = Codec()
WHEN = datetime(2025, 3, 3, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
ACTOR = {"kind": "human", "id": "maria", "role": "sales-lead"}


V3_REQUEST: dict[str, Any] = {"rollback_id": "rb-1", "steps": ["s-1", "s-2"], "requested_by": ACTOR}
V3_OUTCOME: dict[str, Any] = {"rollback_id": "rb-1", "reverse_id": "rev-1"}
V4_ORIGIN: dict[str, Any] = {"format": "openai-chat", "approvals_recorded": False}
V4_CONTAINS = [{"system": "cms", "kind": "section", "id": "plans"}]


def _full_steps() -> dict[str, StepEvent]:
    """One step per type with every optional field (envelope included) filled."""
    env: dict[str, Any] = {"tenant": "acme", "at": WHEN, "by": ACTOR}
    steps = [
        f.started(step_id="s-1", origin=V4_ORIGIN, **env),
        f.source(retrieved_at=WHEN - timedelta(days=2), step_id="s-1", contains=V4_CONTAINS, **env),
        f.proposed(
            "s-1",
            confidence=0.87,
            reason_code="pricing",
            flags=["public", "money"],
            params={"cc": ["ops@example.com"], "priority": 2, "nested": {"ok": True}},
            target={**f.TARGET, "uri": "mailto:ana@example.com"},
            **env,
        ),
        f.policy(
            "s-1",
            "review",
            missing_fields=["account.owner"],
            decision_id="dec-1",
            matched_rules=["R-lead-email", "R-pricing"],
            source="service",
            **env,
        ),
        f.edited("s-1", **env),
        f.reviewed("s-1", comment="fixed the sign-off", **env),
        f.held("s-1", **env),
        f.executed("s-1", url="https://mail.example/msg-123", authorization="evt-approval", **env),
        f.failed("s-1", **env),
        f.rollback_requested("s-1", extra=V3_REQUEST, **env),
        f.reverted("s-1", extra={**V3_OUTCOME, "verified": True}, **env),
        f.rollback_failed("s-1", extra={**V3_OUTCOME, "retryable": False}, **env),
        f.rollback_stands("s-1", extra={"rollback_id": "rb-1", "method": "none"}, **env),
        f.corrected("s-1", step_id="s-1", extra=V3_OUTCOME, **env),
        f.consent("s-1", tenant="acme", at=WHEN),
        f.finished("reverted", step_id="s-1", **env),
    ]
    return {s.type: s for s in steps}  # type: ignore[attr-defined]


def _minimal(type_: str, data: dict[str, Any]) -> StepEvent:
    step: StepEvent = step_adapter.validate_python(
        {
            "event_id": f"min-{type_}",
            "run_id": "run-min",
            "type": type_,
            "occurred_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            "actor": {"kind": "agent", "id": "bot"},
            "data": data,
            # A consent is a person's, and covers a step: its minimum says so.
            **({"actor": {"kind": "human", "id": "c"}, "step_id": "s"} if type_ == "consent.given" else {}),
        }
    )
    return step


MINIMAL_DATA: dict[str, dict[str, Any]] = {
    "run.started": {"workflow": "support-triage"},
    "source.used": {"source": {"system": "zendesk", "kind": "ticket", "id": "T-9"}},
    "action.proposed": {
        "action": {
            "verb": "route",
            "target": {"system": "zendesk", "kind": "ticket", "id": "T-9"},
            "tool": "zendesk.assign",
        },
    },
    "policy.decided": {"rule_id": "R1", "policy_version": "1", "lane": "auto"},
    "action.edited": {"output": "", "output_hash": "sha256:x", "base_hash": "sha256:y"},
    "action.reviewed": {"decision": "rejected", "reviewed_hash": "sha256:x"},
    "action.held": {"reason": "no owner"},
    "action.executed": {"executed_hash": "sha256:x", "state": "routed"},
    "action.failed": {"error": "timeout"},
    "rollback.requested": {"reason": "wrong queue", "scope": "run"},
    "action.reverted": {"method": "reopen"},
    "rollback.failed": {"error": "gone"},
    "rollback.stands": {"runbook": "call the customer"},
    "record.corrected": {"corrects": "s-1", "correction": "queue B", "reason": "typo"},
    "run.finished": {"final_state": "abandoned"},
    "consent.given": {"text": "ok"},
}
FULL = _full_steps()
MINIMAL = {t: _minimal(t, d) for t, d in MINIMAL_DATA.items()}
CASES = [pytest.param(s, id=f"full-{t}") for t, s in FULL.items()] + [
    pytest.param(s, id=f"minimal-{t}") for t, s in MINIMAL.items()
]


def _blanks(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _blanks(v, f"{path}.{k}".lstrip("."))]
    if value is None or value in ("", (), [], {}):
        return [path]
    return []


def _older_schema(record: str, field: str) -> dict[str, Any]:
    """The current schema as an older writer had it: `record` without optional `field`."""
    schema = json.loads(CURRENT_SCHEMA_FILE.read_text())
    old = copy.deepcopy(schema)
    (branch,) = [b for b in old["fields"][-1]["type"] if b["name"] == record]
    before = len(branch["fields"])
    branch["fields"] = [x for x in branch["fields"] if x["name"] != field]
    assert len(branch["fields"]) == before - 1
    return old


def _raise(raw: bytes, codec: Codec = CODEC) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        codec.decode(raw)
    return caught.value


# --- the fixtures themselves ---------------------------------------------------------------------------


def test_full_and_minimal_cases_cover_every_step_type() -> None:
    # Service-only types (a flag on how an event arrived) are stored as JSON, never published.
    assert set(FULL) == set(STEP_TYPES) - SERVICE_TYPES
    assert set(MINIMAL) == set(STEP_TYPES) - SERVICE_TYPES


def test_a_service_flag_round_trips_as_json() -> None:
    about = FULL["action.proposed"]
    note = flag(about, "key_mismatch", "keyed otherwise")
    assert CODEC.decode(encode_json(note)) == note
    assert note.data.event_ids == (about.event_id,) and note.step_id == about.step_id
    assert flag(about, "key_mismatch", "again").event_id == note.event_id


@pytest.mark.parametrize("step", FULL.values(), ids=list(FULL))
def test_full_cases_fill_every_optional_field(step: StepEvent) -> None:
    assert _blanks(step.model_dump()) == []


@pytest.mark.parametrize("step", MINIMAL.values(), ids=list(MINIMAL))
def test_minimal_cases_leave_optional_envelope_fields_at_their_defaults(step: StepEvent) -> None:
    # A consent's step_id is required: the step it covers.
    step_id = "s" if step.type == "consent.given" else None
    assert (step.tenant, step.step_id, step.actor.role) == ("default", step_id, None)


# --- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", CASES)
def test_json_round_trip(step: StepEvent) -> None:
    raw = CODEC.encode(step, "json")
    assert raw.startswith(b"{")
    assert CODEC.decode(raw) == step


@pytest.mark.parametrize("step", CASES)
def test_avro_round_trip(step: StepEvent) -> None:
    raw = CODEC.encode(step)
    assert raw[:2] == AVRO_MAGIC == b"\xc3\x01"
    assert CODEC.decode(raw) == step


def test_avro_keeps_the_instant_and_microseconds_of_occurred_at() -> None:
    decoded = CODEC.decode(CODEC.encode(FULL["run.started"]))
    assert decoded.occurred_at == datetime(2025, 3, 3, 8, 30, 15, 123456, tzinfo=UTC)
    assert decoded.occurred_at.utcoffset() == timedelta(0)


def test_avro_round_trips_nested_params_as_a_dict() -> None:
    decoded = CODEC.decode(CODEC.encode(FULL["action.proposed"]))
    assert decoded.data.action.params == {  # type: ignore[attr-defined]
        "cc": ["ops@example.com"],
        "priority": 2,
        "nested": {"ok": True},
    }


def test_json_form_is_the_pydantic_dump_without_nulls() -> None:
    step = MINIMAL["run.finished"]
    assert json.loads(encode_json(step)) == {
        "event_id": "min-run.finished",
        "run_id": "run-min",
        "tenant": "default",
        "occurred_at": "2025-01-02T03:04:05Z",
        "actor": {"kind": "agent", "id": "bot"},
        "type": "run.finished",
        "data": {"final_state": "abandoned"},
    }


def test_json_with_leading_whitespace_decodes() -> None:
    step = FULL["action.reviewed"]
    assert CODEC.decode(b" \r\n\t " + encode_json(step)) == step


def test_encode_rejects_an_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'xml'"):
        CODEC.encode(FULL["run.finished"], "xml")


# --- the Avro single-object header -------------------------------------------------------------------


def _crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO (Rabin) as the Avro specification gives it, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_crc64_avro_reference_matches_the_spec_vector_for_int() -> None:
    assert _crc64_avro(b'"int"').hex() == "8f5c393f1ad57572"


def test_avro_header_is_c3_01_and_the_little_endian_fingerprint_of_the_canonical_schema() -> None:
    from fastavro.schema import to_parsing_canonical_form

    canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(CURRENT_SCHEMA_FILE.read_text())))
    raw = CODEC.encode(FULL["action.executed"])
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == CODEC.fingerprint == _crc64_avro(canonical.encode())
    assert len(CODEC.fingerprint) == 8


def test_avro_body_after_the_header_is_plain_avro_binary() -> None:
    step = FULL["action.failed"]
    body = io.BytesIO(CODEC.encode(step)[10:])
    record = fastavro.schemaless_reader(body, CODEC.reader_schema, None)
    assert (record["event_id"], record["type"], record["data"]) == (
        step.event_id,
        "action.failed",
        # action.failed shares its record with rollback.failed: the latter's fields at their defaults.
        {"error": "SMTP 550", "retryable": None, "rollback_id": None, "reverse_id": None},
    )


# --- schema evolution ---------------------------------------------------------------------------------


def test_older_writer_without_review_comment_decodes_with_the_default() -> None:
    old = _older_schema("ActionReviewedData", "comment")
    codec = Codec(extra_writer_schemas=[old])
    step = FULL["action.reviewed"]
    raw = codec.encode_avro(step, schema=fastavro.parse_schema(old))
    assert raw[2:10] != codec.fingerprint
    decoded = codec.decode(raw)
    assert decoded.data.comment is None  # type: ignore[attr-defined]
    assert decoded == step.model_copy(update={"data": step.data.model_copy(update={"comment": None})})  # type: ignore[attr-defined]


def test_older_writer_registered_later_without_executed_url_decodes_with_the_default() -> None:
    codec = Codec()
    old = fastavro.parse_schema(_older_schema("ActionExecutedData", "url"))
    fp = codec.register(old)
    step = FULL["action.executed"]
    raw = codec.encode_avro(step, schema=old)
    assert raw[2:10] == fp
    decoded = codec.decode(raw)
    assert decoded.data.url is None  # type: ignore[attr-defined]
    assert decoded.data.external_ref == "msg-123"  # type: ignore[attr-defined]
    assert decoded.event_id == step.event_id


def test_value_from_an_unregistered_writer_schema_is_unknown_schema() -> None:
    old = fastavro.parse_schema(_older_schema("ActionReviewedData", "comment"))
    raw = Codec(extra_writer_schemas=[]).encode_avro(FULL["action.reviewed"], schema=old)
    error = _raise(raw)
    assert isinstance(error, UnknownSchema)
    assert error.reason == "unknown_schema"
    assert raw[2:10].hex() in str(error)
    assert CODEC.fingerprint.hex() in str(error)  # the known ones are listed too


def test_made_up_fingerprint_is_unknown_schema() -> None:
    raw = AVRO_MAGIC + bytes.fromhex("0123456789abcdef") + CODEC.encode(FULL["run.finished"])[10:]
    error = _raise(raw)
    assert isinstance(error, UnknownSchema)
    assert "0123456789abcdef" in str(error)


# --- what cannot be decoded, and why -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "preview"),
    [
        (b"\x00\x01garbage", "9 bytes starting 00 01 67 61 72 62 61 67 65"),
        (b"", "0 bytes starting (empty)"),
        (b"[1, 2]", "6 bytes starting 5b 31 2c 20 32 5d"),
        (b"\xc3", "1 bytes starting c3"),
        (b"   ", "3 bytes starting 20 20 20"),
    ],
    ids=["garbage", "empty", "json-array", "half-magic", "only-whitespace"],
)
def test_value_that_is_neither_avro_nor_json_is_not_a_step(raw: bytes, preview: str) -> None:
    error = _raise(raw)
    assert type(error) is NotAStep
    assert error.reason == "not_a_step"
    assert "neither Avro single-object encoding (starts C3 01) nor a JSON object" in str(error)
    assert preview in str(error)


@pytest.mark.parametrize("cut", [2, 9])
def test_avro_shorter_than_its_header_is_truncated(cut: int) -> None:
    error = _raise(CODEC.encode(FULL["action.proposed"])[:cut])
    assert type(error) is TruncatedValue
    assert error.reason == "truncated"
    assert str(error) == f"Avro value is {cut} bytes, shorter than its 10-byte header"


@pytest.mark.parametrize("step", FULL.values(), ids=list(FULL))
def test_avro_cut_anywhere_in_the_body_is_truncated(step: StepEvent) -> None:
    raw = CODEC.encode(step)
    cuts = sorted({10, 11, 15, len(raw) // 3, len(raw) // 2, len(raw) - 2, len(raw) - 1})
    for cut in cuts:
        error = _raise(raw[:cut])
        assert type(error) is TruncatedValue, (cut, error)
        assert str(error).startswith(f"Avro value ends early ({cut} bytes)")


def test_bytes_after_an_avro_record_are_invalid() -> None:
    error = _raise(CODEC.encode(FULL["run.finished"]) + b"\x00\x02\x04")
    assert type(error) is InvalidStep
    assert error.reason == "invalid"
    assert str(error) == "3 bytes left over after the Avro record"


def test_full_length_avro_with_a_corrupt_union_index_is_invalid_not_truncated() -> None:
    raw = CODEC.encode(MINIMAL["run.finished"])
    # The value ends: data union index, then final_state ('abandoned': length byte 0x12 and 9 bytes).
    index_at = len(raw) - len(b"abandoned") - 2
    assert raw[index_at] == 2 * 12  # zig-zag of branch 12, RunFinishedData
    corrupt = raw[:index_at] + bytes([2 * 40]) + raw[index_at + 1 :]  # branch 40: there are only 14
    error = _raise(corrupt)
    # Today: TruncatedValue "Avro value ends early (N bytes): IndexError(...)" for a value of full length.
    assert error.reason == "invalid"
    assert "ends early" not in str(error)


def _json(step: StepEvent, change: Any) -> bytes:
    value = json.loads(encode_json(step))
    change(value)
    return json.dumps(value).encode()


def _avro_record(type_: str, data_record: str, data: dict[str, Any]) -> bytes:
    record = {
        "event_id": "e-1",
        "run_id": "r-1",
        "tenant": "default",
        "type": type_,
        "occurred_at": f.T0,
        "actor": {"kind": "agent", "id": "bot", "role": None},
        "step_id": "s-1",
        "data": (f"dev.agentreceipts.v1.{data_record}", data),
    }
    out = io.BytesIO()
    out.write(AVRO_MAGIC + CODEC.fingerprint)
    fastavro.schemaless_writer(out, CODEC.reader_schema, record)
    return out.getvalue()


PROPOSED = FULL["action.proposed"]


def _set(*path: str, value: Any) -> Any:
    def change(v: Any) -> None:
        for key in path[:-1]:
            v = v[key]
        v[path[-1]] = value

    return change


EXECUTED_BAD_STATE = {"executed_hash": "h", "state": "exploded"}
INVALID = [
    pytest.param(
        _json(PROPOSED, _set("data", "action", "target", value="ana@example.com")),
        "data.action.target: Input should be an object",
        id="wrong-shape",
    ),
    pytest.param(
        _json(PROPOSED, lambda v: v["data"]["action"].pop("verb")),
        "data.action.verb: Field required",
        id="missing-nested-field",
    ),
    pytest.param(_json(PROPOSED, lambda v: v.pop("run_id")), "run_id: Field required", id="missing-envelope"),
    pytest.param(
        _json(PROPOSED, _set("occurred_at", value="yesterday")),
        "occurred_at: Input should be a valid datetime",
        id="date-not-a-date",
    ),
    pytest.param(
        _json(PROPOSED, _set("data", "signal", "confidence", value=1.5)),
        "data.signal.confidence: Input should be less than or equal to 1",
        id="confidence-over-1",
    ),
    pytest.param(
        _json(PROPOSED, _set("occurred_at", value="2025-03-03T09:00:00")),
        "occurred_at: Input should have timezone info",
        id="naive-occurred-at",
    ),
    pytest.param(
        _json(FULL["source.used"], _set("data", "source", "retrieved_at", value="2025-03-01T08:00")),
        "data.source.retrieved_at: Input should have timezone info",
        id="naive-retrieved-at",
    ),
    pytest.param(
        _json(PROPOSED, _set("actor", "kind", value="robot")),
        "actor.kind: Input should be 'agent', 'human' or 'system'",
        id="bad-literal",
    ),
    pytest.param(
        _json(PROPOSED, _set("event_id", value="")),
        "event_id: String should have at least 1 character",
        id="empty-event-id",
    ),
    pytest.param(
        _avro_record("action.executed", "ActionExecutedData", EXECUTED_BAD_STATE),
        "data.state: Input should be 'sent', 'routed', 'written', 'published', 'synced' or 'noted'",
        id="avro-bad-state",
    ),
    pytest.param(
        _avro_record("run.finished", "ErrorData", {"error": "x"}),
        "data.final_state: Field required",
        id="avro-data-of-another-type",
    ),
]


@pytest.mark.parametrize(("raw", "problem"), INVALID)
def test_invalid_field_is_named_by_its_path(raw: bytes, problem: str) -> None:
    error = _raise(raw)
    assert type(error) is InvalidStep
    assert error.reason == "invalid"
    assert str(error).startswith("1 invalid field(s): ")
    assert problem in str(error)


def test_several_invalid_fields_show_three_and_count_the_rest() -> None:
    raw = _json(PROPOSED, lambda v: [v.pop(k) for k in ("event_id", "run_id", "occurred_at", "actor")])
    error = _raise(raw)
    assert type(error) is InvalidStep
    assert str(error) == (
        "4 invalid field(s): event_id: Field required; run_id: Field required; "
        "occurred_at: Field required (+1 more)"
    )


def test_avro_params_that_are_not_json_text_are_invalid() -> None:
    action = {"verb": "v", "target": {"system": "a", "kind": "b", "id": "c"}, "tool": "t", "params": "{nope"}
    error = _raise(_avro_record("action.proposed", "ActionProposedData", {"action": action}))
    assert type(error) is InvalidStep
    assert str(error).startswith("data.action.params is not JSON text: ")


@pytest.mark.parametrize(
    "raw",
    [
        _json(PROPOSED, lambda v: v.__setitem__("type", "action.teleported")),
        _avro_record("action.teleported", "ErrorData", {"error": "x"}),
    ],
    ids=["json", "avro"],
)
def test_unknown_step_type_lists_the_expected_types(raw: bytes) -> None:
    error = _raise(raw)
    assert type(error) is UnknownStepType
    assert isinstance(error, InvalidStep)
    assert error.reason == "unknown_type"
    assert "unknown step type 'action.teleported'" in str(error)
    for wire in STEP_TYPES:
        # A publisher is told the types it may send, not the ones only the service writes.
        assert (f"'{wire}'" in str(error)) == (wire not in SERVICE_TYPES), wire


@pytest.mark.parametrize(
    "raw", [_json(PROPOSED, lambda v: v.pop("type")), b"{}"], ids=["no-type", "empty-object"]
)
def test_missing_type_is_invalid(raw: bytes) -> None:
    error = _raise(raw)
    assert type(error) is InvalidStep
    assert error.reason == "invalid"
    assert str(error) == "missing field 'type' (the step type, e.g. 'action.proposed')"


@pytest.mark.parametrize("raw", [b'{"event_id": ', b"{not json}", b'  {"type": "run.finished",}'])
def test_invalid_json_is_invalid(raw: bytes) -> None:
    error = _raise(raw)
    assert type(error) is InvalidStep
    assert error.reason == "invalid"
    assert str(error).startswith("not valid JSON: ")


def test_every_decode_error_is_a_value_error() -> None:
    for cls in (NotAStep, UnknownSchema, TruncatedValue, InvalidStep, UnknownStepType):
        assert issubclass(cls, DecodeError)
        assert issubclass(cls, ValueError)


def test_mutated_avro_values_only_ever_raise_decode_errors() -> None:
    """The ingest loop must never stop on bad input: any damage is a DecodeError."""
    rng = random.Random(20261125)
    values = [CODEC.encode_avro(step) for step in f.clean_run()]
    for _ in range(20_000):
        value = bytearray(rng.choice(values))
        for _ in range(rng.randint(1, 4)):
            value[rng.randrange(10, len(value))] = rng.randrange(256)
        if rng.random() < 0.2:
            value = value[: rng.randrange(10, len(value))]
        with contextlib.suppress(DecodeError):
            CODEC.decode(bytes(value))


# --- older writers after the v3 and v4 schemas -------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CURRENT_SCHEMA_FILE.parent / name).read_text())
    return loaded


V1_SCHEMA = fastavro.parse_schema(_schema("step-v1.avsc"))
V2_SCHEMA = fastavro.parse_schema(_schema("step-v2.avsc"))
V3_SCHEMA = fastavro.parse_schema(_schema("step-v3.avsc"))
# The types whose data v4 changed (run.started: origin; source.used: contains) or brought.
V4_CHANGED = {"run.started", "source.used", "consent.given"}
# The types whose data v3 changed (new optional fields) or brought (rollback.stands).
V3_CHANGED = {
    "action.executed",
    "rollback.requested",
    "action.reverted",
    "rollback.failed",
    "record.corrected",
    "rollback.stands",
}


def _older(step: StepEvent) -> StepEvent:
    """`step` as an older writer could say it: the v3 and v4 fields dropped."""
    v3_fields = {
        "origin",
        "contains",
        "rollback_id",
        "reverse_id",
        "verified",
        "retryable",
        "steps",
        "requested_by",
        "authorization_ref",
    }
    data = {k: v for k, v in step.data.model_dump().items() if k not in v3_fields}  # type: ignore[attr-defined]
    return step_adapter.validate_python({**step.model_dump(), "data": data})


def test_current_schema_is_v4_and_v1_to_v3_are_still_known_writers() -> None:
    assert CURRENT_SCHEMA_FILE.name == "step-v4.avsc"
    for schema in (V1_SCHEMA, V2_SCHEMA, V3_SCHEMA):
        fp = fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(schema), "CRC-64-AVRO")
        raw = CODEC.encode_avro(MINIMAL["run.finished"], schema=schema)
        assert raw[2:10].hex() == fp and raw[2:10] != CODEC.fingerprint
        assert CODEC.decode(raw) == MINIMAL["run.finished"]


@pytest.mark.parametrize(
    "step", [s for t, s in FULL.items() if t not in V4_CHANGED | V3_CHANGED | {"policy.decided"}], ids=str
)
def test_a_v1_value_of_every_unchanged_type_decodes_as_it_was_written(step: StepEvent) -> None:
    assert CODEC.decode(CODEC.encode_avro(step, schema=V1_SCHEMA)) == step


@pytest.mark.parametrize("step", [s for t, s in FULL.items() if t not in V4_CHANGED | V3_CHANGED], ids=str)
def test_a_v2_value_of_every_unchanged_type_decodes_as_it_was_written(step: StepEvent) -> None:
    assert CODEC.decode(CODEC.encode_avro(step, schema=V2_SCHEMA)) == step


@pytest.mark.parametrize("step", [s for t, s in FULL.items() if t not in V4_CHANGED], ids=str)
def test_a_v3_value_of_every_unchanged_type_decodes_as_it_was_written(step: StepEvent) -> None:
    assert CODEC.decode(CODEC.encode_avro(step, schema=V3_SCHEMA)) == step


@pytest.mark.parametrize("schema", [V1_SCHEMA, V2_SCHEMA, V3_SCHEMA], ids=["v1", "v2", "v3"])
@pytest.mark.parametrize("type_", ["run.started", "source.used"])
def test_an_older_value_of_a_v4_type_decodes_without_origin_or_parts(schema: Any, type_: str) -> None:
    older = _older(FULL[type_])
    decoded = CODEC.decode(CODEC.encode_avro(older, schema=schema))
    assert decoded == older
    assert getattr(decoded.data, "origin", None) is None  # type: ignore[attr-defined]
    assert getattr(decoded.data, "contains", ()) == ()  # type: ignore[attr-defined]


def test_v4_carries_the_consent_the_origin_and_the_parts_of_a_source_in_both_encodings() -> None:
    for type_ in V4_CHANGED:
        for encoding in ("avro", "json"):
            assert CODEC.decode(CODEC.encode(FULL[type_], encoding)) == FULL[type_], (type_, encoding)
    consent = CODEC.decode(CODEC.encode_avro(FULL["consent.given"]))
    assert (consent.step_id, consent.actor.role, consent.data.text) == ("s-1", "customer", "yes, go ahead")  # type: ignore[attr-defined]
    assert consent.occurred_at == WHEN
    origin = CODEC.decode(CODEC.encode_avro(FULL["run.started"])).data.origin  # type: ignore[attr-defined]
    assert (origin.format, origin.approvals_recorded) == ("openai-chat", False)
    parts = CODEC.decode(CODEC.encode_avro(FULL["source.used"])).data.contains  # type: ignore[attr-defined]
    assert [p.key for p in parts] == ["cms/section/plans"]


def test_an_older_writer_cannot_say_consent_given() -> None:
    with pytest.raises(Exception, match="ConsentGivenData"):
        CODEC.encode_avro(FULL["consent.given"], schema=V3_SCHEMA)


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ({"step_id": None}, "consent.given needs step_id"),
        ({"actor": {"kind": "agent", "id": "bot"}}, "actor.kind must be 'human'"),
    ],
)
def test_a_consent_without_its_step_or_from_no_person_is_refused_with_the_reason(
    envelope: dict[str, Any], expected: str
) -> None:
    value = {**json.loads(encode_json(FULL["consent.given"])), **envelope}
    error = _raise(json.dumps(value).encode())
    assert isinstance(error, InvalidStep) and expected in str(error)


@pytest.mark.parametrize("schema", [V1_SCHEMA, V2_SCHEMA], ids=["v1", "v2"])
@pytest.mark.parametrize("type_", sorted(V3_CHANGED - {"rollback.stands"}))
def test_an_older_value_of_a_v3_type_decodes_with_the_new_fields_at_their_defaults(
    schema: Any, type_: str
) -> None:
    older = _older(FULL[type_])
    decoded = CODEC.decode(CODEC.encode_avro(older, schema=schema))
    assert decoded == older
    data = decoded.data  # type: ignore[attr-defined]
    assert getattr(data, "rollback_id", None) is None and getattr(data, "reverse_id", None) is None
    if type_ == "rollback.requested":
        assert (data.steps, data.requested_by, data.scope) == ((), None, "step")


def test_a_rollback_request_without_a_scope_is_run_wide() -> None:
    # JSON is validated by the domain model: v3 made scope optional (a run-wide request).
    raw = json.dumps(
        {
            "event_id": "e",
            "run_id": "r",
            "type": "rollback.requested",
            "occurred_at": "2025-01-01T00:00:00Z",
            "actor": {"kind": "human", "id": "ana"},
            "data": {"reason": "wrong page"},
        }
    ).encode()
    assert CODEC.decode(raw).data.scope == "run"  # type: ignore[attr-defined]


def test_v3_carries_the_rollback_fields() -> None:
    for type_ in V3_CHANGED:
        assert CODEC.decode(CODEC.encode_avro(FULL[type_])) == FULL[type_]
    requested = CODEC.decode(CODEC.encode_avro(FULL["rollback.requested"])).data  # type: ignore[attr-defined]
    assert (requested.rollback_id, requested.steps, requested.requested_by.id) == (
        "rb-1",
        ("s-1", "s-2"),
        "maria",
    )
    assert CODEC.decode(CODEC.encode_avro(FULL["action.reverted"])).data.verified is True  # type: ignore[attr-defined]
    assert CODEC.decode(CODEC.encode_avro(FULL["rollback.failed"])).data.retryable is False  # type: ignore[attr-defined]


def test_an_older_writer_cannot_say_rollback_stands() -> None:
    with pytest.raises(Exception, match="RollbackStandsData"):
        CODEC.encode_avro(FULL["rollback.stands"], schema=V2_SCHEMA)


def test_a_v1_policy_decision_decodes_as_the_platforms_with_the_new_fields_at_their_defaults() -> None:
    decided = FULL["policy.decided"]
    raw = CODEC.encode_avro(decided, schema=V1_SCHEMA)
    decoded = CODEC.decode(raw)
    assert (decoded.data.decision_id, decoded.data.matched_rules, decoded.data.source) == (None, (), None)  # type: ignore[attr-defined]
    assert decoded.data.rule_id == decided.data.rule_id  # type: ignore[attr-defined]
    assert decoded.data.missing_fields == ("account.owner",)  # type: ignore[attr-defined]


def test_v2_carries_the_service_decision_fields() -> None:
    decided = FULL["policy.decided"]
    decoded = CODEC.decode(CODEC.encode_avro(decided))
    assert decoded == decided
    assert (decoded.data.decision_id, decoded.data.matched_rules, decoded.data.source) == (  # type: ignore[attr-defined]
        "dec-1",
        ("R-lead-email", "R-pricing"),
        "service",
    )


@pytest.mark.parametrize(
    "old_name, new_name",
    [("step-v1.avsc", "step-v2.avsc"), ("step-v2.avsc", "step-v3.avsc"), ("step-v3.avsc", "step-v4.avsc")],
)
def test_each_version_only_adds_optional_fields_with_defaults_or_new_records(
    old_name: str, new_name: str
) -> None:
    old_schema, new_schema = _schema(old_name), _schema(new_name)
    old, new = ({b["name"]: b for b in schema["fields"][-1]["type"]} for schema in (old_schema, new_schema))
    assert set(old) <= set(new)
    # Union branches keep their place: a new record comes after every older one.
    assert [b["name"] for b in new_schema["fields"][-1]["type"]][: len(old)] == list(old)
    for name, record in new.items():
        before = {x["name"]: x for x in old[name]["fields"]} if name in old else {}
        for field in record["fields"]:
            assert field["name"] in before or "default" in field or name not in old, (name, field["name"])
        assert [x["name"] for x in record["fields"]][: len(before)] == list(before)
    assert old_schema["fields"][:-1] == new_schema["fields"][:-1]
