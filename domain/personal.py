"""Personal data in a step: which fields hold it, whose it is, and how it reads once erased.

A policy declares, by step type, the fields (paths under `data`) that carry a person's
words or records (`fields`) and the content hashes that name them (`hashes`). Infra
stores those fields encrypted under the subject's key and the hashes keyed by it
(infra/sealing.py); destroying the key erases them everywhere at once, while the chain,
which runs over what is stored, still verifies.

The subject is whose data it is: the publisher names it (the envelope's `subject`), or
it is the record the run works on (its input, else the first proposed action's target).
Nothing here encrypts: this module is the vocabulary both sides share.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from operator import attrgetter
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from domain.step_values import walk
from domain.steps import STEP_TYPES, ActionProposed, RunStarted, SourceUsed, StepEvent

# What a field of an erased subject reads as, in JSON and Markdown alike. An object field
# (`params`) reads as {"erased": ERASED}, so its type still holds.
ERASED = "[erased]"
ERASED_OBJECT: dict[str, Any] = {"erased": ERASED}
# A stored field's ciphertext, in place of the value: a string field holds the token,
# an object field {"$sealed": token}, a list field [token].
SEALED_PREFIX = "sealed:v1:"
SEALED_KEY = "$sealed"
# A content hash keyed by the subject's key (HMAC-SHA256 of the hash the publisher sent).
KEYED_PREFIX = "hmac-sha256:"

DataPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
# A record a source names, `system/kind/id`, each part a name or a glob (`cms/page/*`).
RecordPattern = Annotated[str, StringConstraints(pattern=r"^[^/\s]+/[^/\s]+/\S+$")]

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "source.used": ("source.excerpt",),
    "action.proposed": ("action.output", "action.params"),
    "action.edited": ("output",),
    "action.reviewed": ("comment",),
    "action.reverted": ("note",),
    "record.corrected": ("correction",),
    "consent.given": ("text",),
}
DEFAULT_HASHES: dict[str, tuple[str, ...]] = {
    "run.started": ("input.hash",),
    "source.used": ("source.hash",),
    "action.proposed": ("action.output_hash",),
    "action.edited": ("output_hash", "base_hash"),
    "action.reviewed": ("reviewed_hash",),
    "action.executed": ("executed_hash",),
}


class PersonalData(BaseModel):
    """`[personal_data]` of a policy: `fields` and `hashes`, each step type -> paths under `data`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: dict[str, tuple[DataPath, ...]] = Field(default_factory=lambda: dict(DEFAULT_FIELDS))
    hashes: dict[str, tuple[DataPath, ...]] = Field(default_factory=lambda: dict(DEFAULT_HASHES))
    # Sources that are nobody's personal data (a public pricing page): a `source.used` naming
    # one is stored as received, so its excerpt still reads after the run's subject is erased.
    public_sources: tuple[RecordPattern, ...] = ()

    @field_validator("fields", "hashes")
    @classmethod
    def _known_types(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for step_type in value:
            if step_type not in STEP_TYPES:
                raise ValueError(f"'{step_type}' is not a step type; expected one of {', '.join(STEP_TYPES)}")
        return value

    def holds_any(self, step_type: str) -> bool:
        return step_type in self.fields or step_type in self.hashes

    @cached_property
    def readers(self) -> dict[str, tuple[tuple[Reader, ...], tuple[Reader, ...]]]:
        """Per step type, (fields, hashes) as (path, getter) over its data model: ingest asks
        every step, so each path is resolved once, not walked per event."""
        return {
            step_type: (
                tuple((path, _getter(path)) for path in self.fields.get(step_type, ())),
                tuple((path, _getter(path)) for path in self.hashes.get(step_type, ())),
            )
            for step_type in {*self.fields, *self.hashes}
        }

    def carries(self, step: StepEvent) -> bool:
        """True when `step` holds personal data to seal: a declared field or hash with a value,
        in a step that does not read a public source."""
        return self.present(getattr(step, "data", None), step.type) and not self.public(step)

    def public(self, step: StepEvent) -> bool:
        """A `source.used` of a source the policy names public."""
        return (
            isinstance(step, SourceUsed)
            and self._public is not None
            and bool(self._public(step.data.source.key))
        )

    @cached_property
    def _public(self) -> Callable[[str], re.Match[str] | None] | None:
        if not self.public_sources:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.public_sources)).match

    def present(self, data: Any, step_type: str) -> bool:
        """True when a step of this type carries a declared field or hash with a value."""
        readers = self.readers.get(step_type)
        if readers is None:
            return False
        for kind in readers:
            for _, get in kind:
                if get(data):
                    return True
        return False


Reader = tuple[str, Callable[[Any], Any]]


def _getter(path: str) -> Callable[[Any], Any]:
    attributes = attrgetter(path)

    def get(data: Any) -> Any:
        try:
            return attributes(data)
        except AttributeError:  # an optional record on the way is absent
            return None

    return get


NO_PERSONAL_DATA = PersonalData(fields={}, hashes={})


def get_path(data: Any, path: str) -> Any:
    """The value at `path` in a JSON object or a step's data model; None when absent."""
    return walk(data, path.split("."))


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Replace the value at `path` (which exists: `get_path` found it)."""
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


def sealed_token(value: Any) -> str | None:
    """The ciphertext token a stored field holds in place of its value, or None."""
    if isinstance(value, str) and value.startswith(SEALED_PREFIX):
        return value
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(SEALED_KEY), str):
        token = value[SEALED_KEY]
        return token if token.startswith(SEALED_PREFIX) else None
    if isinstance(value, list) and len(value) == 1:
        return sealed_token(value[0])
    return None


def in_place_of(original: Any, token: str) -> Any:
    """`token` shaped like the value it replaces, so the stored step still validates."""
    if isinstance(original, Mapping):
        return {SEALED_KEY: token}
    if isinstance(original, tuple):
        return (token,)
    if isinstance(original, list):
        return [token]
    return token


def erased_like(stored: Any) -> Any:
    """The erased marker shaped like the field it replaces."""
    if isinstance(stored, Mapping):
        return dict(ERASED_OBJECT)
    if isinstance(stored, list | tuple):
        return [ERASED]
    return ERASED


def sealed_fields(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, token) of a stored step's data, wherever it is: reading does not depend
    on the policy in force when the step was stored."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        token = sealed_token(value)
        if token is not None:
            yield path, token
        elif isinstance(value, Mapping):
            yield from sealed_fields(value, path + ".")


def record_subject(step: StepEvent) -> str | None:
    """The subject a step's own record names: the run's input, or the action's target."""
    if isinstance(step, RunStarted) and step.data.input is not None:
        return step.data.input.key
    if isinstance(step, ActionProposed):
        return step.data.action.target.key
    return None


def opens_subject(step: StepEvent) -> bool:
    """Steps whose subject becomes the run's (what later steps without one fall back to)."""
    return isinstance(step, RunStarted | ActionProposed)


_RUN_SUBJECT = "run/"


def fallback_subject(step: StepEvent) -> str:
    """A step with personal data whose run names no record: the run itself is the subject."""
    return _RUN_SUBJECT + step.run_id


def run_named(subject: str) -> str | None:
    """The run id of a run's own subject (`fallback_subject`), else None."""
    return (subject.removeprefix(_RUN_SUBJECT) or None) if subject.startswith(_RUN_SUBJECT) else None


def record_named(subject: str) -> tuple[str, str, str] | None:
    """The (system, kind, id) of the record a subject is the key of (`Reference.key`), else None."""
    system, kind, record_id = (*subject.split("/", 2), "", "")[:3]
    return (system, kind, record_id) if system and kind and record_id else None
