"""The text and Markdown receipts show each step's policy decision: rule, short version,
reasons, and the platform's own decision beside it when it differs."""

from __future__ import annotations

from api.render import receipt_markdown, receipt_text
from domain.policy import sample_policy
from domain.receipt import render
from domain.routing import Router, decide
from domain.steps import StepEvent
from tests.unit import factories as f

ROUTER = Router(sample_policy())
SHORT = ROUTER.version.removeprefix("sha256:")[:12]


def _with_service_decision(*steps: StepEvent) -> list[StepEvent]:
    """The steps as ingest records them: the service's decision right after the proposal."""
    recorded: list[StepEvent] = []
    for step in steps:
        recorded.append(step)
        decided = decide(ROUTER, recorded[:-1], step)
        if decided is not None:
            recorded.append(decided)
    return recorded


def _policy_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "4. policy rule:" in line)
    end = next(i for i in range(start + 1, len(lines)) if "5. reviewer" in lines[i])
    return lines[start:end]


def test_the_service_s_decision_shows_rule_short_version_and_reasons() -> None:
    run = _with_service_decision(f.started(), f.source(), f.proposed(), f.finished())
    receipt = render(f.entries(run))
    policy = receipt.steps[0].policy
    assert policy is not None and policy.source == "service"
    block = _policy_block(receipt_text(receipt))
    assert block[0] == (
        f"   4. policy rule: {policy.rule_id} (policy {SHORT}) -> lane {policy.lane}"
        f"{', needs ' + policy.required_role if policy.required_role else ''}, by the service's policy"
    )
    assert [line.strip() for line in block[1:]] == [
        *(f"reason: {r}" for r in policy.reasons),
        *([f"missing: {', '.join(policy.missing_fields)}"] if policy.missing_fields else []),
    ]
    assert SHORT in receipt_markdown(receipt) and ROUTER.version not in receipt_text(receipt)


def test_the_platform_s_decision_is_shown_beside_it_when_it_differs() -> None:
    platform = f.policy(lane="auto", rule_id="P-auto", required_role=None, reasons=("the agent is sure",))
    run = _with_service_decision(f.started(), f.source(), f.proposed(), platform, f.finished())
    block = _policy_block(receipt_text(render(f.entries(run))))
    assert "by the service's policy" in block[0]
    at = block.index("      the platform decided otherwise: P-auto (policy 2025.03) -> lane auto")
    assert block[at + 1] == "        reason: the agent is sure"


def test_the_platform_s_decision_is_not_repeated_when_it_agrees() -> None:
    service = decide(ROUTER, [f.started(), f.source()], f.proposed())
    assert service is not None
    same = f.policy(lane=service.data.lane, required_role=service.data.required_role)
    run = _with_service_decision(f.started(), f.source(), f.proposed(), same, f.finished())
    assert not [line for line in _policy_block(receipt_text(render(f.entries(run)))) if "platform" in line]


def test_a_platform_decision_alone_is_named_as_the_platform_s() -> None:
    run = [f.started(), f.source(), f.proposed(), f.policy(), f.finished()]
    block = _policy_block(receipt_text(render(f.entries(run))))
    assert block[0] == (
        "   4. policy rule: R-lead-email (policy 2025.03) -> lane review, needs sales-lead, "
        "by the platform's decision"
    )
    assert block[1] == "      reason: public-facing email"


def test_an_execution_on_the_customer_s_consent_says_so_not_unreviewed() -> None:
    yes = f.consent(text="Yes, send it", event_id="yes-1", at=f.at(1))
    consented = render(f.entries(f.started(), f.proposed(), yes, f.executed(authorization="yes-1")))
    assert "executed: on the customer's consent (" in receipt_text(consented)
    bare = render(f.entries(f.started(), f.proposed(), f.executed()))
    assert "executed: unreviewed" in receipt_text(bare)
