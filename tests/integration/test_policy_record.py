"""`receipts policy explain RUN/STEP` and `receipts policy test FILE` over a recorded corpus:
runs published to Kafka and routed at ingest by the sample policy, then explained and
dry-run from the event store by the `receipts` command itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.bootstrap import migrate
from api.cli import main
from domain.policy import sample_policy, sample_text
from domain.steps import PolicyDecided, StepEvent
from infra.settings import Settings
from infra.store import RunStore
from schemas.codec import Codec
from tests.integration.helpers import cli_env, ingest_for, poll_until, publish_steps, running_store
from tests.unit import factories as f

pytestmark = pytest.mark.integration

LATER = f.at(24 * 60)  # a day after the old runs
SINCE = f.at(12 * 60)
TICKET = {"system": "zendesk", "kind": "ticket", "id": "t-1"}
CANCEL = "The customer asks to cancel the subscription: routed to retention."
# The sample with one change: a lead follow-up missing its context is reviewed, not drafted.
CANDIDATE = sample_text().replace(
    'id = "lead-needs-context"\nlane = "draft_only"', 'id = "lead-needs-context"\nlane = "review"'
)


def _lead(run_id: str, at: Any, edit_at: Any = None) -> list[StepEvent]:
    """Sample policy: no hubspot form among its sources, so `lead-needs-context` drafts it."""
    where: dict[str, Any] = {"run_id": run_id, "step_id": f"{run_id}/s1"}
    steps = [
        f.started(run_id, at=at),
        f.source("pricing", run_id=run_id, at=at),
        f.proposed(at=at, **where),
    ]
    if edit_at is not None:
        steps.append(f.edited(at=edit_at, **where))
    return steps


def _triage(run_id: str, at: Any) -> list[StepEvent]:
    """Sample policy: the ticket mentions cancellation, so it escalates."""
    where: dict[str, Any] = {"run_id": run_id, "step_id": f"{run_id}/s1"}
    return [
        f.started(run_id, workflow="support-triage", input=TICKET, at=at),
        f.proposed(verb="route_ticket", target=TICKET, output=CANCEL, at=at, **where),
    ]


CORPUS = [
    *_lead("lead-old", f.at(0)),
    *_lead("lead-new-1", LATER),
    *_lead("lead-new-2", LATER),
    *_lead("lead-edited", f.at(0), edit_at=LATER),
    *_triage("triage-old", f.at(0)),
    *_triage("triage-new", LATER),
]


@pytest.fixture
def store(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RunStore]:
    migrate(settings)  # as `up` leaves them; a principal's token for the CLI
    cli_env(
        monkeypatch, settings, TOPIC=settings.topic, GROUP=settings.group, DATA_DIR=str(tmp_path / "data")
    )
    publish_steps(settings, CORPUS)
    with running_store(settings) as store:
        with ingest_for(settings, store) as ingest:  # the sample policy: none is configured
            poll_until(ingest, lambda: ingest.totals.recorded >= len(CORPUS))
        yield store


def _receipts(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_test_counts_exactly_over_the_store(
    store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(CANDIDATE, encoding="utf-8")
    code, out, _ = _receipts(capsys, "policy", "test", str(candidate), "--json")
    every = json.loads(out)
    assert code == 0
    assert (every["runs"], every["proposed"], every["compared"], every["changed"], every["undecided"]) == (
        6,
        6,
        6,
        4,
        0,
    )
    assert every["transitions"] == [{"from": "draft_only", "to": "review", "steps": 4}]
    assert {e["run_id"] for e in every["examples"]} == {"lead-old", "lead-new-1", "lead-new-2", "lead-edited"}
    assert {e["recorded_by"] for e in every["examples"]} == {"service"}

    # Since: the old runs drop out; the old proposal edited later counts (on its edit).
    code, out, _ = _receipts(capsys, "policy", "test", str(candidate), "--since", SINCE.isoformat(), "--json")
    recent = json.loads(out)
    assert (recent["runs"], recent["proposed"], recent["changed"]) == (4, 4, 3)
    assert {e["run_id"] for e in recent["examples"]} == {"lead-new-1", "lead-new-2", "lead-edited"}

    # The policy in force changes nothing; the text form says so.
    sample = tmp_path / "sample.toml"
    sample.write_text(sample_text(), encoding="utf-8")
    code, out, _ = _receipts(capsys, "policy", "test", str(sample))
    assert code == 0 and "would change lane: 0 of 6 with a recorded decision (6 unchanged)" in out


def test_explain_a_recorded_step_by_step_id_event_id_or_decision_id(
    store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    version = sample_policy().version
    code, out, _ = _receipts(capsys, "policy", "explain", "lead-edited/lead-edited/s1")
    assert code == 0
    # The step's last version: the edit, by the version its recorded decision names.
    assert f"policy {version} (the recorded decision)" in out
    assert "(action.edited, event" in out and "decision: draft_only by rule lead-needs-context" in out
    assert "[ROUTES] lead-needs-context -> draft_only" in out
    assert "[matches] external-email-review -> review" in out and "[no match] deletes-blocked" in out
    assert "NOTE" not in out  # the policy says what was recorded

    proposal = next(s for s in CORPUS if s.run_id == "triage-new" and s.type == "action.proposed")
    decision = next(
        e.step for e in store.run("default", "triage-new").entries if isinstance(e.step, PolicyDecided)
    )
    for reference in (proposal.event_id, decision.event_id):
        code, out, _ = _receipts(capsys, "policy", "explain", f"triage-new/{reference}", "--json")
        explained = json.loads(out)
        assert code == 0 and explained["event_id"] == proposal.event_id
        assert explained["decision"]["rule_id"] == "cancellation-escalates"
        assert explained["recorded"]["decision_id"] == decision.event_id
        assert explained["recorded"]["policy_version"] == explained["decision"]["policy_version"] == version
        assert [r["rule_id"] for r in explained["rules"]] == [
            *(r.id for r in sample_policy().rules),
            sample_policy().default.id,
        ]
        assert [r["rule_id"] for r in explained["rules"] if r["routed"]] == ["cancellation-escalates"]


def test_a_step_the_service_never_decided_is_explained_by_the_policy_then_in_force(
    store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    codec = Codec()
    by_hand = _lead("by-hand", f.at(0))  # recorded without ingest: no service decision
    store.record((step, codec.encode(step, "json")) for step in by_hand)
    code, out, _ = _receipts(capsys, "policy", "explain", "by-hand/by-hand/s1")
    assert code == 0 and "(in force at " in out
    assert "the service recorded no decision about this step" in out
    assert "decision: draft_only by rule lead-needs-context" in out


def test_unknown_runs_and_steps_are_clear_errors(store: RunStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _receipts(capsys, "policy", "explain", "no-such-run/s1")
    assert (code, out) == (2, "") and "no run 'no-such-run'" in err
    code, out, err = _receipts(capsys, "policy", "explain", "lead-old/no-such-step")
    assert (code, out) == (2, "") and "run 'lead-old' has no proposed or edited step 'no-such-step'" in err
    started = next(s for s in CORPUS if s.run_id == "lead-old")  # a step, but not a proposed one
    code, _, err = _receipts(capsys, "policy", "explain", f"lead-old/{started.event_id}")
    assert code == 2 and "has no proposed or edited step" in err
    code, _, err = _receipts(capsys, "policy", "explain", "lead-old")
    assert code == 2 and "is not RUN/STEP" in err
