"""The policy engine: route a proposed (or edited) step to a lane, and say why.

`Router(policy)` compiles the policy once (rules bucketed by workflow and verb,
regexes compiled, field paths turned into getters); `Router.evaluate` is then a
pure function of what the service knows when a step is proposed or edited, and
costs a few microseconds. `Router.explain` tries every rule, matched or not, and
says what held and what did not. `decision_step` turns a Decision into the
`policy.decided` step the service records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel

from domain.policy import FieldPath, Policy, Rule, TextScope, When
from domain.steps import (
    SERVICE,
    ActionEdited,
    ActionProposed,
    InputReference,
    Lane,
    PolicyDecided,
    PolicyDecidedData,
    RunStarted,
    Source,
    SourceUsed,
    StepEvent,
)

NEEDS_A_PERSON: frozenset[str] = frozenset({"review", "escalate"})
PUBLIC_FLAGS = frozenset({"public", "public_facing"})
_CACHE_LIMIT = 4096  # distinct (workflow, verb) pairs remembered


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the run had recorded when the step was proposed: its workflow, input and sources."""

    workflow: str | None = None
    input: InputReference | None = None
    sources: tuple[Source, ...] = ()

    @classmethod
    def of(cls, steps: Iterable[StepEvent]) -> RunContext:
        started: RunStarted | None = None
        sources: list[Source] = []
        for step in steps:
            if isinstance(step, RunStarted) and started is None:
                started = step
            elif isinstance(step, SourceUsed):
                sources.append(step.data.source)
        data = started.data if started else None
        return cls(data.workflow if data else None, data.input if data else None, tuple(sources))


class Decision(NamedTuple):
    """A lane decision (a NamedTuple: built on every proposed step, a frozen dataclass costs 1 µs more)."""

    decision_id: str
    rule_id: str
    matched_rules: tuple[str, ...]
    policy_version: str
    lane: Lane
    reasons: tuple[str, ...]
    missing_fields: tuple[str, ...]
    required_role: str | None


@dataclass(frozen=True, slots=True)
class Check:
    condition: str
    expected: str
    actual: str
    holds: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    rule_id: str
    lane: Lane
    matched: bool
    routed: bool
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[Verdict, ...]


class _Step:
    """One evaluation's view of the step: plain attributes, texts built only if a rule asks."""

    __slots__ = (
        "_texts",
        "confidence",
        "context",
        "flags",
        "kind",
        "output",
        "proposal",
        "reason_code",
        "system",
        "verb",
        "workflow",
    )

    def __init__(self, context: RunContext, proposal: ActionProposed, output: str | None) -> None:
        data = proposal.data
        action = data.action
        self.context = context
        self.proposal = proposal
        self.workflow = context.workflow or ""
        self.verb = action.verb
        self.system = action.target.system
        self.kind = action.target.kind
        self.confidence = data.signal.confidence
        self.reason_code = data.signal.reason_code
        self.flags = data.signal.flags
        self.output = action.output if output is None else output
        self._texts: dict[tuple[TextScope, ...], str] = {}

    @property
    def no_recovery(self) -> bool:
        rollback = self.proposal.data.rollback
        return rollback is None or rollback.method == "none"

    def text(self, scopes: tuple[TextScope, ...]) -> str:
        """The scopes' texts, lower-cased, one scope a line (each built once per
        evaluation, and only if a rule looks at it)."""
        known = self._texts.get(scopes)
        if known is None:
            if len(scopes) == 1:
                known = _TEXTS[scopes[0]](self).lower()
            else:
                known = "\n".join(self.text((x,)) for x in scopes)
            self._texts[scopes] = known
        return known


def _input_text(step: _Step) -> str:
    """The input reference, and what the run recorded of the input record itself (a ticket's body)."""
    ref = step.context.input
    if ref is None:
        return ""
    same = [
        s.excerpt or ""
        for s in step.context.sources
        if (s.system, s.kind, s.id) == (ref.system, ref.kind, ref.id)
    ]
    return "\n".join([ref.id, ref.uri or "", *same])


