"""A signed receipt file, exported from a real store and verified offline: by
`verify-file`, and by the standalone script the README carries (only `cryptography`)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.checkpoint_cli import build_checkpointer
from api.cli import main
from infra.settings import Settings
from infra.signing import SigningKey, ensure_signing_key
from projections.portable import export_signed, verify_file
from tests.integration.anchoring import Anchored, anchored
from tests.integration.helpers import cli_env, ingest_for, poll_until, publish_steps, running_store
from tests.unit.factories import at, executed, finished, proposed, reviewed, started

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def setup(settings, tmp_path: Path) -> Anchored:  # type: ignore[no-untyped-def]
    with anchored(settings, tmp_path, checkpoints=2) as ready:
        ready.record("late")  # after the last checkpoint: carried, not anchored
        yield ready


def exported(setup: Anchored, run_id: str) -> dict[str, Any]:
    receipt = setup.store.receipt("default", run_id, setup.settings.unfinished_after)
    return export_signed(setup.store, build_checkpointer(setup.settings, setup.store), receipt)


def standalone(tmp_path: Path) -> Path:
    block = re.search(r"<!-- standalone-verifier -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "the README's standalone verifier is gone"
    script = tmp_path / "verify_receipt.py"
    script.write_text(block.group(1))
    return script


def run_script(
    script: Path, document: dict[str, Any], key: SigningKey, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(document))
    return subprocess.run(
        [sys.executable, str(script), str(path), key.public.text],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_exported_receipt_verifies_offline_and_names_its_authorisation(
    setup: Anchored, tmp_path: Path
) -> None:
    document = exported(setup, "d")
    assert len(document["events"]) == 7 and len(document["proofs"]) == 7
    [auth] = document["authorizations"]
    executed = json.loads(base64.b64decode(document["events"][5]["wire"]))
    assert auth["executed_event_id"] == executed["event_id"]
    assert auth["approval"]["event_id"] == executed["data"]["authorization_ref"] == auth["authorization_ref"]
    assert auth["policy_decision"]["rule_id"] and auth["policy_decision"]["event_id"]
    verdict = verify_file(document, [setup.key.public])
    assert verdict.verified and verdict.anchored == 7 and verdict.checkpoints == [2], verdict.findings
    result = run_script(standalone(tmp_path), document, setup.key, tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("OK: 7 events chain, 7 proven"), result


def test_events_newer_than_the_checkpoints_are_carried_but_not_anchored(setup: Anchored) -> None:
    verdict = verify_file(exported(setup, "late"), [setup.key.public])
    assert verdict.verified and verdict.anchored == 0 and verdict.not_anchored == list(range(1, 8))


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [
        ("event", "edited_event"),
        ("tail", "truncated_tail"),
        ("proof", "not_included"),
        ("checkpoint", "forged_checkpoint"),
        ("authorization", "authorization_unproven"),
        ("receipt", "receipt_differs"),
        ("key", "foreign_key"),
    ],
)
def test_a_tampered_file_fails_both_verifiers(
    setup: Anchored, tmp_path: Path, tamper: str, kind: str
) -> None:
    document = exported(setup, "a")
    key = setup.key
    if tamper == "event":
        wire = json.loads(base64.b64decode(document["events"][2]["wire"]))
        wire["actor"]["id"] = "someone-else"
        document["events"][2]["wire"] = base64.b64encode(json.dumps(wire).encode()).decode()
    elif tamper == "tail":
        document["events"] = document["events"][:5]
        document["proofs"] = document["proofs"][:5]
    elif tamper == "proof":
        document["proofs"][3]["index"] = document["proofs"][3]["index"] + 1
    elif tamper == "checkpoint":
        document["checkpoints"][0]["checkpoint"]["events"] += 1
    elif tamper == "receipt":
        document["receipt"]["steps"][0]["reviews"][0]["reviewer"]["id"] = "someone-senior"
    elif tamper == "authorization":
        document["authorizations"][0]["approval"]["event_id"] = "evt-nobody-approved"
    else:
        key = SigningKey.generate()
    found = verify_file(document, [key.public]).findings
    assert found and found[0].kind == kind, found
    if tamper not in ("authorization", "receipt"):  # the script checks the proofs, not the receipt
        result = run_script(standalone(tmp_path), document, key, tmp_path)
        assert result.returncode != 0 and "BROKEN" in result.stderr, result


def test_the_cli_exports_and_verifies_a_file(
    setup: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch, setup.settings, SIGNING_KEY=str(setup.settings.signing_key))
    target = tmp_path / "b.json"
    assert main(["export", "b", "--signed", "-o", str(target)]) == 0
    key_file = tmp_path / "service.pub"
    key_file.write_text(setup.key.public.text)
    assert main(["verify-file", str(target), "--public-key", str(key_file)]) == 0
    assert "OK: run default/b: 7 events chain; 7 proven in signed checkpoints 1" in capsys.readouterr().out
    assert main(["verify-file", str(target), "--public-key", SigningKey.generate().public.text]) == 1
    assert main(["export", "b", "-o", str(target)]) == 2
    assert "--signed" in capsys.readouterr().err


def test_a_sealed_run_ingested_as_up_runs_it_verifies_and_says_what_the_file_cannot_prove(
    settings: Settings, tmp_path: Path
) -> None:
    """What `receipts up` stores: personal fields sealed, the service's decisions its own. The
    receipt in the file reads them opened, which no offline reader can check: the verdict
    holds, and counts them; a change to anything else in the receipt is still caught."""
    key, _ = ensure_signing_key(tmp_path / "service.key")
    settings = settings.model_copy(update={"signing_key": tmp_path / "service.key"})
    draft = "Hi Dana, the Business plan is $24/seat/month"
    approval = reviewed(output=draft, comment="ok to send", at=at(10))
    steps = [
        started(at=at(0)),
        proposed(output=draft, params={"to": "dana@example.com", "subject": "Pricing"}, at=at(2)),
        approval,
        executed(output=draft, authorization=approval.event_id, at=at(11)),
        finished("sent", at=at(12)),
    ]
    publish_steps(settings, steps)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= len(steps) and ingest.totals.decided >= 1)
        assert build_checkpointer(settings, store).close() is not None
        run_id = steps[0].run_id
        document = export_signed(
            store,
            build_checkpointer(settings, store),
            store.receipt("default", run_id, settings.unfinished_after),
        )
    stored = b"".join(base64.b64decode(e["wire"]) for e in document["events"])
    assert b"dana@example.com" not in stored and "dana@example.com" in json.dumps(document["receipt"])
    verdict = verify_file(document, [key.public])
    assert verdict.verified and verdict.anchored == len(document["events"]), verdict.findings
    assert verdict.opened > 0 and verdict.vouched >= 1  # the service's policy decision
    document["receipt"]["final_state"] = "abandoned"
    assert [f.kind for f in verify_file(document, [key.public]).findings] == ["receipt_differs"]
