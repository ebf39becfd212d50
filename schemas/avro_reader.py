"""A reader compiled from the current step schema: the Avro fast path.

fastavro interprets a schema on every value, dispatching on each field's type
name; for a ~700-byte step that is ~13-18 µs, more than validating it. This
module turns the schema, once, into straight-line Python (one function per
record, each field's read inlined) that builds the same dict fastavro would.

It reads values written with the current schema only, and it is not trusted
with errors: anything it cannot read (truncated, a bad union index, bad UTF-8,
an impossible timestamp, bytes left over) raises `Unreadable`, and the codec
reads the value again with fastavro, whose verdict and message stand. A value
is therefore either read exactly as fastavro reads it, or judged by fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


class Unreadable(Exception):
    """The fast path cannot read this value; fastavro decides what is wrong with it."""


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint at `p`: its value and the position after it."""
    shift = result = 0
    while True:
        byte = b[p]
        p += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7
        if shift > 63:
            raise Unreadable("varint longer than 10 bytes")


def _string(b: bytes, p: int) -> tuple[str, int]:
    n, p = _long(b, p)
    end = p + n
    if n < 0 or end > len(b):
        raise Unreadable("string length out of range")
    return b[p:end].decode(), end


def _double(b: bytes, p: int) -> tuple[float, int]:
    if p + 8 > len(b):
        raise Unreadable("double ends early")
    return _DOUBLE.unpack_from(b, p)[0], p + 8


def _timestamp_micros(b: bytes, p: int) -> tuple[datetime, int]:
    micros, p = _long(b, p)
    return _EPOCH + micros * _MICROSECOND, p


def _boolean(b: bytes, p: int) -> tuple[bool, int]:
    byte = b[p]
    if byte > 1:
        raise Unreadable("a boolean byte other than 0 or 1")
    return byte == 1, p + 1


def _float(b: bytes, p: int) -> tuple[float, int]:
    if p + 4 > len(b):
        raise Unreadable("float ends early")
    return _FLOAT.unpack_from(b, p)[0], p + 4


def _bytes(b: bytes, p: int) -> tuple[bytes, int]:
    n, p = _long(b, p)
    end = p + n
    if n < 0 or end > len(b):
        raise Unreadable("bytes length out of range")
    return b[p:end], end


_PRIMITIVES = {
    "string": "_string",
    "bytes": "_bytes",
    "boolean": "_boolean",
    "double": "_double",
    "float": "_float",
    "long": "_long",
    "int": "_long",
    ("long", "timestamp-micros"): "_timestamp_micros",
}
_READERS = {
    "_long": _long,
    "_string": _string,
    "_bytes": _bytes,
    "_boolean": _boolean,
    "_double": _double,
    "_float": _float,
    "_timestamp_micros": _timestamp_micros,
}


