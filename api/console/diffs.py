"""Unified diffs of a step's versions, for the console (server-side: no script needed).

A step's output is a chain of versions: the draft as proposed, then each edit,
each made on the one before it. A reviewer reads every link of the chain
(proposed -> edited -> current) and, before submitting an edit, the diff of the
current version to the text being submitted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from domain.receipt_model import StepReceipt

LineKind = Literal["header", "hunk", "added", "removed", "same"]


@dataclass(frozen=True, slots=True)
class Diff:
    before: str  # labels: which version each side is
    after: str
    lines: tuple[tuple[LineKind, str], ...]  # empty: the two texts are the same

    @property
    def same(self) -> bool:
        return not self.lines


def unified(old: str, new: str, before: str, after: str) -> Diff:
    found = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), before, after, lineterm=""
    )
    return Diff(before, after, tuple((_kind(line), line.rstrip("\n")) for line in found))


def _kind(line: str) -> LineKind:
    if line.startswith(("---", "+++")):
        return "header"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "added", "-": "removed"}.get(line[:1], "same")  # type: ignore[return-value]


def version_chain(step: StepReceipt) -> list[Diff]:
    """The diff of each edit from the version it was made on: proposed -> edit 1 -> ..."""
    previous, label = step.output.draft or "", "proposed"
    chain = []
    for number, edit in enumerate(step.output.edits, start=1):
        name = f"edit {number} by {edit.editor.id}"
        chain.append(unified(previous, edit.output, label, name))
        previous, label = edit.output, name
    return chain


def current_text(step: StepReceipt) -> str:
    """The text a decision is on now: the last edit, else the draft."""
    edits = step.output.edits
    return edits[-1].output if edits else step.output.draft or ""
