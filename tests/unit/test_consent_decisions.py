"""A customer's consent as a decision in the live path: the queue rule (a consented step on a
lane whose contract accepts consent waits for nobody) and the approval notice it becomes."""

from __future__ import annotations

from typing import Any

import pytest

from domain.approvals import Decider, Decision, consent_decision, refusal, waiting
from domain.contracts import ContractLookup
from domain.notices import DecisionNotice, notices
from domain.policy import Contract, sample_policy
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.steps import SERVICE, StepEvent, content_hash
from infra.handles import CUSTOMER
from infra.publisher import Publisher
from projections.queue import queue_items
from schemas import Codec
from tests.fakes import FakeProducer
from tests.unit import factories as f
from tests.unit.test_sample_policy import RUNS, ingested

ACCEPTS = Contract(accepts_consent=True)
REFUSES = Contract()
EDIT = f.DRAFT + "Best, Maria\n"
VERSION = "2025.03"


def _service(lane: str = "review", **kw: Any) -> StepEvent:
    return f.policy(lane=lane, source="service", by=SERVICE, policy_version=VERSION, **kw)


def _receipt(*steps: StepEvent) -> Receipt:
    return render(f.entries(f.started(at=f.at(0)), *steps))


def _yes(**kw: Any) -> StepEvent:
    return f.consent(text="Yes, send it", event_id="yes-1", **kw)


# --- the queue rule ------------------------------------------------------------------------------


def test_a_consented_step_on_an_accepting_lane_waits_for_nobody_and_names_its_consent() -> None:
    step = _receipt(f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1))).steps[0]
    assert not waiting(step, accepts_consent=True)
    consent = consent_decision(step, accepts_consent=True)
    assert consent is not None and (consent.event_id, consent.text) == ("yes-1", "Yes, send it")
    # Where the contract does not accept it, the step still waits for a person.
    assert waiting(step, accepts_consent=False) and consent_decision(step, False) is None


def test_the_earliest_consent_decides_whatever_order_they_arrived_in() -> None:
    later = f.consent(text="ok", event_id="yes-late", at=f.at(2))
    step = _receipt(f.proposed(at=f.at(2)), _service(at=f.at(3)), later, _yes(at=f.at(1))).steps[0]
    assert consent_decision(step, True).event_id == "yes-1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("after", "why"),
    [
        ([f.reviewed(decision="rejected", comment="no", at=f.at(4))], "a person decided first"),
        ([f.reviewed(at=f.at(4))], "a person approved first"),
        ([f.executed(at=f.at(4))], "it was executed"),
        ([f.expired(deadline=f.at(4))], "its wait expired"),
    ],
)
def test_a_consent_decides_nothing_a_person_the_deadline_or_an_execution_closed(
    after: list[StepEvent], why: str
) -> None:
    step = _receipt(f.proposed(at=f.at(2)), _service(at=f.at(3)), *after, _yes(at=f.at(5))).steps[0]
    assert consent_decision(step, True) is None, why
    assert not waiting(step, True)


@pytest.mark.parametrize("lane", ["auto", "draft_only", "block"])
def test_a_consent_decides_nothing_on_a_lane_that_needs_nobody(lane: str) -> None:
    step = _receipt(f.proposed(at=f.at(2)), _service(lane, at=f.at(3)), _yes(at=f.at(1))).steps[0]
    assert consent_decision(step, True) is None


def test_a_consent_the_lane_does_not_accept_leaves_the_refusal_rules_as_they_are() -> None:
    step = _receipt(f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1))).steps[0]
    kim = Decider("kim", frozenset({"sales-lead"}))
    assert refusal(step, kim, Decision("approve", content_hash(f.DRAFT)), f.at(5)) is None
    nobody = Decider("dana", frozenset())
    found = refusal(step, nobody, Decision("approve", content_hash(f.DRAFT)), f.at(5))
    assert found is not None and found.rule == "role_required"


@pytest.mark.parametrize("verdict", ["approve", "reject", "escalate"])
def test_a_step_the_accepted_consent_decided_takes_no_second_final_word(verdict: str) -> None:
    """The platform was already told "approved": a reviewer cannot contradict it afterwards."""
    step = _receipt(f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1))).steps[0]
    kim = Decider("kim", frozenset({"sales-lead"}))
    asked = Decision(verdict, content_hash(f.DRAFT), comment="no")  # type: ignore[arg-type]
    found = refusal(step, kim, asked, f.at(5), accepts_consent=True)
    assert found is not None and found.rule == "already_decided"
    assert "consent" in found.detail


def test_the_queue_drops_a_consented_step_where_the_contract_accepts_it_and_shows_it_elsewhere() -> None:
    other = "run-1/step-2"
    receipt = _receipt(
        f.proposed(at=f.at(2)),
        _service(at=f.at(3)),
        _yes(at=f.at(1)),
        f.proposed(other, at=f.at(4)),
        _service(step_id=other, at=f.at(4)),
    )
    assert [item.step_id for _, item in queue_items(receipt, ACCEPTS)] == [other]
    items = [item for _, item in queue_items(receipt, REFUSES)]
    assert [item.step_id for item in items] == [f.STEP, other]
    (consent,) = items[0].consents
    assert (consent.text, consent.at, consent.given_by) == ("Yes, send it", f.at(1), f.CUSTOMER)
    assert "yes-1" in items[0].event_ids and items[1].consents == []
    assert [item.step_id for _, item in queue_items(receipt)] == [f.STEP, other]  # no contract


# --- the notice ----------------------------------------------------------------------------------


