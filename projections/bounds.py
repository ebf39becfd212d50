"""What a question may ask: the bounds every input string, time and cursor is held to.

PostgreSQL refuses NUL in text, and a Python datetime near year 1 or 9999 with
an offset overflows when it is turned into UTC to be sent; both used to reach
the database and come back as 500s. These types reject them at the boundary
(HTTP parameters, CLI options, `RunFilter`), so a bad input is a 422 naming
its field, never a 500.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from domain.errors import Invalid

# The window of times a question may name: the instants a step may hold (domain.step_values).
from domain.step_values import EARLIEST, LATEST

# Longest id or text a question may carry (run ids, event ids, record ids, filters).
MAX_TEXT = 512
# A cursor is what this service returned: short.
MAX_CURSOR = 512
_INT4 = 2**31 - 1


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def in_window(value: datetime) -> datetime:
    """The time in UTC, if it lies in [EARLIEST, LATEST)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # an offset that pushes it past year 1 or 9999
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return utc


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(no_nul)]
Instant = Annotated[AwareDatetime, AfterValidator(in_window)]
Cursor = Annotated[str, StringConstraints(max_length=MAX_CURSOR), AfterValidator(no_nul)]


class Answer(BaseModel):
    """An input or answer of the questions (not the AI model of a run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class BadQuery(Invalid, ValueError):
    """A query parameter out of bounds; names the field."""


# Cursors are lists of (started_at, run_key) or (started_at, run_key, seq);
# strict: a forged one with other types is refused, not sent to the database.
_CURSORS: dict[int, TypeAdapter[Any]] = {
    2: TypeAdapter(tuple[Instant, UUID]),
    3: TypeAdapter(tuple[Instant, UUID, Annotated[int, Field(strict=True, ge=0, le=_INT4)]]),
    # The console's queue: a deadline (LATEST itself for none), then as above.
    4: TypeAdapter(tuple[AwareDatetime, Instant, UUID, Annotated[int, Field(strict=True, ge=0, le=_INT4)]]),
}


def paged(rows: list[dict[str, Any]], limit: int, *columns: str) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` of `rows` (a query asked for one more), and, when there were more,
    the cursor after the last one: its `columns`, the list's order."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    parts = [
        v.isoformat() if isinstance(v, datetime) else v if isinstance(v, int) else str(v)
        for v in (last[c] for c in columns)
    ]
    return rows[:limit], encode_cursor(*parts)


def encode_cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return list(_CURSORS[arity].validate_python(parts))
    except (ValueError, TypeError, ValidationError):  # JSONDecodeError and binascii.Error are ValueErrors
        raise BadQuery("cursor", "not a cursor this service returned; start again without it") from None
