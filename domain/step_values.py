"""What a step's fields may hold: the limits, the constrained strings and instants, and the
values steps share (actor, references, action, signal, rollback link).

What a step may hold at all is bounded here, once (see "limits" below): a value
outside the bounds is not a fact the store could keep or its readers could read
back, so it is rejected and dead-lettered with the field and the limit named.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

# --- limits: what the store and its readers can hold -------------------------
#
# Every value a publisher sends is checked against these before it is recorded,
# so nothing unstorable gets in and nothing recorded breaks a reader later.
# Ingest validates tens of thousands of events a second, so each check is one
# pydantic-core constraint or one memchr, never a Python walk over a whole step.
# README "Limits of what is recorded" documents them for publishers.

# Identifiers, names and codes end up in text columns and btree indexes, whose
# entries must stay under ~2.7 KB: 512 characters leaves room for realistic ids
# (URLs used as ids, file paths) and keeps one column's entry at most 2 KB (4
# bytes a character). It cannot make an index over several such columns safe:
# two 512-character CJK values in one row already make a 3,096-byte entry
# (measured), so such indexes must take a prefix or a hash of their columns.
MAX_NAME_LENGTH = 512
# Instants PostgreSQL timestamptz and Python's datetime both hold, with room for
# any UTC offset (Python stops at years 1 and 9999 *in UTC*, so 9999-12-31T23:00-05:00
# is stored by PostgreSQL and then breaks every reader).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# Levels of objects and arrays in `params` (the object itself is level 1). Parsers
# and serialisers recurse: pydantic's serialiser refuses a few hundred levels,
# Python's json module raises RecursionError past ~1,000. A real tool call nests
# a handful of levels; 64 keeps every reader far from its own limit.
MAX_PARAMS_DEPTH = 64
# PostgreSQL text cannot hold U+0000, so no string anywhere may contain it, free
# text included: rejecting is simpler and more honest than a silent substitution.
NO_NUL = r"^[^\x00]*$"
NUL_REASON = "should not contain NUL (U+0000), which PostgreSQL text cannot hold"
NUL_MESSAGE = f"String {NUL_REASON}"


def _bounded_json(params: dict[str, Any]) -> dict[str, Any]:
    """`params` is the one free-form JSON value: check its depth, NULs and numbers.

    Iterative on purpose: a recursive walk is the very thing deep nesting breaks."""
    stack: list[tuple[Any, int]] = [(params, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PARAMS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMS_DEPTH} levels of objects and arrays")
        if isinstance(node, dict):
            for key in node:
                if "\x00" in key:
                    raise ValueError(f"a key {NUL_REASON}")
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, str):
                if "\x00" in child:
                    raise ValueError(f"a string {NUL_REASON}")
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float) and not math.isfinite(child):
                # JSON has no NaN or Infinity (1e400 parses as inf): it would be
                # written back as null, so the record would not say what was sent.
                raise ValueError("a number is not finite (NaN, Infinity or out of range)")
    return params


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError(NUL_MESSAGE)
    return text


# A required identifier, name or code; `Label` is the same where empty is allowed.
# Native constraints: no Python call per field (~60 ns a short string).
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NO_NUL)]
Label = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH, pattern=NO_NUL)]
# Free text (outputs, excerpts, comments, reasons, URIs): any length, no NUL. Not
# the pattern: pydantic-core's regex costs ~2.5 ns a character (25 µs on a 10 KB
# output) where `in` (memchr) costs a fixed ~70 ns call.
Text = Annotated[str, AfterValidator(_no_nul)]
Sentence = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
Instant = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
Params = Annotated[dict[str, Any], AfterValidator(_bounded_json)]

Lane = Literal["auto", "review", "escalate", "draft_only", "block"]
RollbackMethod = Literal["revert", "amend", "reopen", "correct", "delete", "none"]
ExecutedState = Literal["sent", "routed", "written", "published", "synced", "noted"]
FinalState = Literal[
    "sent",
    "held",
    "edited",
    "rejected",
    "escalated",
    "synced",
    "published",
    "reverted",
    "corrected",
    "failed",
    "abandoned",
]


class Fact(BaseModel):
    # Unknown fields are ignored so that newer publishers (extra optional
    # fields) never break an older reader.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Actor(Fact):
    kind: Literal["agent", "human", "system"]
    id: Name
    role: Label | None = None


class Reference(Fact):
    """A record in some other system: a ticket, a CRM contact, a page."""

    system: Name
    kind: Name
    id: Name
    uri: Text | None = None

    @property
    def key(self) -> str:
        return f"{self.system}/{self.kind}/{self.id}"


class InputReference(Reference):
    hash: Label | None = None


class ContainedRecord(Fact):
    """A record that is part of a source: a payment method in a user record, an item in an order."""

    system: Name
    kind: Name
    id: Name

    @property
    def key(self) -> str:
        return f"{self.system}/{self.kind}/{self.id}"


class Source(Reference):
    version: Label | None = None
    retrieved_at: Instant | None = None
    excerpt: Text | None = None
    hash: Label | None = None


class Agent(Fact):
    name: Name
    version: Label


class Model(Fact):
    provider: Name
    name: Name
    version: Label


class Action(Fact):
    verb: Name
    target: Reference
    tool: Name
    params: Params = Field(default_factory=dict)
    output: Text = ""
    output_hash: Label = ""


class Signal(Fact):
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    reason_code: Label | None = None
    flags: tuple[Label, ...] = ()


class RollbackLink(Fact):
    method: RollbackMethod
    ref: Label | None = None
    prior_version: Label | None = None
    runbook: Text | None = None


def walk(node: Any, parts: Iterable[str]) -> Any:
    """The value at `parts` (keys of a JSON object, or attributes of a model) under `node`;
    None when any step of the way is absent."""
    for part in parts:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, BaseModel):
            node = getattr(node, part, None)
        else:
            return None
    return node


# --- data of each step type -------------------------------------------------


class Origin(Fact):
    """Where an imported run's record came from (v4): absent for a run published live."""

    format: Name
    # False: the format carries no approvals, so their absence proves nothing.
    approvals_recorded: bool
