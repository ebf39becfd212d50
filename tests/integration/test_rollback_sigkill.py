"""The rollback worker SIGKILLed mid-way and restarted: every reverse action applied once in effect."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from domain.rollback import ReverseEvent
from infra.kafka import ensure_topics, producer
from infra.settings import Settings
from schemas import Codec
from schemas.reverse import encode_reverse
from tests.integration.helpers import read_topic
from tests.integration.processes import IngestProcess
from tests.integration.targets import (
    commit_file,
    git,
    reverse_event,
    reverts_in,
    site_repository,
    webhook_receiver,
)
from tests.integration.test_rollback_worker import rollback_file

pytestmark = pytest.mark.integration


def _until(done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def _worker(settings: Settings) -> IngestProcess:
    return IngestProcess(settings, "rollback-worker", rollback=settings.rollback)


def _publish(settings: Settings, *reverses: ReverseEvent) -> None:
    assert settings.kafka_bootstrap
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    raw = producer(settings.kafka_bootstrap)
    for reverse in reverses:
        raw.send(settings.reverse_topic, key=reverse.run_id.encode(), value=encode_reverse(reverse))
    raw.flush()
    raw.close()


def test_a_worker_killed_mid_way_applies_each_reverse_action_once_in_effect(
    settings: Settings, tmp_path: Path
) -> None:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    hook = site / ".git" / "hooks" / "post-commit"
    with webhook_receiver() as receiver:
        settings = settings.model_copy(update={"rollback": rollback_file(tmp_path, site, receiver.url)})
        note = reverse_event(
            reverse_id="rev-note", method="amend", target={"system": "hubspot", "kind": "note", "id": "n-7"}
        )
        page = reverse_event(reverse_id="rev-page", external_ref=sha)
        _publish(settings, note, page)  # one run: one partition, in this order

        # 1. Killed while the CRM has the webhook and has not answered: nothing committed.
        receiver.hold_next = True
        first = _worker(settings)
        _until(lambda: len(receiver.deliveries) == 1, "the first delivery")
        first.stop(signal.SIGKILL)
        receiver.release.set()

        # 2. Killed after the revert commit is made, before its outcome is published.
        # The hook holds `git commit` (the revert already made) until the flag goes.
        flag = tmp_path / "hold"
        flag.touch()
        hook.write_text(f'#!/bin/sh\nwhile [ -e "{flag}" ]; do sleep 0.05; done\n')
        hook.chmod(0o755)
        second = _worker(settings)
        _until(lambda: len(reverts_in(site)) == 1, "the revert commit")
        second.stop(signal.SIGKILL)
        hook.unlink()
        flag.unlink()  # the orphaned `git commit` ends
        made = git(site, "rev-parse", "HEAD")

        # 3. Restarted: both reverse events come again; neither is applied a second time.
        third = _worker(settings)
        outcomes = read_topic(str(settings.kafka_bootstrap), settings.topic, 2, timeout=60)
        assert third.stop(signal.SIGTERM) == 0

    codec = Codec()
    steps = {codec.decode(r.value).event_id: codec.decode(r.value) for r in outcomes}
    assert sorted(s.data.reverse_id for s in steps.values()) == ["rev-note", "rev-page"]  # type: ignore[attr-defined]
    assert {s.type for s in steps.values()} == {"action.reverted"}
    (reverted_page,) = [s for s in steps.values() if s.data.reverse_id == "rev-page"]  # type: ignore[attr-defined]
    assert reverted_page.data.reverse_ref == made  # type: ignore[attr-defined]
    # The CRM saw one webhook id for the note, delivered again after the kill, never a second id.
    assert {d.webhook_id for d in receiver.deliveries} == {"rev-note"}
    assert len(receiver.deliveries) >= 2 and all(d.verified for d in receiver.deliveries)
    # git has exactly one revert, and the page is back.
    assert reverts_in(site) == [made]
    assert (site / "pricing.html").read_text() == "<p>Plan: 40 EUR</p>\n"
