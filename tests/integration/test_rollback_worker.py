"""Rollback end to end on the real broker and store: asked, planned, undone at real targets, recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api.bootstrap import build_publisher
from api.rollback_cli import build_rollback_worker
from consumers.dead_letters import REASON
from consumers.rollback import RollbackWorker
from domain.step_values import Actor
from domain.steps import StepEvent
from infra.kafka import producer
from infra.publisher import Publisher
from infra.rollback.requests import plan_recorded, request_rollback
from infra.settings import Settings
from infra.store import RunNotFound, RunStore
from schemas.reverse import encode_reverse
from tests.fakes import FakeProducer
from tests.integration.helpers import ingest_for, poll_until, read_topic, running_store
from tests.integration.targets import (
    SECRET,
    commit_file,
    git,
    reverse_event,
    reverts_in,
    site_repository,
    webhook_receiver,
)

pytestmark = pytest.mark.integration

MARIA = Actor(kind="human", id="maria", role="rollback")
SITE = {"system": "github", "kind": "file", "id": "pricing.html"}
NOTE = {"system": "hubspot", "kind": "note", "id": "n-7"}
MAIL = {"system": "gmail", "kind": "contact", "id": "ana@example.com"}


def rollback_file(tmp_path: Path, site: Path, url: str) -> Path:
    path = tmp_path / "rollback.toml"
    path.write_text(
        f'[targets.github]\nadapter = "git"\nrepository = "{site}"\n\n'
        f'[targets.hubspot]\nadapter = "webhook"\nurl = "{url}"\nsecret = "{SECRET}"\n\n'
        '[targets.gmail]\nadapter = "correction"\nnotify = "hubspot"\n'
    )
    return path


def publish_run(publisher: Publisher, run_id: str, site_commit: str, *, with_none: bool = True) -> None:
    """A run with executed steps on three targets (and one that cannot be undone), oldest first."""
    with publisher.run("website-and-crm", run_id=run_id) as run:
        page = run.propose(
            "update_page", SITE, "github.commit", output="4 EUR", rollback={"method": "revert"}
        )
        page.review("approved", by=MARIA)
        page.executed("published", external_ref=site_commit)
        note = run.propose(
            "add_note", NOTE, "hubspot.note", output="v4", rollback={"method": "amend", "prior_version": "v3"}
        )
        note.executed("written", external_ref="n-7@v4")
        mail = run.propose(
            "send_email",
            MAIL,
            "gmail.send",
            output="4 EUR!",
            rollback={"method": "correct", "runbook": "call Ana"},
        )
        mail.review("approved", by=MARIA)
        mail.executed("sent", external_ref="msg-1")
        if with_none:
            tag = run.propose("tag", {"system": "zendesk", "kind": "ticket", "id": "T-1"}, "zendesk.tag")
            tag.executed("written")  # no rollback link at all
        run.propose("send_email", MAIL, "gmail.send", output="never sent", rollback={"method": "correct"})
        run.finish("published")


def work_until(worker: RollbackWorker, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    worker.run(lambda: done() or time.monotonic() > deadline)
    assert done(), f"worker handled {worker.handled}, dead-lettered {worker.dead_lettered}"


def ingest_all(settings: Settings, store: RunStore, done: Callable[[], bool]) -> None:
    with ingest_for(settings, store) as ingest:
        poll_until(ingest, done)


@contextmanager
def worker_for(settings: Settings) -> Iterator[RollbackWorker]:
    worker = build_rollback_worker(settings)
    try:
        yield worker
    finally:
        worker.close()


def test_a_run_is_rolled_back_newest_first_at_real_targets_and_recorded(
    settings: Settings, tmp_path: Path
) -> None:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    with webhook_receiver() as receiver, running_store(settings) as store:
        settings = settings.model_copy(update={"rollback": rollback_file(tmp_path, site, receiver.url)})
        publisher = build_publisher(settings)
        publish_run(publisher, "run-rb", sha)
        publisher.flush()
        ingest_all(settings, store, lambda: len(_types(store)) == 13 + 5)  # and a decision per proposal
        planned = request_rollback(
            store,
            publisher,
            "run-rb",
            "the price was wrong",
            (),
            MARIA,
            reverse_topic=settings.reverse_topic,
            rollback_id="rb-1",
        )
        assert [r.target.system for r in planned.reverse] == ["gmail", "hubspot", "github"]
        assert planned.partial and [s.step_id for s in planned.stands] == ["run-rb/step-4"]
        with worker_for(settings) as worker:
            work_until(worker, lambda: worker.handled >= 3)
        ingest_all(
            settings, store, lambda: _types(store).count("rollback.stands") == 1 and _outcomes(store) == 3
        )
        entries = store.run("default", "run-rb").entries
        # The file is back, by one revert commit the record names.
        assert (site / "pricing.html").read_text() == "<p>Plan: 40 EUR</p>\n"
        by_step = {
            e.step.step_id: e.step for e in entries if e.step.type in ("action.reverted", "record.corrected")
        }
        assert by_step["run-rb/step-1"].data.reverse_ref == git(site, "rev-parse", "HEAD")  # type: ignore[attr-defined]
        assert by_step["run-rb/step-1"].data.verified  # type: ignore[attr-defined]
        # The CRM note got its prior version back, signed; the email was corrected, not reverted.
        assert by_step["run-rb/step-2"].type == "action.reverted"
        assert by_step["run-rb/step-3"].type == "record.corrected"
        assert [d.document["type"] for d in receiver.deliveries] == ["rollback.corrected", "rollback.amend"]
        assert receiver.deliveries[1].document["data"]["prior_version"] == "v3"
        assert all(d.verified for d in receiver.deliveries)
        # The receipt shows it: the tag stands, so the rollback is partial, never "reverted".
        (recovery,) = store.run("default", "run-rb").receipt().recovery
        assert (recovery.state, recovery.requested_by, recovery.reason) == (
            "partially reverted",
            MARIA,
            "the price was wrong",
        )
        assert [a.outcome for a in recovery.actions] == ["corrected", "reverted", "reverted"]
        # A re-run of the finished rollback changes nothing: every step is settled.
        again = plan_recorded(store, "default", "run-rb", "rb-1")
        assert again.reverse == () and again.stands == planned.stands
        assert {(s.step_id, s.why) for s in again.skipped} >= {
            ("run-rb/step-1", "already reverted"),
            ("run-rb/step-3", "already reverted"),
        }
        publisher.close()


def _types(store: RunStore) -> list[str]:
    try:
        return [e.step.type for e in store.run("default", "run-rb").entries]
    except RunNotFound:
        return []


def _outcomes(store: RunStore) -> int:
    return sum(t in ("action.reverted", "record.corrected", "rollback.failed") for t in _types(store))


def test_a_hostile_value_is_dead_lettered_and_the_loop_goes_on(settings: Settings, tmp_path: Path) -> None:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    settings = settings.model_copy(update={"rollback": rollback_file(tmp_path, site, "http://127.0.0.1:9/x")})
    assert settings.kafka_bootstrap
    with worker_for(settings) as worker:
        raw = producer(settings.kafka_bootstrap)
        key = b"run-1"
        for value in (
            b"\x00\x01garbage",
            b'{"reverse_id": "r"}',
            encode_reverse(reverse_event(external_ref=sha)),
        ):
            raw.send(settings.reverse_topic, key=key, value=value)
        raw.flush()
        raw.close()
        work_until(worker, lambda: worker.handled >= 1)
    assert worker.dead_lettered == 2
    letters = read_topic(settings.kafka_bootstrap, settings.dlq_topic, 2)
    assert sorted(dict(r.headers)[REASON] for r in letters) == [b"invalid", b"not_a_step"]
    assert len(reverts_in(site)) == 1


def test_an_unconfigured_target_and_a_conflict_are_recorded_as_failures_a_person_must_see(
    settings: Settings, tmp_path: Path
) -> None:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    commit_file(site, "pricing.html", "<p>Plan: 5 EUR</p>\n", "Human: by hand")
    settings = settings.model_copy(update={"rollback": rollback_file(tmp_path, site, "http://127.0.0.1:9/x")})
    assert settings.kafka_bootstrap
    with worker_for(settings) as worker:
        raw = producer(settings.kafka_bootstrap)
        for reverse in (
            reverse_event(external_ref=sha),
            reverse_event(reverse_id="rev-2", target={"system": "ftp", "kind": "file", "id": "x"}),
        ):
            raw.send(settings.reverse_topic, key=b"run-1", value=encode_reverse(reverse))
        raw.flush()
        raw.close()
        work_until(worker, lambda: worker.handled >= 2)
    outcomes = _read_outcomes(settings, 2)
    assert [(s.type, s.data.retryable) for s in outcomes] == [("rollback.failed", False)] * 2  # type: ignore[attr-defined]
    assert "conflicts in pricing.html" in outcomes[0].data.error  # type: ignore[attr-defined]
    assert "no rollback adapter for target system 'ftp'" in outcomes[1].data.error  # type: ignore[attr-defined]


def _read_outcomes(settings: Settings, expected: int) -> list[StepEvent]:
    from schemas import Codec

    assert settings.kafka_bootstrap
    codec = Codec()
    records = sorted(read_topic(settings.kafka_bootstrap, settings.topic, expected), key=lambda r: r.offset)
    return [codec.decode(r.value) for r in records]


def test_a_rollback_of_an_unknown_run_is_refused_before_anything_is_published(settings: Settings) -> None:
    producer_ = FakeProducer()
    with running_store(settings) as store, pytest.raises(RunNotFound):
        request_rollback(
            store,
            Publisher(producer=producer_, topic=settings.topic),
            "no-such-run",
            "oops",
            (),
            MARIA,
            reverse_topic=settings.reverse_topic,
        )
    assert producer_.sent == []
