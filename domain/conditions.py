"""What a policy rule's conditions look at, compiled once: the step's view and each condition.

`compile_when` turns a rule's `when` table into conditions, each a test (the hot
path: a closure over precomputed sets, regexes and field readers) and a way to
show what the step has (for `explain`). The step's texts are built once per
evaluation, and only if a rule looks at them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from domain.policy import FieldPath, Policy, TextScope, When
from domain.step_values import walk
from domain.steps import ActionProposed

if TYPE_CHECKING:
    from domain.routing import RunContext

PUBLIC_FLAGS = frozenset({"public", "public_facing"})


class StepView:
    """One evaluation's view of the step: plain attributes, texts built only if a rule asks.

    `texts` holds each text built, by its key (a scope's name, or the names of several
    joined by '/')."""

    __slots__ = (
        "confidence",
        "context",
        "flags",
        "kind",
        "output",
        "params",
        "proposal",
        "reason_code",
        "system",
        "texts",
        "verb",
        "workflow",
    )

    def __init__(self, context: RunContext, proposal: ActionProposed, output: str | None) -> None:
        data = proposal.data
        action = data.action
        signal = data.signal
        self.context = context
        self.proposal = proposal
        self.workflow = context.workflow or ""
        self.verb = action.verb
        self.system = action.target.system
        self.kind = action.target.kind
        self.confidence = signal.confidence
        self.reason_code = signal.reason_code
        self.flags = signal.flags
        self.params = action.params
        self.output = action.output if output is None else output
        self.texts: dict[str, str] = {}

    @property
    def no_recovery(self) -> bool:
        rollback = self.proposal.data.rollback
        return rollback is None or rollback.method == "none"

    def text(self, key: str, scopes: tuple[TextScope, ...]) -> str:
        """The scopes' texts (`key` names them), lower-cased, one scope a line (each built
        once per evaluation, and only if a rule looks at it; the run's own texts, input and
        sources, once per run context)."""
        known = self.texts.get(key)
        if known is None:
            if len(scopes) > 1:
                known = "\n".join([self.text(scope, (scope,)) for scope in scopes])
            elif key in _RUN_SCOPES:
                cached = self.context.texts
                known = cached.get(key)
                if known is None:
                    known = cached[key] = _TEXTS[key](self).lower()
            else:
                known = _TEXTS[key](self).lower()
            self.texts[key] = known
        return known


_RUN_SCOPES = frozenset({"input", "sources"})  # what the run recorded before the step: per context


def text_key(scopes: tuple[TextScope, ...]) -> str:
    return "/".join(scopes)


def _input_text(step: StepView) -> str:
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


def params_text(step: StepView) -> str:
    """Keys and values of `params`, one a line; flat values without a walk (the usual tool call)."""
    params = step.params
    try:  # the usual tool call: text values only, one join (a TypeError on any other value)
        return "\n".join([*params, *params.values()])
    except TypeError:
        pass
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


_TEXTS: dict[str, Callable[[StepView], str]] = {
    "input": _input_text,
    "sources": lambda s: "\n".join(x.excerpt or "" for x in s.context.sources),
    "output": lambda s: s.output,
    "params": params_text,
}


# --- conditions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    expected: str
    test: Callable[[StepView], bool]
    actual: Callable[[StepView], str]
    # The test as a Python expression over the step `s`, for `domain.matcher` to write inline
    # (a call per condition is most of a cheap condition's cost); `{x}` is `bound["x"]`.
    # None: the matcher calls `test`. Either way the answer is the same.
    inline: str | None = None
    bound: dict[str, Any] = field(default_factory=dict)
    # A words condition: (word, its lower-cased first word, its whole-word regex) and where to
    # look (the matcher writes the searches inline, each word searched once per step).
    words: tuple[tuple[str, str, re.Pattern[str]], ...] = ()
    scopes: tuple[TextScope, ...] = ()


def _names(pattern: tuple[str, ...]) -> Callable[[str | None], bool]:
    """Membership in a list of names, `x*` matching by prefix; an absent name (None) never matches."""
    exact = frozenset(p for p in pattern if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in pattern if p.endswith("*"))
    if not prefixes:
        return exact.__contains__
    return lambda value: value is not None and (value in exact or value.startswith(prefixes))


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


def field_reader(path: FieldPath) -> Callable[[StepView], Any]:
    """A compiled read of one field path (see `domain.policy.FieldPath`); None when absent."""
    if path.startswith("source:"):
        want = tuple(path.removeprefix("source:").split("/", 2))
        size = len(want)

        def has_source(step: StepView) -> Any:
            for s in step.context.sources:
                if (s.system, s.kind, s.id)[:size] == want:
                    return True
            return None

        return has_source
    if path == "action.output":
        return lambda step: step.output  # an edit's output, when an edit is routed
    root, *rest = path.split(".")
    if root == "action" and rest[0] == "params":
        if len(rest) == 2:  # the usual one, a top-level parameter: one dict look
            name = rest[1]
            return lambda step: step.params.get(name)
        start: Callable[[StepView], Any] = lambda step: step.params  # noqa: E731
        rest = rest[1:]
    else:
        start = _ROOTS[root]

    def value(step: StepView) -> Any:
        return walk(start(step), rest)

    return value


_ROOTS: dict[str, Callable[[StepView], Any]] = {
    "input": lambda s: s.context.input,
    "action": lambda s: s.proposal.data.action,
    "signal": lambda s: s.proposal.data.signal,
    "rollback": lambda s: s.proposal.data.rollback,
}


def is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def compile_when(when: When, policy: Policy) -> tuple[list[Condition], list[Condition]]:
    """(gate, rest): the workflow and verb conditions rules are bucketed by, and the others."""
    gate: list[Condition] = []
    rest: list[Condition] = []

    def listed(target: list[Condition], name: str, values: tuple[str, ...], attr: str) -> None:
        if values:
            holds = _names(values)
            exact = all(not v.endswith("*") for v in values)
            target.append(
                Condition(
                    name,
                    "one of " + ", ".join(values),
                    lambda s: holds(getattr(s, attr)),
                    lambda s: repr(getattr(s, attr)),
                    f"s.{attr} in {{names}}" if exact else f"{{holds}}(s.{attr})",
                    {"names": frozenset(values), "holds": holds},
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

        def public(s: StepView) -> bool:
            return (
                s.system in whole_systems
                or (s.system, s.kind) in pairs
                or not PUBLIC_FLAGS.isdisjoint(s.flags)
            )

        rest.append(
            Condition(
                "public_facing",
                str(wanted).lower(),
                lambda s: public(s) is wanted,
                lambda s: f"{str(public(s)).lower()} (target {s.system}/{s.kind})",
                "(s.system in {whole} or (s.system, s.kind) in {pairs} or not {flags}.isdisjoint(s.flags))"
                " is {wanted}",
                {"whole": whole_systems, "pairs": pairs, "flags": PUBLIC_FLAGS, "wanted": wanted},
            )
        )
    low, high = when.min_confidence, when.max_confidence
    if low is not None:
        rest.append(
            Condition(
                "min_confidence",
                f">= {low}",
                lambda s: s.confidence is not None and s.confidence >= low,
                lambda s: str(s.confidence),
                "s.confidence is not None and s.confidence >= {low}",
                {"low": low},
            )
        )
    if high is not None:
        rest.append(
            Condition(
                "max_confidence",
                f"< {high}",
                lambda s: s.confidence is not None and s.confidence < high,
                lambda s: str(s.confidence),
                "s.confidence is not None and s.confidence < {high}",
                {"high": high},
            )
        )
    if when.flags:
        flags = frozenset(when.flags)
        rest.append(
            Condition(
                "flags",
                "any of " + ", ".join(when.flags),
                lambda s: not flags.isdisjoint(s.flags),
                lambda s: repr(list(s.flags)),
                "not {flags}.isdisjoint(s.flags)",
                {"flags": flags},
            )
        )
    if when.missing:
        getters = [(p, field_reader(p)) for p in when.missing]
        reads = tuple(g for _, g in getters)

        def any_missing(s: StepView) -> bool:
            for read in reads:  # noqa: SIM110 (any() over a generator: ~0.3 µs more, on the hot path)
                if is_missing(read(s)):
                    return True
            return False

        # Inline: `is_missing` written out over each path's value, a top-level parameter read
        # in place (`field_reader` reads it so), any other path by its bound reader.
        bound: dict[str, Any] = {}
        values = []
        for n, path in enumerate(when.missing):
            parts = path.split(".")
            if len(parts) == 3 and parts[:2] == ["action", "params"]:
                bound[f"name{n}"] = parts[2]
                values.append(f"s.params.get({{name{n}}})")
            else:
                bound[f"read{n}"] = reads[n]
                values.append(f"{{read{n}}}(s)")
        inline = " or ".join(
            f"(_m := {value}) is None or _m == '' or (isinstance(_m, (list, tuple, dict)) and not _m)"
            for value in values
        )
        rest.append(
            Condition(
                "missing",
                "any of " + ", ".join(when.missing),
                any_missing,
                lambda s: "missing: " + (", ".join(p for p, g in getters if is_missing(g(s))) or "none"),
                inline,
                bound,
            )
        )
    if when.no_recovery is not None:
        wanted_none = when.no_recovery
        rest.append(
            Condition(
                "no_recovery",
                str(wanted_none).lower(),
                lambda s: s.no_recovery is wanted_none,
                lambda s: (
                    f"rollback {s.proposal.data.rollback.method if s.proposal.data.rollback else 'absent'}"
                ),
                "s.no_recovery is {wanted}",
                {"wanted": wanted_none},
            )
        )
    if when.words:  # last: the only condition whose cost grows with the text
        rest.append(_word_condition(when.words, when.words_in))
    return gate, rest


def _word_condition(words: tuple[str, ...], scopes: tuple[TextScope, ...]) -> Condition:
    # A substring find (memchr speed) rules most texts out; only where a stem occurs is
    # its regex (whole-word boundaries, ~10 ns a character) run, from that place on.
    # A phrase is found by its first word (the regex then allows any whitespace between words).
    key = text_key(scopes)
    searches = tuple((w, w.removesuffix("*").lower().split()[0], _words((w,))) for w in words)
    pattern = _words(words)

    def holds(s: StepView) -> bool:
        text = s.text(key, scopes)
        for _, stem, whole in searches:
            at = text.find(stem)
            if at >= 0 and whole.search(text, at):
                return True
        return False

    def shown(s: StepView) -> str:
        for scope in scopes:
            found = pattern.search(s.text(scope, (scope,)))
            if found:
                return f"'{found.group(0)}' in {scope}"
        return "none found"

    return Condition(
        "words",
        f"any of {', '.join(repr(w) for w in words)} in {'/'.join(scopes)}",
        holds,
        shown,
        words=searches,
        scopes=scopes,
    )
