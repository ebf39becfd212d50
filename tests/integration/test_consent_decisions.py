"""A customer's consent as a decision, end to end on a real broker and PostgreSQL: the platform
publishes a proposal and the consent it collected (`StepHandle.consent`), ingest routes it by
a policy, and where the lane contract accepts consent the step never waits in the queue, the
platform's waiter gets the approval naming the consent, and the execution relying on it is
clean. Where the contract does not accept it, the step waits for a reviewer and nothing is told."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.bootstrap import build_decision_relay, build_projections, build_publisher, build_queries
from domain.notices import DecisionNotice
from domain.receipt import render_checked
from domain.receipt_model import Receipt
from infra.decisions import NoDecisionYet
from infra.handles import RunHandle, StepHandle
from infra.publisher import Publisher
from infra.settings import Settings
from infra.store import RunStore
from projections.queue import QueueFilter, QueueItem
from projections.reveal import reveal
from tests.integration.helpers import ingest_for, poll_until, read_topic, running_store
from tests.integration.routing import CONSENT_POLICY, routed_by
from tests.unit import factories as f

pytestmark = pytest.mark.integration

ORDER = {"system": "shop", "kind": "order", "id": "1042"}
SAID = "Yes, please ship it to my new address"


@pytest.fixture
def routed(settings: Settings, tmp_path: Path) -> Settings:
    return routed_by(settings, tmp_path, CONSENT_POLICY)


@pytest.fixture
def store(routed: Settings) -> Iterator[RunStore]:
    with running_store(routed) as store:
        yield store


@pytest.fixture
def publisher(routed: Settings) -> Iterator[Publisher]:
    publisher = build_publisher(routed)
    yield publisher
    publisher.close()


def _propose_with_consent(run: RunHandle) -> tuple[StepHandle, str]:
    """The agent asked, the customer said yes (a minute before the tool call), the agent proposed."""
    step = run.propose(
        "change_address", ORDER, "shop.orders.update", output="ship to: 12 Rue Oberkampf", at=f.at(2)
    )
    return step, step.consent(SAID, at=f.at(1), pattern=r"(?i)\byes\b")


def _recorded_and_relayed(settings: Settings, store: RunStore, events: int) -> None:
    """Ingest (routing by the policy), the views, and the decisions relay, all caught up."""
    with ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= events)
    build_projections(settings, store).catch_up()
    relay = build_decision_relay(settings, store)
    relay.start()
    while relay.relay_once():
        pass


def _queue(settings: Settings, store: RunStore) -> list[QueueItem]:
    page = build_queries(settings, store).queue("default", QueueFilter())
    return reveal(store, "default", page, (item.run_id for item in page.items)).items


def _told(settings: Settings, expected: int) -> list[DecisionNotice]:
    assert settings.kafka_bootstrap
    records = read_topic(settings.kafka_bootstrap, settings.decisions_topic, expected)
    return [DecisionNotice.model_validate_json(r.value) for r in records]


def _receipt(store: RunStore, run_id: str) -> Receipt:
    return render_checked(store.run("default", run_id).entries, store.contract)


def test_a_consent_the_lane_accepts_is_the_approval_the_platform_executes_on(
    routed: Settings, store: RunStore, publisher: Publisher
) -> None:
    with publisher.run("order-support", run_id="consented", at=f.at(0)) as run:
        step, yes = _propose_with_consent(run)
        publisher.flush()
        # run.started, the proposal and the consent (and the service's lane decision).
        _recorded_and_relayed(routed, store, 3)
        assert _queue(routed, store) == []

        decision = step.wait_for_decision(timeout=20)
        assert (decision.kind, decision.outcome, decision.final) == ("consent", "approved", True)
        assert (decision.decision_id, decision.comment, decision.lane) == (yes, SAID, "review")
        assert decision.decided_by.role == "customer" and decision.version_hash == step.current_hash
        assert step.authorization == yes

        step.executed("written", external_ref="order-1042@rev7", at=f.at(3))
        run.finish("synced", at=f.at(4))
    publisher.flush()
    _recorded_and_relayed(routed, store, 2)  # a relay started again

    receipt = _receipt(store, "consented")
    (recorded,) = receipt.steps
    assert recorded.execution is not None and recorded.execution.authorization_ref == yes
    codes = {x.code for x in receipt.findings}
    for absent in ("executed_without_approval", "authorization_mismatch", "authorization_unknown"):
        assert absent not in codes, (absent, receipt.findings)
    # Told once, after the lane decision, whose pending the consent answered.
    assert [(n.kind, n.outcome, n.decision_id == yes) for n in _told(routed, 2)] == [
        ("lane", "pending", False),
        ("consent", "approved", True),
    ]


def test_a_consent_the_lane_does_not_accept_leaves_the_step_waiting_and_tells_nothing(
    routed: Settings, store: RunStore, publisher: Publisher
) -> None:
    with publisher.run("crm-notes", run_id="not-accepted", at=f.at(0)) as run:
        step, yes = _propose_with_consent(run)
        publisher.flush()
        _recorded_and_relayed(routed, store, 3)

        (item,) = _queue(routed, store)
        assert (item.run_id, item.step_id, item.lane) == ("not-accepted", step.step_id, "review")
        (consent,) = item.consents
        assert (consent.event_id, consent.text, consent.at) == (yes, SAID, f.at(1))

        with pytest.raises(NoDecisionYet):
            step.wait_for_decision(timeout=1)
        assert step.authorization is None
        run.finish("held", at=f.at(4))
    assert [(n.kind, n.outcome) for n in _told(routed, 1)] == [("lane", "pending")]
