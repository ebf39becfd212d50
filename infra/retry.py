"""Retrying: which database errors pass by themselves, how long to wait before
trying again, and how to wait.

eventsourcing re-raises psycopg's errors as its own (`eventsourcing.persistence.
OperationalError` and friends, the psycopg error as `__cause__`), and psycopg files
errors by class, not by cause: an index row that is too big is an
`OperationalError` just like a server that went away. So the decision is taken
on the psycopg error underneath and its SQLSTATE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import InterfaceError

# Class 08: connection exception. 57P01-57P03: the server is shutting down,
# crashed, or not accepting connections yet. 57014: a statement timeout. 40001,
# 40P01, 55P03: serialization failure, deadlock, lock not available.
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "57014", "40001", "40P01", "55P03"})


def transient(error: BaseException) -> bool:
    """True when trying the same work again later may succeed: a lost or refused
    connection, a restart, a timeout, a lock conflict. False for errors that the
    same data will raise again (bad values, limits, missing tables)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.InterfaceError):
            return True
        if isinstance(seen, psycopg.Error) and not isinstance(seen, psycopg.DatabaseError):
            return False
        if isinstance(seen, psycopg.OperationalError):
            state = seen.sqlstate
            # No SQLSTATE: the client lost the server (closed socket, refused, pool timeout).
            return state is None or state.startswith("08") or state in _TRANSIENT_STATES
        if isinstance(seen, psycopg.DatabaseError):
            return False
        seen = seen.__cause__
    return isinstance(error, InterfaceError)


def pause(seconds: float, should_stop: Callable[[], bool], step: float = 0.1) -> None:
    """Sleep up to `seconds`, waking early when told to stop."""
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(step, left))


@dataclass
class Backoff:
    """Delays that double with consecutive failures, from `first` up to `cap`, and
    start again from `first` after a success."""

    first: float = 0.05
    cap: float = 5.0
    failures: int = 0

    def delay(self) -> float:
        """The wait before the next try, given the failures so far."""
        return 0.0 if not self.failures else min(self.first * 2 ** (self.failures - 1), self.cap)

    def failed(self) -> float:
        """Count a failure; returns how long to wait before trying again."""
        self.failures += 1
        return self.delay()

    def succeeded(self) -> None:
        self.failures = 0

    def sleep_after_failure(self) -> None:
        time.sleep(self.failed())
