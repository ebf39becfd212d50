"""`receipts rollback-plan`, `rollback-worker` and `up` with RECEIPTS_ROLLBACK, as a person runs them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.bootstrap import build_publisher
from api.cli import main
from domain import rollback
from infra.settings import Settings
from schemas.reverse import decode_reverse
from tests.integration.helpers import ingest_for, poll_until, read_topic, running_store
from tests.integration.targets import commit_file, site_repository
from tests.integration.test_rollback_worker import MARIA, publish_run

pytestmark = pytest.mark.integration


def _environment(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    for name, value in {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "DATABASE_SCHEMA": settings.database_schema,
        "TOPIC": settings.topic,
        "GROUP": settings.group,
        "DATA_DIR": tmp_path / "data",
    }.items():
        monkeypatch.setenv(f"RECEIPTS_{name}", str(value))


def test_a_bad_rollback_file_stops_the_worker_and_up_naming_line_and_field(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(monkeypatch, settings, tmp_path)
    bad = tmp_path / "rollback.toml"
    bad.write_text('[targets.github]\nadapter = "git"\nrepository = "/nowhere"\n')
    monkeypatch.setenv("RECEIPTS_ROLLBACK", str(bad))
    for command in (["rollback-worker"], ["up"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "line 3: targets.github.repository: /nowhere is not a git repository" in err, command
        assert str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "data" / "up.json").exists()  # `up` started nothing


def test_rollback_plan_publishes_a_recorded_request_with_the_same_ids_every_time(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    publisher = build_publisher(settings)
    publish_run(publisher, "run-cli", sha)
    asked = rollback.request(
        tenant="default",
        run_id="run-cli",
        rollback_id="rb-cli",
        reason="wrong price",
        steps=(),
        requested_by=MARIA,
        at=datetime.now(UTC),
    )
    publisher.publish(asked)
    publisher.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 14)
    _environment(monkeypatch, settings, tmp_path)
    for _ in range(2):
        assert main(["rollback-plan", "run-cli", "--rollback-id", "rb-cli"]) == 0
    out = capsys.readouterr().out
    assert "stands  run-cli/step-4" in out and "partial" in out
    assert settings.kafka_bootstrap
    records = read_topic(settings.kafka_bootstrap, settings.reverse_topic, 6)
    reverses = [decode_reverse(r.value) for r in records]
    assert len(reverses) == 6 and len({r.reverse_id for r in reverses}) == 3
    assert main(["rollback-plan", "run-cli", "--rollback-id", "rb-none"]) != 0
    assert "no rollback.requested with rollback id 'rb-none'" in capsys.readouterr().err