def _lookup(contract: Contract | None) -> ContractLookup:
    def lookup(version: str, workflow: str) -> Contract | None:
        return contract if (version, workflow) == (VERSION, "lead-followup") else None

    return lookup


def _notices(contract: Contract | None, *steps: StepEvent) -> list[tuple[int, DecisionNotice]]:
    history = f.entries(f.started(at=f.at(0)), *steps)
    return list(notices(history, history, _lookup(contract)))


def test_a_consent_after_the_lane_decision_is_an_approval_naming_the_consent() -> None:
    found = _notices(ACCEPTS, f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1)))
    assert [(v, n.kind, n.outcome, n.final) for v, n in found] == [
        (3, "lane", "pending", False),
        (4, "consent", "approved", True),
    ]
    approval = found[-1][1]
    assert (approval.decision_id, approval.comment) == ("yes-1", "Yes, send it")
    assert approval.decided_by == f.CUSTOMER
    assert (approval.version_hash, approval.occurred_at) == (content_hash(f.DRAFT), f.at(1))
    assert (approval.lane, approval.rule_id, approval.policy_version) == ("review", "R-lead-email", VERSION)


def test_a_consent_before_the_lane_decision_is_told_in_its_place_once() -> None:
    """One notice a log entry: nothing pends once the customer consented."""
    again = _service(at=f.at(5), event_id="decided-again")  # the edit decided again: news
    found = _notices(
        ACCEPTS,
        _yes(at=f.at(1)),
        f.proposed(at=f.at(2)),
        _service(at=f.at(3)),
        f.consent(text="really, yes", at=f.at(4)),
        f.edited(output=EDIT, by=f.AGENT, at=f.at(5)),
        again,
    )
    assert [(v, n.kind, n.outcome, n.decision_id) for v, n in found] == [
        (4, "consent", "approved", "yes-1"),
        (7, "lane", "pending", "decided-again"),
    ]


@pytest.mark.parametrize("contract", [REFUSES, None])
def test_a_consent_the_lane_does_not_accept_tells_nothing(contract: Contract | None) -> None:
    found = _notices(contract, f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1)))
    assert [n.kind for _, n in found] == ["lane"]


def test_no_contract_lookup_means_no_consent_decisions() -> None:
    history = f.entries(f.started(at=f.at(0)), f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes())
    assert [n.kind for _, n in notices(history, history)] == ["lane"]


def test_a_consent_after_a_person_decided_or_the_step_ran_tells_nothing() -> None:
    rejected = f.reviewed(decision="rejected", comment="no", at=f.at(4))
    assert [n.outcome for _, n in _notices(ACCEPTS, f.proposed(), _service(), rejected, _yes())] == [
        "pending",
        "rejected",
    ]
    ran = _notices(ACCEPTS, f.proposed(), _service(), f.executed(at=f.at(4)), _yes(at=f.at(5)))
    assert [n.kind for _, n in ran] == ["lane"]


def test_consent_notices_are_the_same_on_replay_and_only_those_of_the_new_entries() -> None:
    history = f.entries(f.started(at=f.at(0)), f.proposed(at=f.at(2)), _service(at=f.at(3)), _yes(at=f.at(1)))
    lookup = _lookup(ACCEPTS)
    later = list(notices(history, history[-1:], lookup))
    assert [(v, n.decision_id) for v, n in later] == [(4, "yes-1")]
    assert later == list(notices(history, history[-1:], lookup))
    assert [n.kind for _, n in notices(history, history[:3], lookup)] == ["lane"]


# --- the publisher and the demo ------------------------------------------------------------------


def test_a_platform_records_the_consent_it_collected_with_the_customer_s_words_and_time() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer=producer, encoding="json")
    with publisher.run("order-support", run_id="r") as run:
        step = run.propose("change_address", f.TARGET, "shop.update", output="ship to: 12 Park Row")
        yes = step.consent("yes, do it", at=f.at(1), pattern="(?i)yes")
        by_kai = step.consent("ok", by={"kind": "human", "id": "kai", "role": "customer"})
    sent = [Codec().decode(value) for _, _, value in producer.sent]
    first, second = [s for s in sent if s.type == "consent.given"]
    assert first.event_id == yes and step.authorization is None
    assert (first.step_id, first.occurred_at, first.actor) == (step.step_id, f.at(1), CUSTOMER)
    assert (first.data.text, first.data.pattern) == ("yes, do it", "(?i)yes")  # type: ignore[union-attr]
    assert second.event_id == by_kai and second.actor.id == "kai"
    with pytest.raises(ValueError, match="human"):
        step.consent("yes", by={"kind": "agent", "id": "bot"})


def test_the_demo_s_order_change_is_approved_by_the_customer_s_consent() -> None:
    steps = ingested(RUNS["order-change"])
    policy = sample_policy()
    contract = policy.contract_for("order-support")
    assert contract is not None and contract.accepts_consent
    receipt = render(f.entries(steps), contract)
    (step,) = receipt.steps
    (consent,) = step.consents
    assert step.policy is not None and (step.policy.lane, step.policy.source) == ("review", "service")
    assert step.execution is not None and step.execution.authorization_ref == consent.event_id
    assert consent.at < step.timestamps.proposed  # type: ignore[operator]
    assert receipt.gaps() == [] and [x.code for x in receipt.findings] == []
    assert list(queue_items(receipt, contract)) == []
    history = f.entries(steps)
    told = [n for _, n in notices(history, history, lambda v, w: policy.contract_for(w))]
    assert [(n.kind, n.outcome, n.decision_id) for n in told] == [
        ("lane", "pending", step.policy.event_id),
        ("consent", "approved", consent.event_id),
    ]
