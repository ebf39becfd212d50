"""The policy engine: each kind of condition matching and not, the recovery guard, ids, edits, explain."""

from __future__ import annotations

from typing import Any

import pytest

from domain.policy import Policy, load_policy
from domain.routing import Router, RunContext, decision_step
from domain.step_values import InputReference, Source
from domain.steps import SERVICE, ActionEdited, ActionProposed, StepEvent
from tests.unit import factories as f

CONTEXT = RunContext.of([f.started(), f.source("pricing")])


def _policy(when: str, *, lane: str = "escalate", extra: str = "") -> Policy:
    return load_policy(
        f'public_targets = [{{ system = "github", kind = "file" }}, {{ system = "webflow" }}]\n{extra}\n'
        f'[[rules]]\nid = "rule"\nlane = "{lane}"\nreason = "the rule"\nwhen = {{ {when} }}\n'
        '[default]\nlane = "review"\nreason = "default"\n'
    )


def _proposal(**kw: Any) -> ActionProposed:
    step = f.proposed(**kw)
    assert isinstance(step, ActionProposed)
    return step


def _rule(when: str, context: RunContext = CONTEXT, **proposal: Any) -> str:
    """The rule that routes a proposal under a policy of one rule and the default."""
    return Router(_policy(when)).evaluate(context, _proposal(**proposal)).rule_id


# --- each condition, matching and not -----------------------------------------------------------

CASES = [
    # (condition, proposal that matches, proposal that does not)
    ('workflows = ["lead-followup"]', {}, {"__context": RunContext("support-triage")}),
    ('verbs = ["send_email"]', {}, {"verb": "send_sms"}),
    ('verbs = ["delete*"]', {"verb": "delete_contact"}, {"verb": "undelete"}),
    ('target_systems = ["gmail"]', {}, {"target": {"system": "hubspot", "kind": "contact", "id": "c"}}),
    ('target_kinds = ["contact"]', {}, {"target": {"system": "gmail", "kind": "thread", "id": "t"}}),
    ("public_facing = true", {"target": {"system": "github", "kind": "file", "id": "a.md"}}, {}),
    ("public_facing = true", {"target": {"system": "webflow", "kind": "page", "id": "p"}}, {}),
    ("public_facing = true", {"flags": ["public"]}, {"flags": ["internal"]}),
    ("public_facing = false", {}, {"target": {"system": "github", "kind": "file", "id": "a.md"}}),
    ("min_confidence = 0.8", {"confidence": 0.8}, {"confidence": 0.79}),
    ("min_confidence = 0.0", {"confidence": 0.0}, {"confidence": None}),
    ("max_confidence = 0.5", {"confidence": 0.49}, {"confidence": 0.5}),
    ("max_confidence = 0.5", {"confidence": 0.0}, {"confidence": None}),
    ('reason_codes = ["pricing"]', {"reason_code": "pricing"}, {"reason_code": "other"}),
    ('reason_codes = ["billing.*"]', {"reason_code": "billing.refund"}, {"reason_code": None}),
    ('flags = ["vip", "legal"]', {"flags": ["x", "legal"]}, {"flags": ["x"]}),
    ('words = ["refund"]', {"output": "A Refund is due."}, {"output": "refunded already"}),
    ('words = ["refund*"]', {"output": "refunded already"}, {"output": "nonrefundable"}),
    ('words = ["will roll out"]', {"output": "we WILL\n roll  out soon"}, {"output": "will rollout"}),
    ('words = ["/month"]', {"output": "$24/seat/month"}, {"output": "monthly"}),
    (
        'words = ["urgent"], words_in = ["params"]',
        {"params": {"tags": ["x", "Urgent"]}},
        {"output": "urgent"},
    ),
    ('words = ["urgent"], words_in = ["params"]', {"params": {"urgent": 1}}, {"params": {"a": {"b": "no"}}}),
    ('words = ["42"], words_in = ["params"]', {"params": {"n": 42}}, {"params": {"n": 421}}),
    ('words = ["lead-42"], words_in = ["input"]', {}, {"__context": RunContext("lead-followup")}),
    ('words = ["40 eur"], words_in = ["sources"]', {}, {"__context": RunContext("lead-followup")}),
    ('missing = ["action.params.account.owner"]', {}, {"params": {"account": {"owner": "maria"}}}),
    (
        'missing = ["action.params.account.owner"]',
        {"params": {"account": {"owner": ""}}},
        {"params": {"account": {"owner": "m"}}},
    ),
    ('missing = ["signal.reason_code"]', {}, {"reason_code": "pricing"}),
    (
        'missing = ["input.uri"]',
        {"__context": RunContext("w", InputReference(system="a", kind="b", id="c"))},
        {},
    ),
    ('missing = ["rollback.ref"]', {"rollback": {"method": "revert"}}, {}),
    ('missing = ["source:cms/page/pricing"]', {"__context": RunContext("w")}, {}),
    ('missing = ["source:cms/page"]', {"__context": RunContext("w")}, {}),
    ('missing = ["action.output"]', {"output": ""}, {}),
    ("no_recovery = true", {"rollback": None}, {}),
    ("no_recovery = true", {"rollback": {"method": "none", "runbook": "apologise"}}, {}),
    ("no_recovery = false", {}, {"rollback": {"method": "none"}}),
]


