"""`up` as a supervisor: the processes it starts, watches and restarts.

Each child (the embedded PostgreSQL and broker, ingest, project, serve) is a
process of its own. One that exits while nobody asked it to is started again
after a wait that doubles each time (back to the first after a healthy run); a
child that keeps dying makes `up` give up loudly instead of looping for ever.
Every restart and the giving up are recorded as incidents, so an operator sees
them after the fact, not only in a log that scrolled away.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from api.liveness import Beats
from infra.settings import Settings

log = logging.getLogger("receipts.up")
DRAIN_SECONDS = 30.0
# Set in `up`'s children: the pid they die with (api.service_cli.die_with_parent).
PARENT = "RECEIPTS_UP_PID"


class Stop:
    """SIGINT/SIGTERM set a flag; the loop finishes its batch and looks at it.

    With `drain`, the first signal asks to drain (stop once everything published
    is ingested), a second one to stop after the current batch. A signal that
    comes because `up` died (the parent-death signal) stops at once: nobody is
    left to wait for."""

    def __init__(self, drain: bool = False) -> None:
        self.drain = drain
        self.requested_at: float | None = None
        self.hard = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def requested(self) -> bool:
        return self.requested_at is not None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
            self.hard = not self.drain or _orphaned()
            if not self.hard:
                print(
                    f"\n{signal.Signals(signum).name}: finishing what was published, then "
                    "stopping (again to stop now)",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            self.hard = True


def _orphaned() -> bool:
    parent = int(os.environ.get(PARENT, "0"))
    return bool(parent) and os.getppid() != parent


def drain_then_stop(stop: Stop, caught_up: Callable[[float], bool]) -> Callable[[], bool]:
    """A should_stop for a loop that drains: true once caught up after the first
    signal, at once after a hard stop, and at the latest DRAIN_SECONDS after it."""

    def should_stop() -> bool:
        if stop.requested_at is None:
            return False
        if stop.hard or time.monotonic() - stop.requested_at > DRAIN_SECONDS:
            return True
        return caught_up(stop.requested_at)

    return should_stop


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first: float = 1.0
    most: float = 30.0
    healthy_after: float = 60.0
    limit: int = 10
    window: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> RestartPolicy:
        return cls(
            settings.restart_backoff_seconds,
            settings.restart_backoff_max_seconds,
            settings.restart_healthy_after_seconds,
            settings.restart_limit,
            settings.restart_window_seconds,
        )


class GaveUp(RuntimeError):
    """A child exited too often within the window."""


class Child:
    """One process `up` starts, watches and restarts."""

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen[Any]],
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._start = start
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[Any] | None = None
        self.started_at = 0.0
        self.wait = 0.0
        self.exits: deque[float] = deque()
        self.due: float | None = None  # when a restart is due
        self.last_code: int | None = None

    def start(self, now: float) -> None:
        self.started_at = now
        self.process = self._start()
        self.due = None

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


def stop_children(children: Sequence[Child], again: Callable[[], bool] = lambda: False) -> None:
    """Signal them all, then wait for each up to its timeout (and kill it after).
    When `again` turns true while waiting, each still running is signalled once more."""
    for child in children:
        child.signal(child.stop_signal)
    repeated = False
    deadline = {child.name: time.monotonic() + child.stop_timeout for child in children}
    for child in children:
        process = child.process
        while process is not None and process.poll() is None:
            if not repeated and again():
                repeated = True
                for other in children:
                    other.signal(other.stop_signal)
            if time.monotonic() > deadline[child.name]:
                log.warning("%s did not stop within %.0f s; killing it", child.name, child.stop_timeout)
                process.kill()
                process.wait()
                break
            time.sleep(0.05)


class Supervisor:
    def __init__(
        self,
        policy: RestartPolicy,
        beats: Callable[[], Beats | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.beats = beats  # none until the database is up
        self.clock = clock
        self.children: dict[str, Child] = {}

    def start(self, child: Child) -> Child:
        child.wait = self.policy.first
        child.start(self.clock())
        self.children[child.name] = child
        return child

    def turn(self) -> None:
        """Look at each child once: a restart for one that exited, a start for one that is due."""
        for child in list(self.children.values()):
            now = self.clock()
            if child.due is None and (code := child.exited()) is not None:
                self._exited(child, code, now)
            if child.due is not None and now >= child.due:
                self._restart(child)

    def _exited(self, child: Child, code: int | None, now: float) -> None:
        if now - child.started_at >= self.policy.healthy_after:
            child.wait = self.policy.first
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.policy.window:
            child.exits.popleft()
        pid = child.process.pid if child.process else None
        if len(child.exits) > self.policy.limit:
            log.error(
                "%s (pid %s) exited with code %s, %d times within %.0f s: giving up",
                child.name,
                pid,
                code,
                len(child.exits),
                self.policy.window,
            )
            self._record("child_gave_up", child, code=code, exits=len(child.exits), window=self.policy.window)
            raise GaveUp(f"{child.name} exited {len(child.exits)} times within {self.policy.window:.0f} s")
        log.warning(
            "%s (pid %s) exited with code %s; restarting it in %.1f s", child.name, pid, code, child.wait
        )
        child.last_code = code
        child.due = now + child.wait
        child.wait = min(child.wait * 2, self.policy.most)

    def _restart(self, child: Child) -> None:
        try:
            child.start(self.clock())
        except Exception as error:  # a server that cannot start yet: count it as an exit
            log.warning("%s did not start: %s", child.name, error)
            child.due = None
            self._exited(child, None, self.clock())
            return
        pid = child.process.pid if child.process else None
        log.warning("%s restarted (pid %s)", child.name, pid)
        self._record("child_restarted", child, pid=pid, exit_code=child.last_code, exits=len(child.exits))

    def _record(self, kind: str, child: Child, **detail: Any) -> None:
        beats = self.beats()
        if beats is not None:
            beats.record(kind, child.name, **detail)

    def stop(self, names: Sequence[str], again: Callable[[], bool] = lambda: False) -> None:
        stop_children([self.children[name] for name in names if name in self.children], again)
