"""A bucket's rules compiled into one function: which of them match a step.

`Router` evaluates, for every proposed step, each rule of its (workflow, verb)
bucket, every condition of each until one fails. As closures that is a call per
condition, a loop per rule and a dictionary of texts and answers per step; here
the bucket becomes one generated function, each rule an `if` over its
conditions' inline expressions, in the same order, with the step's texts and
each word's answer in local variables, built on first use: a word two rules look
for in the same place is searched once. Conditions without an inline form
(missing fields, recovery) are called. It answers exactly as the conditions'
`test`s do (tests/unit/test_matcher.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from domain.conditions import Condition, StepView, params_text


class Compiled(Protocol):
    @property
    def rest(self) -> tuple[Condition, ...]:
        """The conditions beyond the bucket's workflow and verb, in the order they are tried."""


R = TypeVar("R", bound=Compiled)


def _found_from(text: str, stem: str, whole: re.Pattern[str]) -> bool:
    """Whether the word is in `text`, once its stem is: its regex from the stem's first place."""
    return whole.search(text, text.find(stem)) is not None


# Each scope's lower-cased text, as `StepView.text` builds it: the step's own texts here, the
# run's (input and sources) from the run context once `text` has kept them there.
_SCOPES = {
    "output": "s.output.lower()",
    "params": "_params_text(s).lower()",
    "input": "(s.context.texts.get('input') or s.text('input', ('input',)))",
    "sources": "(s.context.texts.get('sources') or s.text('sources', ('sources',)))",
}


class _Writer:
    """The generated function's text and the names it reads, each written once."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"_found_from": _found_from, "_params_text": params_text}
        self.locals: dict[object, str] = {}  # what a local variable holds -> its name

    def bind(self, value: Any) -> str:
        name = f"_v{len(self.names)}"
        self.names[name] = value
        return name

    def cached(self, what: object, build: str) -> str:
        """An expression for `build`, evaluated once per call into a local variable."""
        name = self.locals.get(what)
        if name is None:
            name = self.locals[what] = f"_l{len(self.locals)}"
        return f"({name} if {name} is not None else ({name} := {build}))"

    def text(self, scopes: tuple[str, ...]) -> str:
        if len(scopes) == 1:
            scope = scopes[0]
            return self.cached(("text", scope), _SCOPES[scope])
        parts = ", ".join(self.text((scope,)) for scope in scopes)
        return self.cached(("text", scopes), f'"\\n".join(({parts}))')

    def words(self, condition: Condition, shared: set[object]) -> str:
        text = self.text(condition.scopes)
        found = []
        for word, stem, whole in condition.words:
            search = f"({stem!r} in {text} and _found_from({text}, {stem!r}, {self.bind(whole)}))"
            what = ("word", condition.scopes, word)
            # Kept in a local only when another rule of the bucket asks the same.
            found.append(self.cached(what, search) if what in shared else search)
        return "(" + " or ".join(found) + ")"

    def condition(self, condition: Condition, shared: set[object]) -> str:
        if condition.words:
            return self.words(condition, shared)
        if condition.inline is None:
            return f"{self.bind(condition.test)}(s)"
        names = {key: self.bind(value) for key, value in condition.bound.items()}
        return "(" + condition.inline.format(**names) + ")"


def matcher(rules: Sequence[R]) -> Callable[[StepView], list[R]]:
    """A function giving the rules of `rules` that match a step, in their order."""
    writer = _Writer()
    asked = Counter(("word", c.scopes, word) for rule in rules for c in rule.rest for word, _, _ in c.words)
    shared: set[object] = {what for what, times in asked.items() if times > 1}
    body = []
    for rule in rules:
        tests = [writer.condition(condition, shared) for condition in rule.rest]
        body.append(f"    if {' and '.join(tests) or 'True'}:")
        body.append(f"        matched.append({writer.bind(rule)})")
    start = [f"    {name} = None" for name in writer.locals.values()]
    source = "\n".join(["def match(s):", "    matched = []", *start, *body, "    return matched"])
    exec(compile(source, "<policy bucket>", "exec"), writer.names)
    match: Callable[[StepView], list[R]] = writer.names["match"]
    return match
