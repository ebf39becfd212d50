"""Nothing a publisher sends can stop the ingest loop: decode returns a step that can be
written back out, or raises a DecodeError, whatever the bytes.

A seeded property test builds thousands of hostile values in both encodings (deep
nesting, huge and non-finite numbers, NUL, lone surrogates, invalid UTF-8, timestamps
outside what Python holds, over-long names, random byte damage); the named tests
below it pin down the values that stopped `receipts up` before.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from domain.step_values import EARLIEST, LATEST
from domain.steps import StepEvent
from schemas.codec import AVRO_DATA_RECORD, Codec, DecodeError, InvalidStep
from tests.unit import factories as f
from tests.unit.hostile import CODEC, as_json, at, avro, micros, nested, record, with_params_text, write_avro

SEED = 20261130
CASES = 3_000

STEPS = [
    *f.clean_run(),
    f.proposed(params={"cc": ["ops@example.com"], "n": 2, "deep": {"ok": [1.5, None, True]}}),
    f.source(retrieved_at=f.T0),
    f.reverted(),
    f.corrected(),
    f.executed(url="https://mail.example/1"),
    # v3: a named record referenced again (requested_by: Actor), booleans, the new type.
    f.rollback_requested(None, extra={"rollback_id": "rb-1", "steps": ["s-1"], "requested_by": f.REVIEWER}),
    f.reverted(extra={"verified": True, "rollback_id": "rb-1", "reverse_id": "rev-1"}),
    f.rollback_failed(extra={"retryable": False, "rollback_id": "rb-1", "reverse_id": "rev-1"}),
    f.rollback_stands(extra={"rollback_id": "rb-1", "method": "none"}),
    # v4: a consent, a run's origin (a boolean in a nested record), a source's parts.
    f.consent(),
    f.started(origin={"format": "openai-chat", "approvals_recorded": False}),
    f.source(contains=[{"system": "cms", "kind": "section", "id": "plans"}]),
]
STRINGS = ["", "\x00", "ok\x00", "x" * 513, "é" * 512, "\u2028\ufeff", "😀" * 300, "y" * 100_000, "run-1"]
JSON_TIMES: list[Any] = [
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:30:00+01:00",
    "1900-01-01T00:00:00Z",
    "8999-12-31T23:59:59.999999Z",
    "2025-13-01T00:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T00:00:00+24:00",
    "2025-01-01T00:00:00.1234567891Z",
    "2025-01-01T00:00:00",
    0,
    10**20,
    -(10**20),
    1e308,
]
MICROS = [-(2**63), 2**63 - 1, 2**62, -(2**62), 0, micros(EARLIEST) - 1, micros(EARLIEST), micros(LATEST)]
MICROS += [micros(LATEST) - 1]
# Unusual values a step may hold: kept, and they must survive being written back.
EDGES = ["é" * 512, "8999-12-31T23:59:59.999999Z", "1899-12-31T23:30:00-01:00", "\u2028", "y" * 100_000, "0"]
# JSON text spliced where a value goes: what json.dumps would refuse to write.
TEXTS = [nested(n, kind=k) for n in (62, 63, 64, 65, 199, 200, 201, 5_000) for k in ("object", "array")]
TEXTS += ["NaN", "-Infinity", "1e400", "-0", "9" * 4_300, "9" * 4_301, '"\\ud800"', '"\\udc00\\ud800"']
TEXTS += ['"\\u0000"', '{"\\u0000": 1}', "[", "", "null", '{"a": 1, "a": 2}', "1" + "0" * 400 + ".5e-500"]
# Same-length stand-ins for a marker inside an Avro string: bad UTF-8 (or a NUL) in place.
BAD_BYTES = [
    b"\xed\xa0\x80x",
    b"\xff\xfe\xfd\xfc",
    b"a\x00bc",
    b"\xc0\x80ab",
    b"\xf4\x90\x80\x80",
    b"ab\xe2\x82",
]
MARKER = "MRKR"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*path, index))


def _hostile_value(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice(JSON_TIMES)
    if kind == 2:
        return rng.choice([2**64, -(2**63) - 1, 10**300, float("nan"), float("inf"), -0.0, 1.5, True, None])
    if kind == 3:
        return rng.choice([[], {}, [None], {"": ""}, {"a": {"b": []}}])
    if kind == 4:
        return "\ud800" + rng.choice(STRINGS)  # a lone surrogate
    if kind == 5:
        return rng.choice(EDGES)
    return MARKER  # spliced afterwards


def json_case(rng: random.Random) -> bytes:
    value: dict[str, Any] = json.loads(rng.choice(STEPS).model_dump_json())
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice(list(_paths(value)))
        at(*path, value=_hostile_value(rng))(value)
    # ensure_ascii=False with surrogatepass writes a lone surrogate as (invalid) UTF-8.
    raw = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    while MARKER.encode() in raw:
        raw = raw.replace(json.dumps(MARKER).encode(), rng.choice(TEXTS).encode(), 1)
        raw = raw.replace(MARKER.encode(), rng.choice(["\\u0000", "\\ud800", "\x00", "\xff"]).encode(), 1)
    return _damage(rng, raw) if rng.random() < 0.1 else raw


def avro_case(rng: random.Random) -> bytes | None:
    step = rng.choice(STEPS)
    value = record(step)
    paths = [p for p in _paths(value) if not isinstance(_get(value, p), dict | list)]
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice(paths)
        old = _get(value, path)
        if path[-1] in ("occurred_at", "retrieved_at"):
            new: Any = rng.choice(MICROS)
        elif path[-1] == "params":
            new = rng.choice(TEXTS)
        elif isinstance(old, float) or path[-1] == "confidence":
            new = rng.choice([float("nan"), float("inf"), -1e308, 1.0000001, -0.0])
        else:
            new = rng.choice([*STRINGS, MARKER])
        at(*path, value=new)(value)
    try:
        raw = write_avro(value, AVRO_DATA_RECORD[step.type])  # type: ignore[attr-defined]
    except (ValueError, TypeError, OverflowError):
        return None  # fastavro will not even write it: no publisher can send it this way
    while MARKER.encode() in raw:
        raw = raw.replace(MARKER.encode(), rng.choice(BAD_BYTES), 1)
    return _damage(rng, raw) if rng.random() < 0.1 else raw


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _damage(rng: random.Random, raw: bytes) -> bytes:
    damaged = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(damaged))
        move = rng.randrange(3)
        if move == 0:
            damaged[where] = rng.choice([0x00, 0xFF, 0x7B, 0x22, 0x5C, 0xED, rng.randrange(256)])
        elif move == 1:
            damaged[where:where] = rng.choice([b"\x00", b"\\u0000", b"\xff", b"[" * 300, b'"'])
        else:
            del damaged[where : where + rng.randint(1, 8)]
    return bytes(damaged)


def test_any_value_decodes_to_a_step_that_can_be_written_back_or_raises_decode_error() -> None:
    rng = random.Random(SEED)
    outcomes = {"kept": 0, "refused": 0}
    for case in range(CASES):
        raw = json_case(rng) if case % 2 else avro_case(rng)
        if raw is None:
            continue
        try:
            step = CODEC.decode(raw)
        except DecodeError:
            outcomes["refused"] += 1
            continue
        except BaseException as error:
            raise AssertionError(
                f"case {case}: {type(error).__name__} escaped decode for {raw[:200]!r}"
            ) from error
        outcomes["kept"] += 1
        assert isinstance(step, StepEvent)
        # What was kept can be rendered, and written back out in both encodings unchanged.
        text = step.model_dump_json()
        assert CODEC.decode(text.encode()) == step, case
        assert CODEC.decode(CODEC.encode(step)) == step, case
    # Not vacuous: both ways out are taken often.
    assert outcomes["kept"] > CASES // 20, outcomes
    assert outcomes["refused"] > CASES // 2, outcomes


# --- the values that stopped the loop, one by one ----------------------------------------------------------

PROPOSED = f.proposed()
PARAMS = ("data", "action", "params")


def _avro_params(text: str) -> bytes:
    return avro(PROPOSED, at(*PARAMS, value=text))


@pytest.mark.parametrize(
    "raw",
    [
        _avro_params(nested(100_000)),
        _avro_params(nested(100_000, kind="array")),
        _avro_params(nested(300)),
        with_params_text(PROPOSED, nested(100_000)),
        as_json(PROPOSED).replace(b'"tenant"', b'"extra": ' + nested(100_000).encode() + b', "tenant"'),
    ],
    ids=["avro-100k-objects", "avro-100k-arrays", "avro-300", "json-params-100k", "json-unknown-field-100k"],
)
def test_deeply_nested_json_is_invalid_not_a_recursion_error(raw: bytes) -> None:
    # Today: RecursionError out of decode (Avro params), or a step whose dump fails (300).
    with pytest.raises(InvalidStep):
        CODEC.decode(raw)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ("9" * 5_000, "number out of range"),
        ('{"a": "\\ud800"}', "data.action.params is not JSON text"),
        ('{"a": NaN}', "data.action.params is not JSON text"),
        ('{"a": 1e400}', "a number is not finite"),
    ],
    ids=["5000-digits", "lone-surrogate", "nan", "overflowing-float"],
)
def test_avro_params_json_breaks_nothing_later(params: str, problem: str) -> None:
    # Today: ValueError escapes (digits), or the step is kept and cannot be dumped.
    with pytest.raises(InvalidStep, match=problem):
        CODEC.decode(_avro_params(params if params.startswith("{") else f'{{"a": {params}}}'))


@pytest.mark.parametrize("bad", BAD_BYTES, ids=[b.hex() for b in BAD_BYTES])
def test_invalid_utf8_or_nul_inside_an_avro_string_is_invalid(bad: bytes) -> None:
    raw = avro(f.started(), at("data", "workflow", value=MARKER)).replace(MARKER.encode(), bad)
    with pytest.raises(InvalidStep):
        CODEC.decode(raw)


def test_a_step_made_from_the_edges_of_every_limit_round_trips() -> None:
    edge = f.source(
        retrieved_at=EARLIEST,
        at=LATEST - timedelta(microseconds=1),
        run_id="r" * 512,
        event_id="é" * 512,
        step_id="😀" * 512,
    )
    for encoding in ("json", "avro"):
        assert CODEC.decode(CODEC.encode(edge, encoding)) == edge


class _Failing(Codec):
    """A codec whose parsers fail in a way nobody foresaw."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def _decode(self, raw: bytes) -> StepEvent:
        raise self.error


@pytest.mark.parametrize(
    "error", [RecursionError("deep"), KeyError("x"), UnicodeEncodeError("utf-8", "", 0, 1, "x")]
)
def test_an_unforeseen_failure_while_decoding_is_an_invalid_step(error: Exception) -> None:
    with pytest.raises(InvalidStep, match=f"value could not be decoded: {type(error).__name__}"):
        _Failing(error).decode(b"{}")


def test_running_out_of_memory_is_not_blamed_on_the_value() -> None:
    with pytest.raises(MemoryError):
        _Failing(MemoryError()).decode(b"{}")
