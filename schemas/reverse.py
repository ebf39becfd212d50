"""The wire form of a reverse event on `agent-steps.reverse`: JSON, key = run_id.

Reverse events are the service's own commands to its rollback tooling, never
published by a platform, so JSON (the domain model's field names) is their one
encoding. Anything else on the topic is a `DecodeError`, dead-lettered by the
rollback consumer, never a reason for it to stop.
"""

from __future__ import annotations

import pydantic_core
from pydantic import ValidationError

from domain.rollback import ReverseEvent
from schemas.codec import MAX_MESSAGE, DecodeError, InvalidStep, NotAStep


def encode_reverse(reverse: ReverseEvent) -> bytes:
    return reverse.model_dump_json(exclude_none=True).encode()


def decode_reverse(raw: bytes) -> ReverseEvent:
    if raw.lstrip()[:1] != b"{":
        preview = raw[:16].hex(" ") or "(empty)"
        raise NotAStep(f"a reverse event is a JSON object; got {len(raw)} bytes starting {preview}")
    try:
        return ReverseEvent.model_validate_json(raw)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        first = problems[0]
        if first["type"] in ("json_invalid", "json_type"):
            raise InvalidStep(f"not valid JSON: {first['msg']}") from None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in p_['loc']) or '(value)'}: {p_['msg']}" for p_ in problems[:3]
        )
        raise InvalidStep(
            f"not a reverse event: {len(problems)} invalid field(s): {shown}"[:MAX_MESSAGE]
        ) from None
    except (ValueError, RecursionError, pydantic_core.PydanticSerializationError) as error:
        raise DecodeError(f"not a reverse event: {type(error).__name__}: {error}") from None
