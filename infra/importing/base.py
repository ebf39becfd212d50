"""What every importer shares: the sender it publishes through, the tally it keeps, the error
that refuses a file, event ids derived from the source, and JSON read a value at a time."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol
from uuid import NAMESPACE_URL, uuid5

from domain.errors import Invalid
from domain.steps import StepEvent

if TYPE_CHECKING:
    from infra.importing.runs import RunBuilder

FLUSH_EVERY = 5_000  # events between waits for the broker: memory stays flat on any file
_IMPORT_NAMESPACE = uuid5(NAMESPACE_URL, "https://agent-receipts.dev/import")


class StepSender(Protocol):
    def publish(self, step: StepEvent) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


class UnsupportedFormat(Invalid):
    title = "Unsupported file format"


Advance = Callable[[int, int], None]  # (bytes read, events published)


def no_progress(done: int, count: int) -> None:
    return None


@dataclass
class Imported:
    """What an import did: the runs and events it published, what it skipped and why, and
    what it noted about the source (synthetic clocks, malformed arguments) without skipping."""

    events: int = 0
    runs: set[tuple[str, str]] = field(default_factory=set)
    skipped: list[tuple[str, int | str, str]] = field(default_factory=list)  # (file, where, reason)
    notes: Counter[str] = field(default_factory=Counter)

    def skip(self, name: str, where: int | str, reason: str) -> None:
        self.skipped.append((name, where, reason))

    def summary(self) -> list[str]:
        runs, skipped = len(self.runs), len(self.skipped)
        lines = [f"published {self.events:,} events of {runs:,} runs; skipped {skipped:,}"]
        lines += [f"  {name}:{where}: {reason}" for name, where, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  … and {len(self.skipped) - 20:,} more; every reason, how often:")
            reasons = Counter(reason for _, _, reason in self.skipped)
            lines += [f"    {count:,}: {reason}" for reason, count in reasons.most_common()]
        lines += [f"  note: {note}: {count:,}" for note, count in sorted(self.notes.items())]
        return lines


# What a reader yields per run: where in the file, and the run's events or why it was skipped.
Runs = Iterator[tuple[str, "RunBuilder | str"]]


def event_id(tenant: str, run_id: str, position: str) -> str:
    """An imported event's id: from the source's run id and the event's place in it, so the
    same file imported again gives the same ids and records nothing new."""
    return str(uuid5(_IMPORT_NAMESPACE, f"{tenant}/{run_id}/{position}"))


_AFTER_SCALAR = frozenset(" \t\r\n,]}")


class BrokenJson(ValueError):
    """The file stops being JSON at `offset` (characters from its start): what came before
    was read and stands; nothing after it can be trusted to be where it seems."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(
            f"not valid JSON at character {offset:,}: {message}; the rest of the file is not read"
        )
        self.offset = offset


class JsonValues:
    """Top-level JSON values of a file, one at a time, in constant memory: the elements of a
    top-level array, or values one after another (JSONL). Never `json.load` of the whole file.

    `elements()` of an array may be re-entered: a run that is itself an array of messages is
    read message by message (`nested()`)."""

    CHUNK = 1 << 18  # characters a read: the buffer holds about this plus one run

    def __init__(self, stream: IO[str], advance: Advance = no_progress) -> None:
        self.stream = stream
        self.advance = advance
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.decoder = json.JSONDecoder()
        self.dropped = 0  # characters read and let go before the buffer's start

    def _fill(self) -> bool:
        if self.eof:
            return False
        # At least as much as is held: a run larger than a read is parsed again after each
        # read, so reads double with it (linear, not quadratic, in the run's size).
        more = self.stream.read(max(self.CHUNK, len(self.buffer) - self.pos))
        if not more:
            self.eof = True
            return False
        self.advance(len(more.encode()) if not more.isascii() else len(more), 0)
        self.dropped += self.pos
        self.buffer = self.buffer[self.pos :] + more
        self.pos = 0
        return True

    def broken(self, at: int, message: str) -> BrokenJson:
        return BrokenJson(self.dropped + at, message)

    def peek(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise self.broken(self.pos, f"expected {char!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as error:
                if self._fill():
                    continue
                raise self.broken(error.pos, error.msg) from None
            # A number cut by the chunk's end parses as a shorter one ("3." as 3): a scalar not
            # followed by a separator may go on in the next chunk.
            cut = end == len(self.buffer) or self.buffer[end] not in _AFTER_SCALAR
            if cut and not isinstance(value, dict | list | str) and self._fill():
                continue
            self.pos = end
            return value

    def elements(self) -> Iterator[Any]:
        """The elements of the array that starts here."""
        self.take("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            following = self.peek()
            self.pos += 1
            if following == "]":
                return
            if following != ",":
                raise self.broken(
                    self.pos - 1, f"expected ',' or ']' between array elements, not {following!r}"
                )

    def values(self) -> Iterator[Any]:
        """Each top-level value: the elements of a top-level array, else one value after another."""
        if self.peek() == "[":
            yield from self.elements()
            return
        while self.peek():
            yield self.value()
