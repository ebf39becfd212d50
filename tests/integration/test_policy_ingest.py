"""The service's policy engine at ingest, on the real components: every proposed step of
the demo runs carries the sample policy's decision in its receipt, beside the platform's."""

from __future__ import annotations

import pytest

from api.bootstrap import build_publisher
from api.demo import publish_demo
from domain.policy import sample_policy
from domain.routing import Router, decide
from domain.steps import PolicyDecided
from infra.settings import Settings
from tests.integration.helpers import ingest_for, poll_until, running_store

pytestmark = pytest.mark.integration


def test_demo_receipts_show_the_service_rule_version_and_lane(settings: Settings) -> None:
    router = Router(sample_policy())
    publisher = build_publisher(settings)
    run_ids = publish_demo(publisher, prefix="pol")
    publisher.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= publisher.published)
        runs = {run_id.removeprefix("pol-"): store.run("default", run_id) for run_id in run_ids}

    decided = 0
    for name, run in runs.items():
        steps = [e.step for e in run.entries]
        for at, step in enumerate(steps):
            expected = decide(router, [s for s in steps[:at] if not _service(s)], step)
            if expected is None:
                continue
            # Right after the step it is about, exactly as the engine decides it.
            assert steps[at + 1] == expected, (name, step.type, step.step_id)
            decided += 1
        for receipt_step in run.receipt().steps:
            policy = receipt_step.policy
            assert policy is not None and policy.source == "service", (name, receipt_step.step_id)
            assert policy.policy_version == router.version and policy.decision_id == policy.event_id
        assert run.receipt().integrity.verified
    assert decided == ingest.totals.decided > len(runs)

    triage = runs["support-triage"].receipt().steps[0]
    assert (triage.policy.rule_id, triage.policy.lane) == ("cancellation-escalates", "escalate")  # type: ignore[union-attr]
    assert triage.policy.required_role == "support-lead"  # type: ignore[union-attr]


def _service(step: object) -> bool:
    return isinstance(step, PolicyDecided) and step.data.source == "service"
