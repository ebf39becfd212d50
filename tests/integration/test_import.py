"""`receipts import` of contract events as JSONL, on the real stack: published the way live
events are, recorded once however often the file is imported, bad lines skipped and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli import main
from domain.steps import StepEvent
from infra.publisher import Publisher
from infra.settings import Settings
from schemas.codec import encode_json
from tests.fakes import FakeProducer
from tests.integration.helpers import cli_env, ingest_for, poll_until, running_store
from tests.integration.incidents import GENERATED
from tests.unit.hostile import CODEC

pytestmark = pytest.mark.integration


def history(tmp_path: Path) -> tuple[Path, list[StepEvent]]:
    """Five generated incident runs as one JSONL file, with a line that is not a step."""
    producer = FakeProducer()
    publisher = Publisher(producer=producer, encoding="json")  # type: ignore[arg-type]
    for run in GENERATED[:5]:
        run.publish(publisher)
    steps = [CODEC.decode(value) for value in producer.accepted]
    lines = [encode_json(step).decode() for step in steps]
    lines.insert(3, json.dumps({"event_id": "x", "run_id": "r", "type": "action.teleported"}))
    lines.insert(5, "")
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, steps


def test_an_imported_file_is_recorded_once_and_its_bad_line_named(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, steps = history(tmp_path)
    published = len(steps)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        cli_env(monkeypatch, settings, TOPIC=settings.topic)
        assert main(["import", str(path)]) == 1  # a line was skipped
        out = capsys.readouterr().out
        assert f"published {published:,} events of 5 runs; skipped 1" in out
        assert "history.jsonl:4: unknown step type 'action.teleported'" in out
        poll_until(ingest, lambda: ingest.totals.recorded >= published)
        assert main(["import", str(path)]) == 1
        poll_until(ingest, lambda: ingest.totals.duplicates >= published)
        assert ingest.totals.recorded == published  # nothing new the second time
        for run in GENERATED[:5]:
            stored = store.run("default", run.run_id).entries
            # As published, but for the run's subject named and content hashes keyed by it.
            assert [_unkeyed(e.step) for e in stored if e.step.actor.id != "agent-receipts"] == [
                _unkeyed(s) for s in steps if s.run_id == run.run_id
            ]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('[{"role": "user", "content": "hi"}]', "needs a mapping"),
        ('{"resourceSpans": []}', "needs a mapping"),
        ("hello\n", "not a format this version imports"),
        ("", "empty"),
    ],
)
def test_a_file_it_does_not_import_is_refused_before_anything_is_published(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
    said: str,
) -> None:
    path = tmp_path / "run.json"
    path.write_text(content, encoding="utf-8")
    with running_store(settings):
        cli_env(monkeypatch, settings, TOPIC=settings.topic)
        assert main(["import", str(path)]) == 2
    assert said in capsys.readouterr().err


def _unkeyed(step: StepEvent) -> object:
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("hash") and k != "subject"}
        return value

    return strip(step.model_dump())
