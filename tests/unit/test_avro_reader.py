"""The compiled Avro reader reads a value exactly as fastavro does, or leaves it to fastavro.

Checked on the hostile-value corpus of test_hostile_decode (damaged bytes, bad UTF-8,
impossible timestamps, truncations): wherever the fast path returns a record, fastavro
returns the same one; the codec's answer, a step or a DecodeError with its message, is
the same with and without the fast path.
"""

from __future__ import annotations

import json
import random
from io import BytesIO
from typing import Any

import fastavro
import pytest

from schemas.avro_reader import Unreadable, compile_reader
from schemas.codec import AVRO_MAGIC, CURRENT_SCHEMA_FILE, Codec, DecodeError
from tests.unit.hostile import CODEC
from tests.unit.test_hostile_decode import CASES, SEED, STEPS, avro_case

HEADER = AVRO_MAGIC + CODEC.fingerprint
FAST = compile_reader(json.loads(CURRENT_SCHEMA_FILE.read_text()))


def _fastavro(raw: bytes) -> dict[str, Any]:
    body = BytesIO(raw)
    body.seek(len(HEADER))
    record: dict[str, Any] = fastavro.schemaless_reader(body, CODEC.reader_schema, None)
    assert body.tell() == len(raw), "fastavro left bytes over where the fast path read to the end"
    return record


def _outcome(codec: Codec, raw: bytes) -> tuple[str, Any]:
    try:
        return "step", codec.decode(raw)
    except DecodeError as error:
        return type(error).__name__, str(error)


def test_every_kind_of_step_reads_as_fastavro_reads_it() -> None:
    for step in STEPS:
        raw = CODEC.encode(step)
        assert repr(FAST(raw, len(HEADER))) == repr(_fastavro(raw)), step.type


def test_on_hostile_values_the_fast_path_agrees_with_fastavro_or_steps_aside() -> None:
    rng = random.Random(SEED)
    plain, without = Codec(), Codec(compiled=False)
    read = stepped_aside = 0
    for case in range(CASES):
        raw = avro_case(rng)
        if raw is None or not raw.startswith(HEADER):
            continue
        try:
            record = FAST(raw, len(HEADER))
        except Unreadable:
            stepped_aside += 1
        else:
            read += 1
            assert repr(record) == repr(_fastavro(raw)), case  # repr: NaN is not equal to itself
        assert _outcome(plain, raw) == _outcome(without, raw), case
    # Not vacuous: both ways are taken often.
    assert read > 300 and stepped_aside > 100, (read, stepped_aside)


TINY = {
    "type": "record",
    "name": "Tiny",
    "fields": [
        {"name": "xs", "type": {"type": "array", "items": "string"}},
        {"name": "maybe", "type": ["null", "double"]},
    ],
}
INNER_FIELDS = [{"name": "s", "type": "string"}]
EVERY_KIND = {
    "type": "record",
    "name": "Every",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {
            "name": "inner",
            "type": {"type": "record", "name": "Inner", "fields": [{"name": "s", "type": "string"}]},
        },
        {"name": "again", "type": ["null", "Inner"]},
        {"name": "list", "type": {"type": "array", "items": "Inner"}},
    ],
}


def _zigzag(n: int) -> bytes:
    value, out = (n << 1) ^ (n >> 63), bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_an_array_block_with_a_negative_count_and_its_size_reads_as_fastavro_reads_it() -> None:
    # Avro lets a writer give a block's count negated, followed by the block's size in bytes.
    items = _zigzag(1) + b"a" + _zigzag(2) + b"bc"
    raw = _zigzag(-2) + _zigzag(len(items)) + items + _zigzag(1) + _zigzag(1) + b"d" + _zigzag(0)
    raw += _zigzag(1) + b"\x00\x00\x00\x00\x00\x00\xf8\x3f"  # the union's double branch: 1.5
    expected = fastavro.schemaless_reader(BytesIO(raw), fastavro.parse_schema(TINY), None)
    assert compile_reader(TINY)(raw, 0) == expected == {"xs": ["a", "bc", "d"], "maybe": 1.5}


def test_every_type_it_compiles_reads_as_fastavro_reads_it() -> None:
    parsed = fastavro.parse_schema(json.loads(json.dumps(EVERY_KIND)))
    rng = random.Random(SEED)
    for _ in range(200):
        value = {
            "flag": rng.random() < 0.5,
            "small": rng.randint(-(2**31), 2**31 - 1),
            "big": rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randint(-(2**40), 2**40)]),
            "ratio": rng.uniform(-1e6, 1e6),
            "blob": rng.randbytes(rng.randrange(300)),
            "at": rng.randint(-(2**50), 2**50),
            "inner": {"s": "é" * rng.randrange(100)},
            "again": rng.choice([None, {"s": "x" * rng.randrange(200)}]),
            "list": [{"s": str(n)} for n in range(rng.randrange(4))],
        }
        out = BytesIO()
        fastavro.schemaless_writer(out, parsed, value)
        raw = out.getvalue()
        assert repr(compile_reader(EVERY_KIND)(raw, 0)) == repr(
            fastavro.schemaless_reader(BytesIO(raw), parsed, None)
        )


def test_a_boolean_byte_other_than_0_or_1_is_left_to_fastavro() -> None:
    schema = {"type": "record", "name": "B", "fields": [{"name": "b", "type": "boolean"}]}
    with pytest.raises(Unreadable):
        compile_reader(schema)(b"\x02", 0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_zigzag(1) + _zigzag(5) + b"ab", "a string longer than the value"),
        (_zigzag(1) + _zigzag(1) + b"\xff" + _zigzag(0) + b"\x00", "bad UTF-8"),
        (_zigzag(0) + b"\x04", "a union index out of range"),
        (_zigzag(0) + b"\x00" + b"left over", "bytes after the record"),
        (_zigzag(0) + b"\x02\x00\x00", "a double cut short"),
        (b"\xff" * 11, "a varint longer than ten bytes"),
        (_zigzag(10**6) + b"a", "an array count larger than the value"),
    ],
)
def test_what_the_fast_path_cannot_read_is_unreadable_never_another_error(raw: bytes, why: str) -> None:
    with pytest.raises(Unreadable):
        compile_reader(TINY)(raw, 0)


def test_a_type_it_does_not_compile_is_refused_when_the_codec_starts_not_per_value() -> None:
    with pytest.raises(NotImplementedError, match="does not read"):
        compile_reader(
            {"type": "record", "name": "E", "fields": [{"name": "e", "type": "map", "values": "string"}]}
        )