@pytest.mark.parametrize(("when", "matching", "other"), CASES, ids=[c[0] for c in CASES])
def test_a_condition_matches_what_it_names_and_nothing_else(
    when: str, matching: dict[str, Any], other: dict[str, Any]
) -> None:
    yes, no = dict(matching), dict(other)
    assert _rule(when, yes.pop("__context", CONTEXT), **yes) == "rule"
    assert _rule(when, no.pop("__context", CONTEXT), **no) == "default"


def test_every_condition_of_a_rule_must_hold() -> None:
    when = 'verbs = ["send_email"], min_confidence = 0.9'
    assert _rule(when, confidence=0.95) == "rule"
    assert _rule(when, confidence=0.5) == "default"
    assert _rule(when, confidence=0.95, verb="send_sms") == "default"


def test_input_words_include_what_the_run_recorded_of_its_input_record() -> None:
    ticket = Source(system="zendesk", kind="ticket", id="T-1", excerpt="Please CANCEL my plan")
    other = Source(system="zendesk", kind="ticket", id="T-2", excerpt="cancel")
    ref = InputReference(system="zendesk", kind="ticket", id="T-1")
    when = 'words = ["cancel*"], words_in = ["input"]'
    assert _rule(when, RunContext("support-triage", ref, (ticket,))) == "rule"
    assert _rule(when, RunContext("support-triage", ref, (other,))) == "default"


# --- the decision -------------------------------------------------------------------------------


def test_the_first_matching_rule_routes_and_every_match_is_recorded() -> None:
    policy = load_policy(
        """
        [[rules]]
        id = "a"
        lane = "review"
        role = "sales-lead"
        reason = "emails are reviewed"
        when = { verbs = ["send_email"], missing = ["signal.reason_code", "action.params.to"] }
        [[rules]]
        id = "b"
        lane = "auto"
        reason = "never reached first"
        [[rules]]
        id = "c"
        lane = "block"
        reason = "not matching"
        when = { verbs = ["delete"] }
        [default]
        lane = "review"
        reason = "default"
        """.replace("        ", "")
    )
    decision = Router(policy).evaluate(CONTEXT, _proposal())
    assert (decision.rule_id, decision.matched_rules, decision.lane) == ("a", ("a", "b"), "review")
    assert (decision.required_role, decision.reasons) == ("sales-lead", ("emails are reviewed",))
    assert decision.missing_fields == ("signal.reason_code", "action.params.to")
    assert decision.policy_version == policy.version


def test_no_matching_rule_takes_the_default() -> None:
    decision = Router(_policy('verbs = ["x"]')).evaluate(CONTEXT, _proposal())
    assert (decision.rule_id, decision.matched_rules, decision.lane) == ("default", (), "review")


CONTRACT = """
[contracts.lead-followup]
reviewer_role = "sales-lead"
recovery = ["send_email"]
"""


@pytest.mark.parametrize("rollback", [None, {"method": "none", "runbook": "say sorry"}])
def test_an_action_without_recovery_never_lands_in_auto_where_its_contract_asks_for_one(
    rollback: Any,
) -> None:
    router = Router(_policy('verbs = ["send_email"]', lane="auto", extra=CONTRACT))
    decision = router.evaluate(CONTEXT, _proposal(rollback=rollback))
    assert (decision.rule_id, decision.lane) == ("rule", "draft_only")
    assert "the lead-followup contract asks for a recovery path for 'send_email'" in decision.reasons[1]
    assert router.evaluate(CONTEXT, _proposal()).lane == "auto"  # with a rollback link it may


