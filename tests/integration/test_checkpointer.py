"""The checkpointer inside `receipts relay`: killed and restarted, every event lands in
exactly one checkpoint, the chain has no gap, the topic holds each checkpoint once, and
`verify --all --checkpoints topic` (and a directory) passes through the CLI."""

from __future__ import annotations

import base64
import itertools
import json
import signal
from pathlib import Path

import pytest

from api.cli import main
from domain.checkpoint import canonical
from infra.checkpoint_files import from_topic
from infra.kafka import producer
from infra.settings import Settings
from infra.signing import SigningKey, ensure_signing_key
from projections.anchored import verify_anchored
from tests.integration.anchoring import Anchored
from tests.integration.helpers import cli_env, query, running_store
from tests.integration.processes import IngestProcess

pytestmark = pytest.mark.integration


def rows_doc(settings: Settings, seq: int) -> str:
    return str(query(settings, "SELECT document FROM receipts_checkpoints WHERE seq = %s", seq)[0][0])


def test_killed_and_restarted_the_relay_checkpoints_every_event_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = ensure_signing_key(tmp_path / "signing.key")
    settings = settings.model_copy(update={"signing_key": tmp_path / "signing.key"})
    relay_env = {"signing_key": settings.signing_key, "checkpoint_seconds": 0.2, "checkpoint_events": 10}
    with running_store(settings) as store:
        setup = Anchored(settings, store, key, tmp_path / "exported")
        setup.record("a", "b", "c")
        relay = IngestProcess(settings, "relay", **relay_env)
        relay.wait_for(r"checkpoint 2 closed")
        relay.process.send_signal(signal.SIGKILL)
        relay.process.wait(10)
        setup.record("d", "e")
        total = 35
        again = IngestProcess(settings, "relay", **relay_env)
        again.wait_for(rf"checkpoint \d+ closed: positions \d+\.\.{total},", timeout=30)
        again.stop(signal.SIGTERM)

        rows = query(
            settings,
            "SELECT seq, first_position, last_position, published FROM receipts_checkpoints ORDER BY seq",
        )
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        assert all(first == previous[2] + 1 for previous, (_, first, _, _) in itertools.pairwise(rows))
        assert rows[0][1] == 1 and rows[-1][2] == total and all(r[3] for r in rows)
        assert (
            sum(
                json.loads(d)["checkpoint"]["events"]
                for (d,) in query(settings, "SELECT document FROM receipts_checkpoints")
            )
            == total
        )

        assert settings.kafka_bootstrap
        published = from_topic(settings.kafka_bootstrap, settings.checkpoints_topic)
        seqs = [json.loads(raw)["checkpoint"]["seq"] for _, raw in published.documents]
        assert sorted(seqs) == [r[0] for r in rows]  # each once (a resend after the kill is the same bytes)
        verdict = verify_anchored(store, published, [key.public])
        assert verdict.verified and verdict.report.anchored == total, verdict.findings

        # Whoever may write to the topic still cannot sign: a forged next checkpoint is named.
        forger = SigningKey.generate()
        body = {**json.loads(rows_doc(settings, rows[-1][0]))["checkpoint"], "seq": len(rows) + 1}
        body["key_id"] = forger.key_id
        forged = {"checkpoint": body, "signature": base64.b64encode(forger.sign(canonical(body))).decode()}
        sender = producer(settings.kafka_bootstrap)
        sender.send(
            settings.checkpoints_topic,
            key=f"checkpoint/{len(rows) + 1}".encode(),
            value=json.dumps(forged).encode(),
        )
        sender.flush()
        sender.close()
        found = verify_anchored(
            store, from_topic(settings.kafka_bootstrap, settings.checkpoints_topic), [key.public]
        )
        assert [(f.kind, f.checkpoint) for f in found.findings] == [("foreign_key", len(rows) + 1)]

    cli_env(monkeypatch, settings, SIGNING_KEY=str(settings.signing_key), TOPIC=settings.topic)
    assert main(["checkpoints", "export", str(tmp_path / "dir")]) == 0
    assert (
        main(["verify", "--all", "--checkpoints", str(tmp_path / "dir"), "--public-key", key.public.text])
        == 0
    )
    assert main(["verify", "a", "--checkpoints", str(tmp_path / "dir")]) == 0
    out = capsys.readouterr().out
    assert f"OK: all: {total} events verified" in out and "OK: default/a: 7 events verified" in out
    assert main(["verify", "a", "--checkpoints", "topic"]) == 1  # the forgery on the topic
    assert "foreign_key: checkpoint" in capsys.readouterr().out
    (tmp_path / "dir" / "checkpoint-000000000001.json").unlink()
    assert main(["verify", "--all", "--checkpoints", str(tmp_path / "dir")]) == 1
    assert "missing_checkpoint: checkpoint 1: checkpoint 1 missing" in capsys.readouterr().out
