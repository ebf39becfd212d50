"""Each attack on the store performed in SQL, each named precisely by `verify --checkpoints`."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.checkpoint import Finding
from infra.settings import Settings
from tests.integration.anchoring import Anchored, anchored
from tests.integration.helpers import execute, query

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(settings: Settings, tmp_path: Path) -> Anchored:
    with anchored(settings, tmp_path) as ready:
        yield ready


def kinds(findings: list[Finding]) -> list[tuple[str, str | None, int | None]]:
    return [(f.kind, f.run, f.version) for f in findings]


def test_untouched_store_verifies_whole_and_per_run(setup: Anchored) -> None:
    whole = setup.verify()
    assert whole.verified, whole.findings
    assert whole.report.anchored == 28 and whole.report.not_anchored == 0
    one = setup.verify("b")
    assert one.verified and one.report.events == 7


def test_edited_event(setup: Anchored) -> None:
    version, state = setup.rows("a")[2]
    setup.set_state("a", version, state.replace(b'"lead-bot"', b'"lead-bat"', 1))
    assert kinds(setup.verify().report.findings)[0] == ("edited_event", "default/a", 3)
    assert kinds(setup.verify("a").report.findings) == [("edited_event", "default/a", 3)]


def test_run_rewritten_with_every_hash_recomputed(setup: Anchored) -> None:
    setup.rewrite("a", 3)
    assert setup.store.verify("default", "a").verified  # the chain inside the database holds
    found = setup.verify().report.findings
    assert kinds(found)[0] == ("rewritten_run", "default/a", 7)
    assert "recomputed" in found[0].detail
    assert kinds(setup.verify("a").report.findings) == [("rewritten_run", "default/a", 7)]


def test_deleted_event(setup: Anchored) -> None:
    setup.delete("b", 4)
    assert kinds(setup.verify().report.findings)[0] == ("deleted_event", "default/b", 4)
    assert kinds(setup.verify("b").report.findings) == [("deleted_event", "default/b", 4)]


def test_two_consecutive_deleted_events_are_one_named_gap(setup: Anchored) -> None:
    setup.delete("b", 4, 5)
    found = setup.verify("b").report.findings
    assert kinds(found) == [("deleted_events", "default/b", 4)]
    assert "4..5" in found[0].detail and "2 consecutive" in found[0].detail


def test_truncated_tail(setup: Anchored) -> None:
    setup.delete("c", 6, 7)
    found = setup.verify().report.findings
    assert kinds(found)[0] == ("truncated_tail", "default/c", 6)
    assert "ends at version 5" in found[0].detail


def test_deleted_whole_run(setup: Anchored) -> None:
    setup.delete("c", *range(1, 8))
    found = setup.verify().report.findings
    assert ("deleted_run", "default/c", 7) in kinds(found)
    assert any(f.kind == "heads_differ" for f in found)  # the signed set of heads says so too
    assert kinds(setup.verify("c").report.findings) == [("deleted_run", "default/c", 7)]


def test_events_reordered_within_a_run(setup: Anchored) -> None:
    (_, third), (_, fourth) = setup.rows("a")[2:4]
    setup.set_state("a", 3, fourth)
    setup.set_state("a", 4, third)
    assert kinds(setup.verify("a").report.findings) == [("reordered_events", "default/a", 3)]


def test_events_reordered_in_the_log(setup: Anchored) -> None:
    """Two runs' events swap log positions: every run's chain still holds, the signed order does not."""
    # run a's last event and run b's first: each run's own order stays as it was
    first, second = query(
        setup.settings,
        "SELECT notification_id FROM receipts_events ORDER BY notification_id LIMIT 2 OFFSET 6",
    )
    execute(
        setup.settings, "UPDATE receipts_events SET notification_id = -1 WHERE notification_id = %s", first[0]
    )
    execute(
        setup.settings,
        "UPDATE receipts_events SET notification_id = %s WHERE notification_id = %s",
        *first,
        *second,
    )
    execute(
        setup.settings, "UPDATE receipts_events SET notification_id = %s WHERE notification_id = -1", *second
    )
    found = setup.verify().report.findings
    assert [f.kind for f in found] == ["log_reordered"] and found[0].checkpoint == 1


def test_an_event_slipped_into_a_signed_range(setup: Anchored) -> None:
    """Run a's last event is replaced, at its log position, by one of a run nobody signed."""
    (position,) = query(
        setup.settings,
        "SELECT notification_id FROM receipts_events WHERE originator_id = %s AND originator_version = 7",
        setup.run_key("a"),
    )[0]
    setup.delete("a", 7)
    setup.record("x")
    execute(
        setup.settings,
        "UPDATE receipts_events SET notification_id = %s WHERE originator_id = %s AND originator_version = 1",
        position,
        setup.run_key("x"),
    )
    found = setup.verify().report.findings
    assert kinds(found)[0] == ("truncated_tail", "default/a", 7)
    assert ("log_differs", 1) in [(f.kind, f.checkpoint) for f in found]
