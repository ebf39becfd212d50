"""The supervisor's restart policy, on real (tiny) processes and a clock we move."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from api.supervise import Child, GaveUp, RestartPolicy, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _exits_at_once() -> subprocess.Popen[Any]:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])


def _turn_after_exit(supervisor: Supervisor, child: Child, clock: Clock, at: float) -> None:
    assert child.process is not None
    child.process.wait(10)
    clock.now = at
    supervisor.turn()


def test_restarts_back_off_doubling_up_to_the_most_and_start_again_from_the_first_after_a_healthy_run() -> (
    None
):
    clock = Clock()
    policy = RestartPolicy(first=1, most=4, healthy_after=10, limit=10, window=100)
    supervisor = Supervisor(policy, lambda: None, clock)
    child = supervisor.start(Child("crasher", _exits_at_once))
    first = child.process

    _turn_after_exit(supervisor, child, clock, at=0.5)
    assert child.due == 1.5 and child.process is first, "restarted before its wait"
    clock.now = 1.5
    supervisor.turn()
    assert child.process is not first and child.due is None

    waits = []
    for _ in range(3):
        _turn_after_exit(supervisor, child, clock, at=clock.now)
        assert child.due is not None
        waits.append(child.due - clock.now)
        clock.now = child.due
        supervisor.turn()
    assert waits == [2, 4, 4]

    # It ran healthily (10 s) before this exit: the wait starts from the first again.
    _turn_after_exit(supervisor, child, clock, at=clock.now + 10)
    assert child.due is not None and child.due - clock.now == 1


def test_too_many_exits_within_the_window_give_up() -> None:
    clock = Clock()
    supervisor = Supervisor(
        RestartPolicy(first=0, most=0, healthy_after=60, limit=2, window=30), lambda: None, clock
    )
    child = supervisor.start(Child("crasher", _exits_at_once))
    for _ in range(2):
        _turn_after_exit(supervisor, child, clock, at=clock.now + 1)  # exit noticed, restart due now
        supervisor.turn()
    with pytest.raises(GaveUp, match="crasher exited 3 times within 30 s"):
        _turn_after_exit(supervisor, child, clock, at=clock.now + 1)


def test_exits_older_than_the_window_are_forgiven() -> None:
    clock = Clock()
    supervisor = Supervisor(
        RestartPolicy(first=0, most=0, healthy_after=60, limit=2, window=30), lambda: None, clock
    )
    child = supervisor.start(Child("crasher", _exits_at_once))
    for _ in range(5):
        _turn_after_exit(supervisor, child, clock, at=clock.now + 20)
        supervisor.turn()
    assert len(child.exits) == 2


def test_a_server_that_cannot_start_counts_as_an_exit_and_is_tried_again() -> None:
    clock = Clock()
    attempts = []

    def start() -> subprocess.Popen[Any]:
        attempts.append(clock.now)
        if len(attempts) == 2:
            raise OSError("shared memory still in use")
        return _exits_at_once()

    supervisor = Supervisor(
        RestartPolicy(first=1, most=8, healthy_after=60, limit=10, window=100), lambda: None, clock
    )
    child = supervisor.start(Child("postgres", start))
    _turn_after_exit(supervisor, child, clock, at=0)
    clock.now = 1
    supervisor.turn()  # the start fails: due again after a doubled wait
    assert attempts == [0, 1] and child.due == 3
    clock.now = 3
    supervisor.turn()
    assert attempts == [0, 1, 3] and child.due is None
