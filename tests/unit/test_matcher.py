"""The generated bucket functions answer exactly as the conditions' closures do: `evaluate`
(generated) and `explain` (closures, condition by condition) agree on every step of the
condition cases, under one policy holding every case as a rule, and words that several
rules look for in the same place are answered for each."""

from __future__ import annotations

from typing import Any

import pytest

from domain.conditions import StepView
from domain.matcher import matcher
from domain.policy import load_policy
from domain.routing import Router, RunContext
from tests.unit import factories as f
from tests.unit.test_routing import CASES, CONTEXT

RULES = "".join(
    f'[[rules]]\nid = "case-{n}"\nlane = "review"\nreason = "case {n}"\nwhen = {{ {when} }}\n'
    for n, (when, _, _) in enumerate(CASES)
)
# Rules that share words (and places) with each other and with the cases, and conjunctions.
SHARED = """
[[rules]]
id = "shared-1"
lane = "escalate"
reason = "shared"
when = { words = ["refund*", "legal", "42"], words_in = ["output", "params"], min_confidence = 0.5 }

[[rules]]
id = "shared-2"
lane = "block"
reason = "shared"
when = { words = ["legal", "/month", "roll out"], missing = ["action.params.account.owner", "input.uri"] }

[[rules]]
id = "owner-missing"
lane = "draft_only"
reason = "a top-level parameter, read in place"
when = { missing = ["action.params.owner", "signal.reason_code"], max_confidence = 0.7 }
"""
ROUTER = Router(
    load_policy(
        'public_targets = [{ system = "github", kind = "file" }, { system = "webflow" }]\n'
        + RULES
        + SHARED
        + '[default]\nlane = "review"\nreason = "default"\n'
    )
)
STEPS = [
    (dict(kw).pop("__context", CONTEXT), {k: v for k, v in kw.items() if k != "__context"})
    for _, matching, other in CASES
    for kw in (matching, other)
]


def _proposal(**kw: Any) -> Any:
    return f.proposed(**kw)


@pytest.mark.parametrize(("context", "proposal"), STEPS)
def test_generated_and_closure_evaluation_agree(context: RunContext, proposal: dict[str, Any]) -> None:
    for confidence in (None, 0.6):
        step = _proposal(**{"confidence": confidence, **proposal})
        explained = ROUTER.explain(context, step)
        assert ROUTER.evaluate(context, step) == explained.decision
        matched = [v.rule_id for v in explained.rules if v.matched and v.rule_id != "default"]
        assert list(explained.decision.matched_rules) == matched


def test_a_shared_word_is_answered_for_every_rule_that_asks() -> None:
    step = _proposal(output="Legal says: no.", confidence=0.9, params={})
    decision = ROUTER.evaluate(RunContext("w"), step)
    assert {"shared-1", "shared-2"} <= set(decision.matched_rules)


def test_a_bucket_without_conditions_matches_every_step() -> None:
    class Bare:
        rest = ()

    bare = Bare()
    match = matcher([bare])
    assert match(StepView(CONTEXT, _proposal(), None)) == [bare]


@pytest.mark.parametrize(
    ("params", "reason_code", "missing"),
    [
        ({}, "r", True),
        ({"owner": ""}, "r", True),
        ({"owner": []}, "r", True),
        ({"owner": {}}, "r", True),
        ({"owner": 0}, "r", False),
        ({"owner": "maria"}, "r", False),
        ({"owner": "maria"}, None, True),
    ],
)
def test_a_missing_top_level_parameter_read_in_place(
    params: dict[str, Any], reason_code: str | None, missing: bool
) -> None:
    step = _proposal(params=params, reason_code=reason_code, confidence=0.5)
    decision = ROUTER.evaluate(CONTEXT, step)
    assert ("owner-missing" in decision.matched_rules) is missing
    assert decision == ROUTER.explain(CONTEXT, step).decision
