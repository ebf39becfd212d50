"""`receipts verify` and `receipts show` on a real store, including a tampered row."""

from __future__ import annotations

import json

import pytest

from api.bootstrap import build_publisher
from api.cli import main
from api.demo import publish_demo
from infra.settings import Settings
from tests.integration.helpers import cli_env, execute, ingest_for, poll_until, running_store

pytestmark = pytest.mark.integration


@pytest.fixture
def demo(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    publisher = build_publisher(settings)
    publish_demo(publisher)
    publisher.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= publisher.published)
    cli_env(monkeypatch, settings, TOPIC=settings.topic)
    return settings


def test_verify_passes_then_names_exactly_the_altered_event(
    demo: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "demo-crm-note"]) == 0
    assert "OK: run demo-crm-note" in capsys.readouterr().out

    with running_store(demo) as store:
        run = store.run("default", "demo-crm-note")
    target = next(e for e in run.entries if e.step.type == "action.reviewed")  # the first review
    # Someone rewrites history in SQL: "rejected" becomes "approved".
    execute(
        demo,
        "UPDATE receipts_events SET state = overlay(state placing convert_to('approved', "
        "'UTF8') from position(convert_to('rejected', 'UTF8') in state) for 8) "
        "WHERE originator_id = %s AND originator_version = %s",
        str(run.id),
        target.version,
    )

    assert main(["verify", "demo-crm-note"]) == 1
    out = capsys.readouterr().out
    assert f"event #{target.version} (event_id {target.step.event_id})" in out
    assert "digest mismatch" in out
    assert main(["verify", "demo-lead-followup"]) == 0  # other runs are untouched


def test_verify_reports_a_deleted_event(demo: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with running_store(demo) as store:
        run_id = str(store.run("default", "demo-lead-followup").id)
    execute(demo, "DELETE FROM receipts_events WHERE originator_id = %s AND originator_version = 3", run_id)
    assert main(["verify", "demo-lead-followup"]) == 1
    assert "event #3" in capsys.readouterr().out


def test_a_row_altered_past_decoding_is_named_by_verify_and_refused_by_show(
    demo: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_store(demo) as store:
        run = store.run("default", "demo-support-triage")
    # Cut the stored step short: its bytes no longer decode at all.
    execute(
        demo,
        "UPDATE receipts_events SET state = substring(state from 1 for length(state) - 20) "
        "WHERE originator_id = %s AND originator_version = 2",
        str(run.id),
    )
    assert main(["verify", "demo-support-triage"]) == 1
    assert f"event #2 (event_id {run.entries[1].step.event_id})" in capsys.readouterr().out
    assert main(["show", "demo-support-triage"]) == 2
    error = capsys.readouterr().err
    assert "has an event that no longer decodes" in error and "receipts verify" in error


def test_show_prints_the_receipt_and_json(demo: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "demo-boring-failures"]) == 0
    text = capsys.readouterr().out
    assert "2. Sources used: MISSING" in text
    assert "executed_in_draft_only" in text  # the service's lane for it: a person sends it
    assert main(["show", "demo-lead-followup", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["final_state"] == "sent"
    assert document["integrity"]["verified"] is True
    assert main(["show", "demo-lead-followup", "--version", "2"]) == 0
    assert "10. Final state: MISSING" in capsys.readouterr().out


def test_unknown_run_is_a_clear_error(demo: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "no-such-run"]) == 2
    assert "no run 'no-such-run' in tenant 'default'" in capsys.readouterr().err
    assert main(["verify", "no-such-run"]) == 2
