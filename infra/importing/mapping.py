"""The mapping of an agent's tools to what they touch (YAML, validated): what turns a transcript
or a trace into contract events. Errors name the line and the field.

    timezone: America/New_York        # naive timestamps are read here (default UTC)
    workflow: retail-support
    confirmations: ['(?i)\\b(yes|go ahead|please do|confirm)\\b']
    errors: [{prefix: "Error:"}]      # how a failed result reads, unless a tool says otherwise
    tools:
      get_order_details:
        class: read
        target: {system: shop, kind: order, id: {argument: order_id}}
      cancel_pending_order:
        class: write
        target: {system: shop, kind: order, id: {argument: order_id}}
        sources: [{path: order_id, system: shop, kind: order},
                  {path: payment_method_id, system: shop, kind: payment_method,
                   contained_in: {system: shop, kind: user}}]
        rollback: {method: none, runbook: "re-place the order by hand"}
      "transfer_*": {class: escalation}
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.errors import Invalid
from domain.step_values import ExecutedState, RollbackMethod

ToolClass = Literal["read", "write", "escalation", "internal"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class IdFrom(Strict):
    """Where a record's id comes from: one argument, several joined, a field of the successful
    result, or a constant. Fields are paths: `user.id`, `items[].item_id`."""

    argument: str | None = None
    arguments: tuple[str, ...] = ()
    join: str = "-"
    result: str | None = None
    prior: str | None = None  # a field of the prior read of the same target (inverse calls)
    value: str | None = None

    @model_validator(mode="after")
    def _one(self) -> IdFrom:
        given = [self.argument, self.arguments or None, self.result, self.prior, self.value]
        if sum(x is not None for x in given) != 1:
            raise ValueError("give exactly one of argument, arguments, result, prior, value")
        return self


class TargetMap(Strict):
    system: str
    kind: str
    id: IdFrom | None = None  # none: the tool's name (a queue, a hand-off desk)


class Container(Strict):
    system: str
    kind: str


class SourceArg(Strict):
    """An argument that names a record the action relies on; `contained_in`: the record is part
    of another the run read (a payment method inside a user record)."""

    path: str
    system: str
    kind: str
    contained_in: Container | None = None


class ErrorRule(Strict):
    field: str | None = None  # a boolean field of the result: true means failed
    failed_when: bool = True
    prefix: str | None = None  # the result's text starts with it

    @model_validator(mode="after")
    def _one(self) -> ErrorRule:
        if (self.field is None) == (self.prefix is None):
            raise ValueError("give one of field, prefix")
        return self

    def failed(self, text: str, parsed: Any) -> bool:
        if self.prefix is not None:
            return text.lstrip().startswith(self.prefix)
        return (
            isinstance(parsed, dict) and self.field in parsed and bool(parsed[self.field]) is self.failed_when
        )


class RollbackMap(Strict):
    method: RollbackMethod = "revert"
    runbook: str | None = None
    inverse: str | None = None  # the tool that undoes it
    arguments: dict[str, IdFrom] = Field(default_factory=dict)  # how the inverse's arguments derive


class ToolMap(Strict):
    class_: ToolClass = Field(alias="class")
    verb: str | None = None  # default: the tool's name
    target: TargetMap | None = None
    sources: tuple[SourceArg, ...] = ()
    contains: tuple[SourceArg, ...] = ()  # ids of a read's result that are part of its record
    rollback: RollbackMap | None = None
    errors: tuple[ErrorRule, ...] | None = None
    confirmations: tuple[str, ...] | None = None
    state: ExecutedState | None = None

    @model_validator(mode="after")
    def _target(self) -> ToolMap:
        if self.class_ in ("read", "write") and self.target is None:
            raise ValueError(f"a {self.class_} tool needs a target (system, kind, id)")
        return self


class Mapping(Strict):
    timezone: str = "UTC"
    workflow: str | None = None
    confirmations: tuple[str, ...] = ()
    errors: tuple[ErrorRule, ...] = (ErrorRule(prefix="Error"),)
    outcomes: dict[str, str] = Field(default_factory=dict)  # the source's outcome -> final state
    model_provider: str = "unknown"
    input: TargetMap | None = None  # the run's input: its id from the run's metadata (`argument`)
    tools: dict[str, ToolMap]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {name!r}") from error
        return name

    @field_validator("confirmations")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression: {error}") from error
        return patterns

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def tool(self, name: str) -> ToolMap | None:
        """The tool's own entry, else the first pattern (in file order) that matches its name."""
        if name in self.tools:
            return self.tools[name]
        for pattern, tool in self.tools.items():
            if fnmatch.fnmatchcase(name, pattern):
                return tool
        return None


class MappingError(Invalid):
    title = "Invalid mapping"


Loc = tuple[int | str, ...]  # a pydantic error location


def load_mapping(path: Path) -> Mapping:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "the file"
        raise MappingError(f"{path}:{where}", f"not YAML: {getattr(error, 'problem', error)}") from error
    if not isinstance(document, dict):
        raise MappingError(str(path), "a mapping is a YAML document of keys (tools: …)")
    try:
        return Mapping.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        loc: Loc = tuple(first["loc"])
        line = _line_of(node, loc)
        name = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
        raise MappingError(f"{path}:line {line}: {name or 'the document'}", first["msg"]) from error


def _line_of(node: yaml.Node | None, loc: Loc) -> int:
    """The line of the deepest node of `loc` the document has (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == part or _alias(k.value) == part), None)
            if found is None:
                return line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _alias(key: Any) -> str:
    return "class_" if key == "class" else str(key)


def field_at(value: Any, path: str) -> list[Any]:
    """Every value at `path` (`user.id`, `items[].item_id`) in a JSON value."""
    found = [value]
    for part in path.split("."):
        spread = part.endswith("[]")
        key = part[:-2] if spread else part
        nxt: list[Any] = []
        for item in found:
            child = item.get(key) if isinstance(item, dict) and key else item
            if child is None:
                continue
            if spread:
                nxt.extend(child if isinstance(child, list) else [])
            else:
                nxt.append(child)
        found = nxt
    return found


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
