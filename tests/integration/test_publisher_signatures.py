"""Who may write: a step on the topic is vouched for by a registered publisher of its tenant,
or it is recorded with a finding or dead-lettered, as the tenant's policy says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from api.bootstrap import build_projections
from api.cli import main
from api.render import receipt_markdown, receipt_text
from consumers import dead_letters as dl
from domain.policy import sample_text
from domain.receipt_model import Receipt
from domain.steps import RecordFlagged, StepEvent, content_hash
from infra.publisher import Publisher
from infra.publishers import Signer
from infra.settings import Settings
from infra.signing import ensure_signing_key
from infra.store import RunStore
from schemas import Codec
from tests.integration.helpers import (
    add_principal,
    cli_env,
    client_for,
    ingest_for,
    poll_until,
    read_topic,
    running_store,
)
from tests.unit import factories as f

pytestmark = pytest.mark.integration
SIGNATURE_CODES = {"unsigned_event", "bad_signature", "publisher_not_for_tenant"}


@pytest.fixture
def signed(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with the service's key in place (as `receipts up` leaves it)."""
    settings = settings.model_copy(update={"signing_key": tmp_path / "service.key"})
    ensure_signing_key(settings.signing_key_file)
    return settings


@pytest.fixture
def keys(signed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Key pairs made with `receipts publisher keygen`, registered with `receipts publisher add`:
    crm-bot and old-bot for tenant acme (old-bot then revoked), globex-bot for globex; `stranger`
    registered nowhere."""
    with running_store(signed):
        cli_env(monkeypatch, signed)
    made = {}
    for name in ("crm-bot", "old-bot", "globex-bot", "stranger"):
        made[name] = tmp_path / f"{name}.key"
        assert main(["publisher", "keygen", str(made[name])]) == 0
    for name, tenant in (("crm-bot", "acme"), ("old-bot", "acme"), ("globex-bot", "globex")):
        assert main(["publisher", "add", name, "--tenant", tenant, "--public-key", f"{made[name]}.pub"]) == 0
    assert main(["publisher", "revoke", "old-bot"]) == 0
    return made


def publisher(settings: Settings, tenant: str, signer: Signer | None) -> Publisher:
    return Publisher(bootstrap=settings.kafka_bootstrap, topic=settings.topic, tenant=tenant, signer=signer)


def forged(run_id: str, tenant: str = "acme") -> StepEvent:
    """A correction 'by' a reviewer who never acted, appended to a run."""
    return f.corrected(
        f"{run_id}/step-1", "refund approved", run_id=run_id, tenant=tenant, event_id=str(uuid4())
    )


def publish_good_run(settings: Settings, keys: dict[str, Path], run_id: str) -> None:
    with publisher(settings, "acme", Signer.load("crm-bot", keys["crm-bot"])).run(
        "crm-notes", run_id=run_id
    ) as run:
        run.finish("synced")


def send(settings: Settings, step: StepEvent, signer: Signer | None) -> None:
    sender = publisher(settings, step.tenant, signer)
    sender.publish(step)
    sender.close()


@pytest.fixture
def ingested(signed: Settings, keys: dict[str, Path]) -> Iterator[tuple[RunStore, Settings]]:
    """The default policy (record with a finding): every kind of forgery sent, then ingested."""
    publish_good_run(signed, keys, "r-good")
    send(signed, forged("r-good"), None)  # signed by nobody
    send(signed, forged("r-good"), Signer.load("globex-bot", keys["globex-bot"]))  # another tenant's
    send(signed, forged("r-good"), Signer.load("crm-bot", keys["stranger"]))  # a name, not its key
    send(signed, forged("r-good"), Signer.load("old-bot", keys["old-bot"]))  # a revoked key
    send(signed, forged("r-good"), Signer.load("nobody", keys["stranger"]))  # no such publisher
    # A tenant with no registered publisher records unsigned steps as before.
    with publisher(signed, "default", None).run("crm-notes", run_id="r-plain") as run:
        run.finish("synced")
    with running_store(signed) as store, ingest_for(signed, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 9 and ingest.totals.flagged >= 5)
        yield store, signed


def findings(receipt: Receipt) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in receipt.findings:
        if finding.code in SIGNATURE_CODES:
            found.setdefault(finding.code, []).append(finding.message)
    return found


def test_each_forgery_is_recorded_with_a_finding_naming_it(ingested: tuple[RunStore, Settings]) -> None:
    store, _ = ingested
    receipt = store.run("acme", "r-good").receipt()
    by_event = {v.event_id: v.publisher for v in receipt.vouched}
    corrections = [e for e in store.run("acme", "r-good").entries if e.step.type == "record.corrected"]
    assert len(corrections) == 5 and all(by_event[e.step.event_id] is None for e in corrections)
    counted = {x.code: x.count for x in receipt.findings if x.code in SIGNATURE_CODES}
    assert counted == {"unsigned_event": 1, "publisher_not_for_tenant": 1, "bad_signature": 3}
    assert "'globex-bot' of tenant 'globex'" in str(findings(receipt))
    # The findings name every forged event; each flag on the record says why it was not vouched for.
    named = {i for x in receipt.findings if x.code in SIGNATURE_CODES for i in x.event_ids}
    assert {e.step.event_id for e in corrections} <= named
    flags = [e.step for e in store.run("acme", "r-good").entries if isinstance(e.step, RecordFlagged)]
    bad = " ".join(flag.data.message for flag in flags if flag.data.code == "bad_signature")
    assert "'crm-bot' that does not match" in bad and "'old-bot', whose key was revoked" in bad
    assert "'nobody', which is not registered" in bad
    assert store.verify("acme", "r-good").verified  # the chain is over what was sent, signatures aside
    corrected = [line for line in receipt_text(receipt).splitlines() if "corrected by" in line]
    assert len(corrected) == 5 and all(line.endswith("(vouched by: nobody, unsigned)") for line in corrected)


def test_a_good_signature_is_shown_per_event_and_unsigned_tenants_are_unchanged(
    ingested: tuple[RunStore, Settings],
) -> None:
    store, settings = ingested
    receipt = store.run("acme", "r-good").receipt()
    published = [v for v in receipt.vouched if v.type in ("run.started", "run.finished")]
    assert [v.publisher for v in published] == ["crm-bot", "crm-bot"]
    assert "crm-bot" in receipt_text(receipt) and "| Vouched by | crm-bot (2)" in receipt_markdown(receipt)
    plain = store.run("default", "r-plain").receipt()
    assert not findings(plain) and {v.publisher for v in plain.vouched} == {None}
    assert "Vouched by: no event was signed" in receipt_text(plain)
    runner = build_projections(settings, store, ["timeline"])
    runner.catch_up()
    with store.steps.datastore.transaction(commit=False) as curs:
        curs.execute(
            f'SELECT type, vouched_by FROM "{settings.database_schema}".view_timeline '
            "WHERE run_id = 'r-good' AND type = 'run.started'"
        )
        assert [(r["type"], r["vouched_by"]) for r in curs.fetchall()] == [("run.started", "crm-bot")]


def test_policy_dead_letters_unvouched_steps_with_reason_and_bytes(
    signed: Settings, keys: dict[str, Path], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        sample_text()
        + '\n[publishers.tenants.acme]\nunsigned = "dead_letter"\nbad_signature = "dead_letter"\n'
    )
    settings = signed.model_copy(update={"policy": policy})
    publish_good_run(settings, keys, "r-good")
    attempts = [
        (forged("r-good"), None, "unsigned_event"),
        (forged("r-good"), Signer.load("crm-bot", keys["stranger"]), "bad_signature"),
        (forged("r-good"), Signer.load("globex-bot", keys["globex-bot"]), "publisher_not_for_tenant"),
    ]
    for step, signer, _ in attempts:
        send(settings, step, signer)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 2 and ingest.totals.dead >= len(attempts))
        run = store.run("acme", "r-good")
        assert [e.step.type for e in run.entries] == ["run.started", "run.finished"]
        assert not findings(run.receipt())
    letters = read_topic(str(settings.kafka_bootstrap), settings.dlq_topic, len(attempts))
    reasons = {}
    for letter in letters:
        headers = {name: value for name, value in letter.headers}
        reasons[letter.value] = headers[dl.REASON].decode()
    # The original bytes, each with the reason it was kept out.
    assert reasons == {Codec().encode(step, "avro"): reason for step, _, reason in attempts}


def test_decisions_made_through_the_service_are_vouched_for_by_the_service(signed: Settings) -> None:
    step = "r-1/step-1"
    where = {"run_id": "r-1", "tenant": "default", "at": datetime.now(UTC)}  # within its review deadline
    waiting = [
        f.started(**where),
        f.source("form-1", system="hubspot", kind="form_submission", **where),
        f.source("pricing", **where),
        f.proposed(step, **where),
    ]
    sender = publisher(signed, "default", None)
    for waits in waiting:
        sender.publish(waits)
    sender.close()
    with (
        running_store(signed) as store,
        ingest_for(signed, store) as ingest,
        client_for(signed, add_principal(signed, "kim", roles=["sales-lead"])) as http,
    ):
        poll_until(ingest, lambda: ingest.totals.decided >= 1)  # the service's policy decision
        build_projections(signed, store).catch_up()
        path = f"/runs/r-1/steps/{step}/decision"
        refused = http.post(path, json={"decision": "approve", "version_hash": "sha256:" + "0" * 64})
        assert refused.status_code == 403, refused.text
        approved = http.post(path, json={"decision": "approve", "version_hash": content_hash(f.DRAFT)})
        assert approved.status_code == 202, approved.text
        poll_until(ingest, lambda: ingest.totals.recorded >= len(waiting) + 1)
        receipt = store.run("default", "r-1").receipt()
    by_type = {v.type: v.publisher for v in receipt.vouched}
    assert by_type["action.reviewed"] == "service"  # published by the API, signed by the service's key
    assert by_type["decision.refused"] == "service"  # stored by the service itself
    assert by_type["policy.decided"] == "service"  # the service's policy engine, at ingest
    assert by_type["action.proposed"] is None  # the platform did not sign
    (reviewer,) = [line for line in receipt_text(receipt).splitlines() if "5. reviewer: kim" in line]
    assert reviewer.endswith("(vouched by: service)")
    assert "| Vouched by | unsigned (4), service (3)" in receipt_markdown(receipt)


def test_publisher_commands_refuse_what_they_cannot_register(
    signed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_store(signed):
        cli_env(monkeypatch, signed)
    key = tmp_path / "bot.key"
    assert main(["publisher", "keygen", str(key)]) == 0
    assert main(["publisher", "keygen", str(key)]) != 0  # a key is never silently replaced
    not_a_key = tmp_path / "not-a-key.pub"
    not_a_key.write_text("hello")
    cases = [
        (["--public-key", str(not_a_key)], "is not ed25519:BASE64"),
        (["--public-key", str(tmp_path / "missing.pub")], "cannot read"),
    ]
    for extra, said in cases:
        capsys.readouterr()
        assert main(["publisher", "add", "bot", "--tenant", "acme", *extra]) != 0
        assert said in capsys.readouterr().err
    add = ["--tenant", "acme", "--public-key", f"{key}.pub"]
    assert main(["publisher", "add", "service", *add]) != 0  # the service's own name
    assert main(["publisher", "add", "two words", *add]) != 0
    assert main(["publisher", "add", "bot", *add]) == 0
    capsys.readouterr()
    assert main(["publisher", "add", "bot", *add]) != 0 and "exists" in capsys.readouterr().err
    assert main(["publisher", "revoke", "ghost"]) != 0 and "no publisher 'ghost'" in capsys.readouterr().err
    assert main(["publisher", "revoke", "bot"]) == 0
    assert main(["publisher", "revoke", "bot"]) == 0 and "revoked already" in capsys.readouterr().out
    assert main(["publisher", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["tenant"], listed["revoked_at"] is not None) == ("bot", "acme", True)
    assert main(["publisher", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("publisher") and header.endswith("state")
    assert row.split()[:2] == ["bot", "acme"] and "  revoked " in row
    assert listed["created_by"].startswith("database access")  # who registered it, for the record
