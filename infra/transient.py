"""Which database errors pass by themselves, and how long to wait before trying again.

eventsourcing re-raises psycopg's errors as its own (`eventsourcing.persistence.
OperationalError` and friends, the psycopg error as `__cause__`), and psycopg files
errors by class, not by cause: an index row that is too big is an
`OperationalError` just like a server that went away. So the decision is taken
on the psycopg error underneath and its SQLSTATE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class Backoff:
    """Exponential backoff: `first`, doubled on each failure up to `cap`, back to
    `first` after a success."""

    first: float = 0.1
    cap: float = 10.0
    _next: float = field(default=0.0, init=False)

    def failed(self) -> float:
        """The pause before the next attempt."""
        self._next = min(self.cap, self._next * 2) if self._next else self.first
        return self._next

    def succeeded(self) -> None:
        self._next = 0.0


def pause(seconds: float, should_stop: Callable[[], bool], step: float = 0.1) -> None:
    """Sleep up to `seconds`, waking early when told to stop."""
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(step, left))