def _params_text(step: _Step) -> str:
    """Keys and values of `params`, one a line; flat values without a walk (the usual tool call)."""
    params = step.proposal.data.action.params
    words: list[str] = [*params]
    stack: list[Any] = []
    for value in params.values():
        if isinstance(value, str):
            words.append(value)
        elif isinstance(value, dict | list):
            stack.append(value)
        elif value is not None:
            words.append(str(value))
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            words.extend(str(k) for k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif node is not None:
            words.append(str(node))
    return "\n".join(words)


_TEXTS: dict[str, Callable[[_Step], str]] = {
    "input": _input_text,
    "sources": lambda s: "\n".join(x.excerpt or "" for x in s.context.sources),
    "output": lambda s: s.output,
    "params": _params_text,
}


# --- conditions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Condition:
    name: str
    expected: str
    test: Callable[[_Step], bool]
    actual: Callable[[_Step], str]


def _names(pattern: tuple[str, ...]) -> Callable[[str], bool]:
    """Membership in a list of names, `x*` matching by prefix."""
    exact = frozenset(p for p in pattern if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in pattern if p.endswith("*"))
    if not prefixes:
        return exact.__contains__
    return lambda value: value in exact or value.startswith(prefixes)


def _words(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words, case-insensitive; `x*` is a word starting with x. A boundary is only
    asked for at an end that is a word character ("/month" may follow "seat")."""
    parts = []
    for word in words:
        stem = word[:-1] if word.endswith("*") else word
        body = r"\s+".join(re.escape(w) for w in stem.split())
        left = r"(?<!\w)" if re.match(r"\w", stem) else ""
        right = r"\w*" if word.endswith("*") else (r"(?!\w)" if re.search(r"\w$", stem) else "")
        parts.append(left + body + right)
    return re.compile("|".join(parts), re.IGNORECASE)


def _getter(path: FieldPath) -> Callable[[_Step], Any]:
    """A compiled read of one field path (see `domain.policy.FieldPath`); None when absent."""
    if path.startswith("source:"):
        want = tuple(path.removeprefix("source:").split("/", 2))
        size = len(want)

        def has_source(step: _Step) -> Any:
            for s in step.context.sources:
                if (s.system, s.kind, s.id)[:size] == want:
                    return True
            return None

        return has_source
    if path == "action.output":
        return lambda step: step.output  # an edit's output, when an edit is routed
    root, *rest = path.split(".")
    if root == "action" and rest[0] == "params":
        start: Callable[[_Step], Any] = lambda step: step.proposal.data.action.params  # noqa: E731
        rest = rest[1:]
    else:
        start = _ROOTS[root]

    def value(step: _Step) -> Any:
        node = start(step)
        for part in rest:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, BaseModel):
                node = getattr(node, part, None)
            else:
                return None
        return node

    return value


_ROOTS: dict[str, Callable[[_Step], Any]] = {
    "input": lambda s: s.context.input,
    "action": lambda s: s.proposal.data.action,
    "signal": lambda s: s.proposal.data.signal,
    "rollback": lambda s: s.proposal.data.rollback,
}


def _absent(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def _conditions(when: When, policy: Policy) -> tuple[list[_Condition], list[_Condition]]:
    """(gate, rest): the workflow and verb conditions rules are bucketed by, and the others."""
    gate: list[_Condition] = []
    rest: list[_Condition] = []

    def listed(target: list[_Condition], name: str, values: tuple[str, ...], attr: str) -> None:
        if values:
            holds = _names(values)
            target.append(
                _Condition(
                    name,
                    "one of " + ", ".join(values),
                    lambda s: holds(getattr(s, attr)),
                    lambda s: repr(getattr(s, attr)),
                )
            )

    listed(gate, "workflows", when.workflows, "workflow")
    listed(gate, "verbs", when.verbs, "verb")
    listed(rest, "target_systems", when.target_systems, "system")
    listed(rest, "target_kinds", when.target_kinds, "kind")
    listed(rest, "reason_codes", when.reason_codes, "reason_code")
    if when.public_facing is not None:
        wanted = when.public_facing
        whole_systems = frozenset(t.system for t in policy.public_targets if t.kind is None)
        pairs = frozenset((t.system, t.kind) for t in policy.public_targets)

        def public(s: _Step) -> bool:
            return (
                s.system in whole_systems
                or (s.system, s.kind) in pairs
                or not PUBLIC_FLAGS.isdisjoint(s.flags)
            )

        rest.append(
            _Condition(
                "public_facing",
                str(wanted).lower(),
                lambda s: public(s) is wanted,
                lambda s: f"{str(public(s)).lower()} (target {s.system}/{s.kind})",
            )
        )
    low, high = when.min_confidence, when.max_confidence
    if low is not None:
        rest.append(
            _Condition(
                "min_confidence",
                f">= {low}",
                lambda s: s.confidence is not None and s.confidence >= low,
                lambda s: str(s.confidence),
            )
        )
    if high is not None:
        rest.append(
            _Condition(
                "max_confidence",
                f"< {high}",
                lambda s: s.confidence is not None and s.confidence < high,
                lambda s: str(s.confidence),
            )
        )
    if when.flags:
        flags = frozenset(when.flags)
        rest.append(
            _Condition(
                "flags",
                "any of " + ", ".join(when.flags),
                lambda s: not flags.isdisjoint(s.flags),
                lambda s: repr(list(s.flags)),
            )
        )
    if when.missing:
        getters = [(p, _getter(p)) for p in when.missing]
        reads = tuple(g for _, g in getters)

        def any_missing(s: _Step) -> bool:
            for read in reads:  # noqa: SIM110 (any() over a generator: ~0.3 µs more, on the hot path)
                if _absent(read(s)):
                    return True
            return False

        rest.append(
            _Condition(
                "missing",
                "any of " + ", ".join(when.missing),
                any_missing,
                lambda s: "missing: " + (", ".join(p for p, g in getters if _absent(g(s))) or "none"),
            )
        )
    if when.no_recovery is not None:
        wanted_none = when.no_recovery
        rest.append(
            _Condition(
                "no_recovery",
                str(wanted_none).lower(),
                lambda s: s.no_recovery is wanted_none,
                lambda s: (
                    f"rollback {s.proposal.data.rollback.method if s.proposal.data.rollback else 'absent'}"
                ),
            )
        )
    if when.words:  # last: the only condition whose cost grows with the text
        rest.append(_word_condition(when.words, when.words_in))
    return gate, rest


def _word_condition(words: tuple[str, ...], scopes: tuple[TextScope, ...]) -> _Condition:
    # A substring find (memchr speed) rules most texts out; only where a stem occurs is
    # its regex (whole-word boundaries, ~10 ns a character) run, from that place on.
    # A phrase is found by its first word (the regex then allows any whitespace between words).
    stems = tuple((w.removesuffix("*").lower().split()[0], _words((w,))) for w in words)
    pattern = _words(words)

    def holds(s: _Step) -> bool:
        text = s.text(scopes)
        for stem, whole in stems:
            at = text.find(stem)
            if at >= 0 and whole.search(text, at):
                return True
        return False

    def shown(s: _Step) -> str:
        for scope in scopes:
            found = pattern.search(s.text((scope,)))
            if found:
                return f"'{found.group(0)}' in {scope}"
        return "none found"

    return _Condition(
        "words", f"any of {', '.join(repr(w) for w in words)} in {'/'.join(scopes)}", holds, shown
    )


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    gate: tuple[_Condition, ...]
    tests: tuple[Callable[[_Step], bool], ...]
    conditions: tuple[_Condition, ...]
    missing: tuple[tuple[str, Callable[[_Step], Any]], ...] = field(default=())


class Router:
    """A policy compiled for evaluation. Build once per policy version; share freely."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.version = policy.version
        self._rules = tuple(self._compile(rule) for rule in policy.rules)
        self._buckets: dict[tuple[str, str], tuple[_Compiled, ...]] = {}

    def _compile(self, rule: Rule) -> _Compiled:
        gate, rest = _conditions(rule.when, self.policy)
        missing = tuple((p, _getter(p)) for p in rule.when.missing)
        return _Compiled(rule, tuple(gate), tuple(c.test for c in rest), (*gate, *rest), missing)

    def _candidates(self, step: _Step) -> tuple[_Compiled, ...]:
        key = (step.workflow, step.verb)
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets.clear()
            found = self._buckets[key] = tuple(r for r in self._rules if all(c.test(step) for c in r.gate))
        return found

    def evaluate(
        self, context: RunContext, proposal: ActionProposed, edit: ActionEdited | None = None
    ) -> Decision:
        """The lane for `proposal` (as `edit` left its output, if given). Pure and idempotent:
        the decision id derives from the evaluated event's id and the policy version."""
        step = _Step(context, proposal, edit.data.output if edit else None)
        matched = []
        for rule in self._candidates(step):
            # Inlined rather than a method call per rule: this loop is the hot path.
            for test in rule.tests:
                if not test(step):
                    break
            else:
                matched.append(rule)
        return self._decide(step, edit or proposal, matched)

    def _decide(self, step: _Step, about: StepEvent, matched: list[_Compiled]) -> Decision:
        rule = matched[0].rule if matched else self.policy.default
        lane: Lane = rule.lane
        reasons: tuple[str, ...] = (rule.reason,)
        contract = self.policy.contracts.get(step.workflow)
        if lane == "auto" and contract and contract.needs_recovery(step.verb) and step.no_recovery:
            lane = "draft_only"
            reasons = (
                *reasons,
                f"draft only, not auto: the {step.workflow} contract asks for a recovery "
                f"path for '{step.verb}' and this step has no rollback method",
            )
        role = rule.role
        if role is None and lane in NEEDS_A_PERSON and contract:
            role = contract.reviewer_role
        missing: dict[str, None] = {}
        for compiled in matched:
            for path, get in compiled.missing:
                if _absent(get(step)):
                    missing[path] = None
        key = f"{about.tenant}\x1f{about.run_id}\x1f{about.event_id}\x1f{self.version}"
        return Decision(
            decision_id="dec-" + hashlib.sha256(key.encode()).hexdigest()[:32],
            rule_id=rule.id,
            matched_rules=tuple(r.rule.id for r in matched),
            policy_version=self.version,
            lane=lane,
            reasons=reasons,
            missing_fields=tuple(missing),
            required_role=role,
        )

    def explain(
        self, context: RunContext, proposal: ActionProposed, edit: ActionEdited | None = None
    ) -> Explanation:
        """Every rule, matched or not, with each condition: what it asks, what the step has."""
        step = _Step(context, proposal, edit.data.output if edit else None)
        verdicts: list[Verdict] = []
        matched: list[_Compiled] = []
        for compiled in self._rules:
            checks = tuple(
                Check(c.name, c.expected, c.actual(step), c.test(step)) for c in compiled.conditions
            )
            ok = all(c.holds for c in checks)
            if ok:
                matched.append(compiled)
            verdicts.append(
                Verdict(compiled.rule.id, compiled.rule.lane, ok, ok and len(matched) == 1, checks)
            )
        default = self.policy.default
        verdicts.append(Verdict(default.id, default.lane, True, not matched, ()))
        return Explanation(self._decide(step, edit or proposal, matched), tuple(verdicts))


def decision_step(decision: Decision, about: StepEvent) -> PolicyDecided:
    """The `policy.decided` step recording `decision` about `about` (a proposal or an edit).

    Its event id is the decision id, so recording the same decision twice is one event."""
    return PolicyDecided(
        type="policy.decided",
        event_id=decision.decision_id,
        run_id=about.run_id,
        tenant=about.tenant,
        occurred_at=about.occurred_at,
        actor=SERVICE,
        step_id=about.step_id,
        data=PolicyDecidedData(
            rule_id=decision.rule_id,
            policy_version=decision.policy_version,
            lane=decision.lane,
            reasons=decision.reasons,
            missing_fields=decision.missing_fields,
            required_role=decision.required_role,
            decision_id=decision.decision_id,
            matched_rules=decision.matched_rules,
            source="service",
        ),
    )