def test_without_a_recovery_clause_auto_stays_auto() -> None:
    router = Router(_policy('verbs = ["send_email"]', lane="auto"))
    assert router.evaluate(CONTEXT, _proposal(rollback=None)).lane == "auto"


@pytest.mark.parametrize(
    ("lane", "role"), [("review", "sales-lead"), ("escalate", "sales-lead"), ("auto", None)]
)
def test_a_lane_that_needs_a_person_takes_the_contracts_reviewer_role_by_default(
    lane: str, role: str
) -> None:
    router = Router(_policy('verbs = ["send_email"]', lane=lane, extra=CONTRACT))
    assert router.evaluate(CONTEXT, _proposal()).required_role == role


def test_the_decision_id_derives_from_the_event_and_the_policy_version() -> None:
    proposal = _proposal()
    one, other = Router(_policy('verbs = ["x"]')), Router(_policy('verbs = ["y"]'))
    assert one.evaluate(CONTEXT, proposal) == Router(_policy('verbs = ["x"]')).evaluate(CONTEXT, proposal)
    assert one.evaluate(CONTEXT, proposal).decision_id != other.evaluate(CONTEXT, proposal).decision_id
    assert one.evaluate(CONTEXT, proposal).decision_id != one.evaluate(CONTEXT, _proposal()).decision_id


def test_an_edit_is_routed_on_its_own_output_with_its_own_id() -> None:
    router = Router(_policy('words = ["price*"], words_in = ["output"]'))
    proposal = _proposal(output="Hi Ana, thanks for writing.")
    edit = f.edited(output="Hi Ana, our price is 40 EUR.", base="Hi Ana, thanks for writing.")
    assert isinstance(edit, ActionEdited)
    before, after = router.evaluate(CONTEXT, proposal), router.evaluate(CONTEXT, proposal, edit)
    assert (before.rule_id, after.rule_id) == ("default", "rule")
    assert before.decision_id != after.decision_id


def test_decision_step_is_the_services_policy_decided_with_the_decision_id_as_event_id() -> None:
    proposal = _proposal(run_id="run-9", tenant="acme", at=f.at(2))
    decision = Router(_policy('verbs = ["send_email"]')).evaluate(CONTEXT, proposal)
    step: StepEvent = decision_step(decision, proposal)
    assert (step.event_id, step.run_id, step.tenant, step.step_id) == (
        decision.decision_id,
        "run-9",
        "acme",
        f.STEP,
    )
    assert (step.actor, step.occurred_at) == (SERVICE, f.at(2))
    data = step.data  # type: ignore[attr-defined]
    assert (data.source, data.decision_id, data.rule_id, data.lane) == (
        "service",
        decision.decision_id,
        "rule",
        "escalate",
    )
    assert data.matched_rules == ("rule",) and data.policy_version == decision.policy_version


# --- explain ------------------------------------------------------------------------------------


def test_explain_lists_every_rule_with_what_held_and_what_did_not() -> None:
    policy = _policy('verbs = ["send_email"], min_confidence = 0.9, words = ["refund"]')
    explanation = Router(policy).explain(CONTEXT, _proposal(confidence=0.95, output="no words here"))
    rule, default = explanation.rules
    assert (rule.rule_id, rule.matched, rule.routed) == ("rule", False, False)
    assert [(c.condition, c.holds, c.actual) for c in rule.checks] == [
        ("verbs", True, "'send_email'"),
        ("min_confidence", True, "0.95"),
        ("words", False, "none found"),
    ]
    assert rule.checks[2].expected == "any of 'refund' in input/output/params"
    assert (default.rule_id, default.matched, default.routed) == ("default", True, True)
    routed = Router(policy).explain(CONTEXT, _proposal(confidence=0.95, output="a refund"))
    assert [(v.rule_id, v.matched, v.routed) for v in routed.rules] == [
        ("rule", True, True),
        ("default", False, False),
    ]
    assert explanation.decision == Router(policy).evaluate(
        CONTEXT, _proposal(confidence=0.95, output="x")
    )._replace(decision_id=explanation.decision.decision_id)


def test_explain_names_the_word_and_where_it_was_found() -> None:
    explanation = Router(_policy('words = ["refund*"]')).explain(CONTEXT, _proposal(output="A refund, today"))
    assert explanation.rules[0].routed and explanation.rules[0].checks[0].actual == "'refund' in output"
    assert not explanation.rules[1].routed