class _Compiler:
    """Writes one Python function per record of the schema."""

    def __init__(self) -> None:
        self.functions: list[str] = []
        self.names: dict[str, str] = {}

    def record(self, schema: dict[str, Any]) -> str:
        name = schema["name"]
        if name in self.names:
            return self.names[name]
        function = self.names[name] = f"_r{len(self.names)}"
        lines = [f"def {function}(b, p, end):"]
        fields = [field["name"] for field in schema["fields"]]
        for number, field in enumerate(schema["fields"]):
            lines += self.read(field["type"], f"f{number}", "    ")
        built = ", ".join(f"{name!r}: f{number}" for number, name in enumerate(fields))
        lines.append(f"    return {{{built}}}, p")
        self.functions.append("\n".join(lines))
        return function

    def read(self, schema: Any, target: str, indent: str) -> list[str]:
        """Lines that read `schema` at `p` into `target`, advancing `p`."""
        if isinstance(schema, list):
            return self.union(schema, target, indent)
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind == "record":
                return [f"{indent}{target}, p = {self.record(schema)}(b, p, end)"]
            if kind == "array":
                return self.array(schema["items"], target, indent)
            key = (kind, schema["logicalType"]) if "logicalType" in schema else kind
            if key in _PRIMITIVES:
                return [f"{indent}{target}, p = {_PRIMITIVES[key]}(b, p)"]
        elif schema == "null":
            return [f"{indent}{target} = None"]
        elif schema == "string":
            # The commonest read, inlined: a length of one or two bytes, then the text.
            return [
                f"{indent}n = b[p]",
                f"{indent}if n < 0x80:",
                f"{indent}    n = (n >> 1) ^ -(n & 1)",
                f"{indent}    p += 1",
                f"{indent}elif b[p + 1] < 0x80:",
                f"{indent}    n = (n & 0x7F) | (b[p + 1] << 7)",
                f"{indent}    n = (n >> 1) ^ -(n & 1)",
                f"{indent}    p += 2",
                f"{indent}else:",
                f"{indent}    n, p = _long(b, p)",
                f"{indent}e = p + n",
                f"{indent}if n < 0 or e > end:",
                f"{indent}    raise Unreadable('string length out of range')",
                f"{indent}{target} = b[p:e].decode()",
                f"{indent}p = e",
            ]
        elif schema in _PRIMITIVES:
            return [f"{indent}{target}, p = {_PRIMITIVES[schema]}(b, p)"]
        elif schema in self.names:  # a record named before
            return [f"{indent}{target}, p = {self.names[schema]}(b, p, end)"]
        raise NotImplementedError(f"the fast Avro reader does not read {schema!r}")

    def union(self, branches: list[Any], target: str, indent: str) -> list[str]:
        # The index as its one zig-zag byte (2 * index): any other byte is not ours to judge.
        lines = [f"{indent}i = b[p]", f"{indent}p += 1"]
        for index, branch in enumerate(branches):
            lines.append(f"{indent}{'if' if index == 0 else 'elif'} i == {2 * index}:")
            lines += self.read(branch, target, indent + "    ")
        lines += [f"{indent}else:", f"{indent}    raise Unreadable('union index out of range')"]
        return lines

    def array(self, items: Any, target: str, indent: str) -> list[str]:
        # Blocks of items until a zero count; a negative count is followed by the block's size.
        depth = len(indent)
        items_list, count, item = f"a{depth}", f"n{depth}", f"v{depth}"
        return [
            f"{indent}{items_list} = []",
            f"{indent}{count}, p = _long(b, p)",
            f"{indent}while {count}:",
            f"{indent}    if {count} < 0:",
            f"{indent}        {count} = -{count}",
            f"{indent}        _, p = _long(b, p)",
            f"{indent}    if {count} > len(b) - p:",
            f"{indent}        raise Unreadable('array longer than the value')",
            f"{indent}    for _ in range({count}):",
            *self.read(items, item, indent + "        "),
            f"{indent}        {items_list}.append({item})",
            f"{indent}    {count}, p = _long(b, p)",
            f"{indent}{target} = {items_list}",
        ]


def compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], dict[str, Any]]:
    """A function reading one value of `schema` (a plain JSON schema, not fastavro's parsed
    form) from `b` at `p` to its end, as fastavro's schemaless_reader would; `Unreadable` if not.

    Raises NotImplementedError for a schema using what it does not compile (enums, maps,
    fixed, other logical types): the codec then reads every value with fastavro."""
    compiler = _Compiler()
    top = compiler.record(schema)
    namespace: dict[str, Any] = {**_READERS, "Unreadable": Unreadable}
    exec("\n\n".join(compiler.functions), namespace)
    read_top = namespace[top]

    def read(b: bytes, p: int) -> dict[str, Any]:
        try:
            record, stop = read_top(b, p, len(b))
        except Unreadable:
            raise
        except (IndexError, UnicodeDecodeError, OverflowError, ValueError) as error:
            raise Unreadable(f"{type(error).__name__}: {error}") from None
        if stop != len(b):
            raise Unreadable("bytes left over")
        return record  # type: ignore[no-any-return]

    return read
