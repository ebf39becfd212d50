"""What a step may hold: timestamps in a window, bounded names, no NUL, bounded params.

Each limit is checked in both encodings at its edge (the last value accepted, the
first refused), and a refusal is an InvalidStep naming the field and the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from domain.step_values import EARLIEST, LATEST, MAX_NAME_LENGTH, MAX_PARAMS_DEPTH
from domain.steps import StepEvent
from schemas.codec import MAX_MESSAGE, DecodeError, InvalidStep, UnknownStepType
from tests.unit import factories as f
from tests.unit.hostile import CODEC, as_json, at, avro, micros, nested, with_params_text

NUL = "String should not contain NUL (U+0000), which PostgreSQL text cannot hold"
US = timedelta(microseconds=1)
ENCODINGS = {"json": as_json, "avro": avro}
Encode = Callable[..., bytes]


def refused(raw: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(raw)
    assert type(caught.value) is InvalidStep, caught.value
    return str(caught.value)


@pytest.fixture(params=list(ENCODINGS))
def encode(request: pytest.FixtureRequest) -> Encode:
    return ENCODINGS[request.param]


# --- timestamps ---------------------------------------------------------------------------------------

SOURCE = f.source(retrieved_at=f.T0)
TIMESTAMPS = [("occurred_at",), ("data", "source", "retrieved_at")]


@pytest.mark.parametrize("path", TIMESTAMPS, ids=".".join)
@pytest.mark.parametrize("moment", [EARLIEST, LATEST - US], ids=["earliest", "last-before-latest"])
def test_timestamps_at_the_edges_of_the_window_are_kept(encode: Encode, path: Any, moment: datetime) -> None:
    value = moment.isoformat() if encode is as_json else micros(moment)
    decoded: Any = CODEC.decode(encode(SOURCE, at(*path, value=value)))
    assert (decoded.occurred_at if path == ("occurred_at",) else decoded.data.source.retrieved_at) == moment


@pytest.mark.parametrize("path", TIMESTAMPS, ids=".".join)
@pytest.mark.parametrize(
    ("moment", "problem"),
    [
        (EARLIEST - US, "Input should be greater than or equal to 1900-01-01T00:00:00Z"),
        (LATEST, "Input should be less than 9000-01-01T00:00:00Z"),
    ],
    ids=["before-earliest", "latest"],
)
def test_timestamps_outside_the_window_name_the_field_and_the_limit(
    encode: Encode, path: Any, moment: datetime, problem: str
) -> None:
    value = moment.isoformat() if encode is as_json else micros(moment)
    assert (
        refused(encode(SOURCE, at(*path, value=value))) == f"1 invalid field(s): {'.'.join(path)}: {problem}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:30:00+01:00",
        "1900-01-01T00:30:00+01:00",
        "8999-12-31T23:30-01:00",
    ],
)
def test_a_json_timestamp_is_judged_by_its_instant_in_utc(text: str) -> None:
    # Each is a valid local time whose instant in UTC is outside the window (the
    # first two are not even representable in UTC by Python).
    assert "occurred_at: Input should be" in refused(as_json(SOURCE, at("occurred_at", value=text)))


def test_an_offset_that_brings_the_instant_inside_the_window_is_kept() -> None:
    decoded = CODEC.decode(as_json(SOURCE, at("occurred_at", value="1899-12-31T23:30:00-01:00")))
    assert decoded.occurred_at == EARLIEST + timedelta(minutes=30)


@pytest.mark.parametrize("path", TIMESTAMPS, ids=".".join)
@pytest.mark.parametrize("value", [2**62, -(2**62), micros(datetime(9999, 12, 31, tzinfo=UTC)) + 10**12])
def test_an_avro_timestamp_python_cannot_hold_names_its_field(path: Any, value: int) -> None:
    message = refused(avro(SOURCE, at(*path, value=value)))
    assert message == (
        f"1 invalid field(s): {'.'.join(path)}: Input should be from 1900-01-01T00:00:00Z and before "
        f"9000-01-01T00:00:00Z (timestamp-micros {value})"
    )


def test_the_window_holds_for_steps_made_in_python_too() -> None:
    # The publisher builds steps from the same types: it refuses before sending.
    with pytest.raises(ValidationError, match="less than 9000-01-01"):
        f.finished(at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))


# --- names: bounded length, no NUL ----------------------------------------------------------------------

NAMES: list[tuple[StepEvent, tuple[str | int, ...]]] = [
    *[(f.finished(step_id="s-1"), path) for path in [("event_id",), ("run_id",), ("tenant",), ("step_id",)]],
    *[(f.finished(), ("actor", key)) for key in ("id", "role")],
    (f.started(), ("data", "workflow")),
    *[(f.started(), ("data", "input", key)) for key in ("system", "kind", "id", "hash")],
    *[(f.started(), ("data", "agent", key)) for key in ("name", "version")],
    *[(f.started(), ("data", "model", key)) for key in ("provider", "name", "version")],
    *[(f.source(), ("data", "source", key)) for key in ("system", "kind", "id", "version", "hash")],
    *[(f.proposed(), ("data", "action", key)) for key in ("verb", "tool", "output_hash")],
    *[(f.proposed(), ("data", "action", "target", key)) for key in ("system", "kind", "id")],
    (f.proposed(reason_code="pricing"), ("data", "signal", "reason_code")),
    (f.proposed(flags=["public"]), ("data", "signal", "flags", 0)),
    (f.proposed(), ("data", "source_ids", 0)),
    *[(f.proposed(), ("data", "rollback", key)) for key in ("ref", "prior_version")],
    *[(f.policy(), ("data", key)) for key in ("rule_id", "policy_version", "required_role")],
    (f.policy(missing_fields=["owner"]), ("data", "missing_fields", 0)),
    *[(f.edited(), ("data", key)) for key in ("output_hash", "base_hash")],
    (f.reviewed(), ("data", "reviewed_hash")),
    (f.held(), ("data", "missing_fields", 0)),
    *[(f.executed(), ("data", key)) for key in ("executed_hash", "external_ref")],
    (f.reverted(), ("data", "reverse_ref")),
    (f.corrected(), ("data", "corrects")),
]
NAME_IDS = [f"{step.type}:{'.'.join(map(str, path))}" for step, path in NAMES]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("step", "path"), NAMES, ids=NAME_IDS)
def test_a_name_of_the_longest_length_is_kept(encode: Encode, step: StepEvent, path: Any) -> None:
    longest = "é" * MAX_NAME_LENGTH
    decoded = CODEC.decode(encode(step, at(*path, value=longest)))
    assert longest in decoded.model_dump_json()


@pytest.mark.parametrize(("step", "path"), NAMES, ids=NAME_IDS)
def test_a_longer_name_is_refused_naming_the_field_and_the_limit(
    encode: Encode, step: StepEvent, path: Any
) -> None:
    message = refused(encode(step, at(*path, value="x" * (MAX_NAME_LENGTH + 1))))
    assert (
        message
        == f"1 invalid field(s): {'.'.join(map(str, path))}: String should have at most 512 characters"
    )


@pytest.mark.parametrize(("step", "path"), NAMES, ids=NAME_IDS)
def test_a_name_with_nul_is_refused(encode: Encode, step: StepEvent, path: Any) -> None:
    assert refused(encode(step, at(*path, value="lead\x00followup"))) == (
        f"1 invalid field(s): {'.'.join(map(str, path))}: {NUL}"
    )


def test_a_100_kb_run_id_is_refused_by_length() -> None:
    for raw in (
        as_json(f.finished(), at("run_id", value="r" * 100_000)),
        avro(f.finished(), at("run_id", value="r" * 100_000)),
    ):
        assert refused(raw) == "1 invalid field(s): run_id: String should have at most 512 characters"


# --- free text: any length, no NUL ------------------------------------------------------------------------

TEXTS: list[tuple[StepEvent, tuple[str | int, ...]]] = [
    *[(f.proposed(), ("data", "action", key)) for key in ("output",)],
    (f.proposed(target={**f.TARGET, "uri": "mailto:ana@example.com"}), ("data", "action", "target", "uri")),
    (f.proposed(), ("data", "rollback", "runbook")),
    (f.started(), ("data", "input", "uri")),
    *[(f.source(), ("data", "source", key)) for key in ("uri", "excerpt")],
    (f.policy(), ("data", "reasons", 0)),
    (f.edited(), ("data", "output")),
    (f.reviewed(comment="fine"), ("data", "comment")),
    (f.held(), ("data", "reason")),
    (f.executed(url="https://mail.example/1"), ("data", "url")),
    (f.failed(), ("data", "error")),
    (f.rollback_failed(), ("data", "error")),
    (f.rollback_requested(), ("data", "reason")),
    (f.reverted(), ("data", "note")),
    *[(f.corrected(), ("data", key)) for key in ("correction", "reason")],
]
TEXT_IDS = [f"{step.type}:{'.'.join(map(str, path))}" for step, path in TEXTS]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("step", "path"), TEXTS, ids=TEXT_IDS)
def test_free_text_may_be_long(encode: Encode, step: StepEvent, path: Any) -> None:
    long = "Dear Ana, " * 10_000
    assert long in CODEC.decode(encode(step, at(*path, value=long))).model_dump_json()


@pytest.mark.parametrize(("step", "path"), TEXTS, ids=TEXT_IDS)
def test_free_text_with_nul_is_refused(encode: Encode, step: StepEvent, path: Any) -> None:
    assert refused(encode(step, at(*path, value="Dear Ana,\x00"))) == (
        f"1 invalid field(s): {'.'.join(map(str, path))}: {NUL}"
    )


# --- params: bounded depth, no NUL, finite numbers ----------------------------------------------------

PROPOSED = f.proposed()
PARAMS = ("data", "action", "params")


def _params(encoding: str, text: str) -> bytes:
    if encoding == "json":
        return with_params_text(PROPOSED, text)
    return avro(PROPOSED, at(*PARAMS, value=text))


@pytest.mark.parametrize("encoding", ["json", "avro"])
@pytest.mark.parametrize("kind", ["object", "array"])
def test_params_may_nest_64_levels_and_not_65(encoding: str, kind: str) -> None:
    deepest = nested(MAX_PARAMS_DEPTH - 1, kind=kind)  # inside params, itself level 1
    decoded = CODEC.decode(_params(encoding, f'{{"p": {deepest}}}'))
    assert decoded.model_dump_json()
    message = refused(_params(encoding, f'{{"p": {nested(MAX_PARAMS_DEPTH, kind=kind)}}}'))
    assert (
        message
        == "1 invalid field(s): data.action.params: nested deeper than 64 levels of objects and arrays"
    )


@pytest.mark.parametrize("encoding", ["json", "avro"])
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"to\\u0000": 1}', "a key should not contain NUL"),
        ('{"cc": [{"x": "a\\u0000"}]}', "a string should not contain NUL"),
        ('{"n": 1e400}', "a number is not finite"),
        ('{"n": [-1e999]}', "a number is not finite"),
    ],
)
def test_params_with_nul_or_infinite_numbers_are_refused(encoding: str, text: str, problem: str) -> None:
    assert refused(_params(encoding, text)).startswith(f"1 invalid field(s): data.action.params: {problem}")


@pytest.mark.parametrize("encoding", ["json", "avro"])
@pytest.mark.parametrize("text", ['{"n": NaN}', '{"n": Infinity}', '{"n": -Infinity}'])
def test_params_with_nan_or_infinity_are_refused(encoding: str, text: str) -> None:
    # Not JSON at all; the JSON parser of a JSON value accepts them, Avro params' parser does not.
    assert "data.action.params" in refused(_params(encoding, text))


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_params_numbers_up_to_4300_digits_are_kept(encoding: str) -> None:
    decoded = CODEC.decode(_params(encoding, '{"n": ' + "9" * 4300 + "}"))
    assert decoded.data.action.params["n"] == int("9" * 4300)  # type: ignore[attr-defined]
    assert CODEC.decode(CODEC.encode(decoded)) == decoded
    refused(_params(encoding, '{"n": ' + "9" * 4301 + "}"))


# --- messages -------------------------------------------------------------------------------------------


def test_an_unknown_type_of_100_kb_gives_a_bounded_message() -> None:
    with pytest.raises(UnknownStepType) as caught:
        CODEC.decode(as_json(f.finished(), at("type", value="x" * 100_000)))
    assert len(str(caught.value)) < 1_000
    assert "(100,000 characters)" in str(caught.value)


def test_every_decode_error_message_is_bounded() -> None:
    error = InvalidStep("y" * 100_000)
    assert len(str(error)) <= MAX_MESSAGE
    assert str(error).endswith("(100,000 characters)")
