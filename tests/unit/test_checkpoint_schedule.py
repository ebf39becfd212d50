"""When the relay closes checkpoints: on time, on volume, and never crashing it."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from infra.checkpoints import CheckpointSchedule
from infra.signing import BadKey


class FakeCheckpointer:
    """Closes one checkpoint per call while events wait; `fail` raises instead."""

    def __init__(self, waiting: int, per_close: int, fail: Exception | None = None) -> None:
        self.waiting, self.per_close, self.fail = waiting, per_close, fail
        self.closed = 0

    def pending_events(self) -> int:
        return self.waiting

    def close(self) -> Any:
        if self.fail:
            raise self.fail
        if not self.waiting:
            return None
        self.waiting = max(0, self.waiting - self.per_close)
        self.closed += 1
        return object()


def schedule(checkpointer: FakeCheckpointer, published: list[int]) -> CheckpointSchedule:
    return CheckpointSchedule(checkpointer, lambda: published.append(1) or 1, seconds=10, events=100)  # type: ignore[arg-type]


def test_not_due_and_few_events_closes_nothing_but_publishes() -> None:
    fake, published = FakeCheckpointer(waiting=5, per_close=100), []
    s = schedule(fake, published)
    s.turn(s._last_close + 1)
    assert fake.closed == 0 and published == [1]


def test_due_on_time_closes_what_waits() -> None:
    fake, published = FakeCheckpointer(waiting=5, per_close=100), []
    s = schedule(fake, published)
    s.turn(s._last_close + 10)
    assert fake.closed == 1 and fake.waiting == 0


def test_a_backlog_is_closed_in_checkpoints_of_at_most_the_volume() -> None:
    fake, published = FakeCheckpointer(waiting=350, per_close=100), []
    s = schedule(fake, published)
    s.turn(s._last_close + 1)
    assert fake.closed == 3 and fake.waiting == 50  # the rest waits for time or volume


@pytest.mark.parametrize("error", [BadKey("no signing key at /x"), OperationalError("server closed")])
def test_a_missing_key_or_an_absent_database_never_stops_the_relay(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeCheckpointer(waiting=500, per_close=100, fail=error)
    s = schedule(fake, [])
    s.turn(s._last_close + 10)
    assert "no checkpoint closed" in caplog.text or "not closed or published yet" in caplog.text
