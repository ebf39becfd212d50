"""Policy outside the prompt: the document the service routes agent steps by.

A policy is data the service owns (TOML, validated here), not text in a prompt:
lane contracts, one per workflow, and ordered rules that each yield a lane, a
reviewer role and a reason. Its version is its content: the SHA-256 of the
canonical JSON of the validated document without its defaults, so reformatting a
file, reordering its keys, spelling out a default — or a service version adding an
optional field — never makes a new version.

Evaluation is `domain.routing`; contract checks over a run are `domain.contracts`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from datetime import timedelta
from importlib.resources import files
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from domain.personal import PersonalData
from domain.step_values import FinalState, Lane

SignalName = Literal["confidence", "reason_code", "flags"]
TextScope = Literal["input", "sources", "output", "params"]
# Names as the wire carries them (verbs, systems, roles), without spaces; `*` ends a prefix.
Id = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")]
Word = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
# A field a rule may require: `input.uri`, `action.params.account.owner`, `signal.reason_code`,
# `rollback.ref`, or `source:SYSTEM/KIND[/ID]` (the run recorded such a source).
FieldPath = Annotated[
    str,
    StringConstraints(
        pattern=r"^((input|action|signal|rollback)(\.[A-Za-z0-9_-]+)+|source:[^/\s]+/[^/\s]+(/\S+)?)$"
    ),
]


class Doc(BaseModel):
    # A misspelt key must be an error, not a rule that silently matches everything.
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecordPattern(Doc):
    """A kind of record: `system`, and `kind` unless any kind of that system will do."""

    system: Id
    kind: Id | None = None

    def covers(self, system: str, kind: str) -> bool:
        return self.system == system and self.kind in (None, kind)


class ActionPattern(Doc):
    verb: Id
    system: Id | None = None
    kind: Id | None = None

    def covers(self, verb: str, system: str, kind: str) -> bool:
        return self.verb == verb and self.system in (None, system) and self.kind in (None, kind)


class Contract(Doc):
    """What a workflow's lane may do, as data: the receipt written before permissions grow.

    Empty lists mean "not restricted": a contract grows one question at a time."""

    inputs: tuple[RecordPattern, ...] = ()
    sources: tuple[RecordPattern, ...] = ()
    actions: tuple[ActionPattern, ...] = ()
    reviewer_role: Id | None = None
    signals: tuple[SignalName, ...] = ()
    # Verbs that must carry a recovery path (a rollback method other than none); "*": every verb.
    recovery: tuple[Id, ...] = ()
    final_states: tuple[FinalState, ...] = ()
    # How long a step may wait for its reviewer before it expires (the approval queue).
    review_deadline: timedelta | None = None
    # A reviewer who edits a draft may approve the edit, unless the lane asks for another person.
    second_eyes_after_edit: bool = False
    # Who decides a step a reviewer escalated (unset: the lane's role, as before).
    escalation_role: Id | None = None
    # Who may ask to roll this workflow's runs back (`POST /runs/{run}/rollback`).
    rollback_role: Id = "rollback"
    # A customer's recorded consent (`consent.given`) to a step stands in for a reviewer's
    # approval: the lane is one where the customer, not the company, decides.
    accepts_consent: bool = False

    def needs_recovery(self, verb: str) -> bool:
        return "*" in self.recovery or verb in self.recovery


class When(Doc):
    """What a rule matches on. Every condition given must hold; a list holds when any item does.

    Verbs and words ending in `*` match by prefix. Words match whole words, case-insensitively,
    in the texts `words_in` names (`input`: the input reference and what the run recorded of
    that very record, e.g. the ticket's excerpt; `sources`: every source's excerpt; `output`:
    the version being routed; `params`: keys and values). `missing` holds when any listed
    field is missing: absent, null, an empty string, list or object (a `source:` path: no
    such source recorded). A step is public-facing when its target is one of the policy's
    `public_targets` or its signal carries the flag `public` or `public_facing`. Confidence
    thresholds never match a step that reports no confidence."""

    workflows: tuple[Id, ...] = ()
    verbs: tuple[Id, ...] = ()
    target_systems: tuple[Id, ...] = ()
    target_kinds: tuple[Id, ...] = ()
    public_facing: bool | None = None
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)  # confidence >= min
    max_confidence: float | None = Field(default=None, ge=0.0, le=1.0)  # confidence < max
    reason_codes: tuple[Id, ...] = ()
    flags: tuple[Id, ...] = ()
    words: tuple[Word, ...] = ()
    words_in: tuple[TextScope, ...] = ("input", "output", "params")
    missing: tuple[FieldPath, ...] = ()
    no_recovery: bool | None = None  # rollback missing or method none

    @model_validator(mode="after")
    def _words_need_a_place(self) -> When:
        if self.words and not self.words_in:
            raise ValueError("words_in is empty: words must be looked for somewhere")
        return self


class Rule(Doc):
    id: Id
    lane: Lane
    role: Id | None = None  # default: the contract's reviewer_role when the lane needs a person
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    when: When = When()


class DefaultRule(Doc):
    id: Id = "default"
    lane: Lane
    role: Id | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class ReadinessThresholds(Doc):
    """What a lane must show before it is moved on (domain/readiness.py): `[readiness]`."""

    min_runs: int = Field(default=20, ge=1)  # fewer runs than this: too little evidence
    review_gated_complete: float = Field(default=0.80, ge=0.0, le=1.0)  # complete receipts, review-gated
    auto_complete: float = Field(default=0.95, ge=0.0, le=1.0)  # ... and for auto-execution
    auto_max_edit_rate: float = Field(default=0.05, ge=0.0, le=1.0)  # reviewers rarely change drafts
    auto_max_failure_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    auto_max_revert_rate: float = Field(default=0.01, ge=0.0, le=1.0)


# What ingest does with an event no registered publisher vouches for: record it with a
# finding on its run, or keep it out of the record as a dead letter (reason and bytes kept).
Handling = Literal["record", "dead_letter"]


class SignatureRules(Doc):
    """`[publishers]`: unsigned events, and events whose signature does not hold (bad, by an
    unknown or revoked publisher, or by another tenant's publisher)."""

    unsigned: Handling = "record"
    bad_signature: Handling = "record"


class PublisherRules(SignatureRules):
    """`[publishers]` for every tenant, `[publishers.tenants.NAME]` for one."""

    tenants: dict[Id, SignatureRules] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> SignatureRules:
        return self.tenants.get(tenant, self)


class Policy(Doc):
    # Targets whose content the public sees (a website page, a published doc).
    public_targets: tuple[RecordPattern, ...] = ()
    contracts: dict[Id, Contract] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    default: DefaultRule
    readiness: ReadinessThresholds = Field(default_factory=ReadinessThresholds)
    # Which fields carry personal data, stored encrypted under their subject's key.
    personal_data: PersonalData = Field(default_factory=PersonalData)
    publishers: PublisherRules = Field(default_factory=PublisherRules)

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> Policy:
        seen = {self.default.id}
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice: a decision must name one rule")
            seen.add(rule.id)
        return self

    def contract_for(self, workflow: str | None) -> Contract | None:
        return self.contracts.get(workflow) if workflow else None

    def canonical(self) -> str:
        """The document as sorted, compact JSON: what the version hashes, and what is stored.

        Defaults are left out: what a document does not say is not part of its content, so
        a later version of the service that adds an optional field (a contract's
        `escalation_role`) does not give every policy already in force a new version."""
        return json.dumps(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
        )

    @property
    def version(self) -> str:
        return policy_version(self)


def policy_version(policy: Policy) -> str:
    return "sha256:" + hashlib.sha256(policy.canonical().encode()).hexdigest()


class DocumentError(ValueError):
    """A TOML document that cannot be used (a policy, a rollback targets file), with the line
    (1-based; None: not known) and the field to fix."""

    def __init__(self, line: int | None, field: str, message: str) -> None:
        self.line, self.field, self.message = line, field, message
        where = f"line {line}: " if line else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


class PolicyError(DocumentError):
    """A policy that cannot be used."""


def parse_toml(text: str, error: type[DocumentError]) -> dict[str, Any]:
    """`text` as TOML, or `error` naming the line the parser stopped at."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        match = re.search(r"\(at line (\d+), column \d+\)", str(problem))
        raise error(int(match.group(1)) if match else None, "", f"not valid TOML: {problem}") from None


def load_policy(text: str) -> Policy:
    """The validated policy in `text` (TOML), or a PolicyError naming the line and field."""
    raw = parse_toml(text, PolicyError)
    if "default" not in raw:
        raise PolicyError(
            1, "default", "a policy needs a [default] rule (id, lane, reason) for steps no rule matches"
        )
    try:
        return Policy.model_validate(raw)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        # A check across the document (a rule id used twice) has no location of its own:
        # name the rule it is about.
        loc = tuple(problem["loc"]) or _second_use_of_a_rule_id(raw)
        message = str(problem.get("ctx", {}).get("error", problem["msg"]))
        more = len(error.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        field = ".".join(str(p) for p in loc) or "(document)"
        raise PolicyError(locate(text, loc), field, message + suffix) from None


def _second_use_of_a_rule_id(raw: dict[str, object]) -> tuple[str | int, ...]:
    rules = raw.get("rules")
    default = raw.get("default")
    seen = {default.get("id", "default")} if isinstance(default, dict) else set()
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if rule_id in seen:
            return ("rules", index, "id")
        seen.add(rule_id)
    return ()


SAMPLE_FILE = "sample_policy.toml"


def sample_text() -> str:
    """The sample policy shipped in the package: used when none is configured, and the
    place to start one's own from. Read as package data, so it is found when installed."""
    return files("domain").joinpath(SAMPLE_FILE).read_text(encoding="utf-8")


def sample_policy() -> Policy:
    return load_policy(sample_text())


# --- where a field is in the source text -------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*="""
)
_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*(?:\.|$)""")

Path = tuple[str | int, ...]


def _parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(dotted)]


def locate(text: str, loc: Path) -> int | None:
    """The line where the key or table `loc` (a pydantic error location) is written.

    Tracks table headers (`[a.b]`, `[[rules]]` with its element count) and `key =`
    lines; a location inside an inline value or a missing key falls back to the
    nearest enclosing key or table that is written. Multi-line strings are not parsed:
    a `key =` look-alike inside one could be named instead (a line close by)."""
    lines = _index(text)
    wanted: list[str | int] = list(loc)
    while wanted:
        line = lines.get(tuple(wanted))
        if line is not None:
            return line
        wanted.pop()
    return None


def _index(text: str) -> dict[Path, int]:
    lines: dict[Path, int] = {}
    arrays: dict[tuple[str, ...], int] = {}  # array-of-tables path (names only) -> last index
    table: Path = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = _parts(header.group(2))
            if header.group(1) == "[[":
                arrays[tuple(names)] = arrays.get(tuple(names), -1) + 1
            table = _resolve(names, arrays)
            lines.setdefault(table, number)
            if header.group(1) == "[[":
                lines.setdefault(table[:-1], number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_parts(key.group(1))), number)
    return lines


def _resolve(names: list[str], arrays: dict[tuple[str, ...], int]) -> Path:
    """`rules.when` after the third `[[rules]]` is ("rules", 2, "when")."""
    path: list[str | int] = []
    for depth, name in enumerate(names, start=1):
        path.append(name)
        index = arrays.get(tuple(names[:depth]))
        if index is not None:
            path.append(index)
    return tuple(path)
