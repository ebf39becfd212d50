"""publish -> Kafka -> ingest -> event store -> receipt, on the real components."""

from __future__ import annotations

import pytest

from api.bootstrap import build_publisher
from api.demo import publish_demo
from infra.rows import read_step_state
from infra.settings import Settings
from tests.integration.helpers import ingest_for, poll_until, running_store, stored_rows

pytestmark = pytest.mark.integration

COMPLETE = ["lead-followup", "support-triage", "pricing-update", "crm-note"]


@pytest.mark.parametrize("encoding", ["avro", "json"])
def test_demo_receipts_fill_the_ten_fields_or_name_the_gap(settings: Settings, encoding: str) -> None:
    settings = settings.model_copy(update={"encoding": encoding})
    publisher = build_publisher(settings)
    run_ids = publish_demo(publisher)
    publisher.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= publisher.published)
        receipts = {
            run_id.removeprefix("demo-"): store.run("default", run_id).receipt() for run_id in run_ids
        }

    for name in COMPLETE:
        receipt = receipts[name]
        assert receipt.gaps() == [], (name, receipt.gaps())
        assert receipt.integrity.verified
        assert not [f for f in receipt.findings if f.severity == "critical"], (name, receipt.findings)

    lead = receipts["lead-followup"]
    (step,) = lead.steps
    assert step.reviews[-1].reviewed_version == "edit 1"
    assert step.output.executed == step.output.approved != step.output.draft
    assert "+SSO is included on Business and above" in (step.output.draft_to_approved_diff or "")

    triage = receipts["support-triage"]
    assert triage.steps[0].policy and triage.steps[0].policy.lane == "escalate"
    assert "cancellation_keyword" in triage.steps[0].signal.flags  # type: ignore[union-attr]

    pricing = receipts["pricing-update"].steps[0]
    assert pricing.reversal and pricing.reversal.reverse_ref == "commit 0c1d2e3 (revert 9f8e7d6)"
    assert pricing.rollback and pricing.rollback.prior_version == "a1b2c3d"

    note = receipts["crm-note"].steps[0]
    assert [r.decision for r in note.reviews] == ["rejected", "approved"]
    assert "approved rollout" in (note.output.draft or "")
    assert "approved rollout" not in (note.output.executed or "")

    failures = receipts["boring-failures"]
    # The platform routed nothing; the service's policy engine did, so no policy_rule gap.
    assert failures.gaps() == ["sources", "reviewer", "rollback_link"]
    assert all(s.policy and s.policy.source == "service" for s in failures.steps)
    codes = {f.code for f in failures.findings}
    # Executed without approval, in a lane the service's policy keeps for a person to send:
    # the finding names the lane (it had no lane before the service routed every step).
    assert {
        "no_source_evidence",
        "executed_in_draft_only",
        "no_rollback_link",
        "edit_not_captured",
    } <= codes


def test_stored_rows_keep_the_bytes_as_published(settings: Settings) -> None:
    publisher = build_publisher(settings)
    with publisher.run("lead-followup", run_id="r-bytes") as run:
        run.finish("abandoned")
    publisher.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 2)
        run_record = store.run("default", "r-bytes")
    rows = stored_rows(settings)
    assert [read_step_state(state).wire for _, _, state in rows] == [e.wire for e in run_record.entries]
    assert [version for _, version, _ in rows] == [1, 2]
