"""How a process shows it is alive (heartbeats in `receipts_processes`), records
what it handled (`receipts_incidents`), and how ingest notices a consumer that
never gets partitions.

Beats come from each process's own loop, between turns, never from a free
thread: a thread would keep beating while the loop is stuck. Each write opens
its own short-lived connection, so it never shares a transaction with the work,
and a database that is away costs a logged warning, never the process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg

from consumers.ingest import Ingest, StepConsumer
from infra.health import BEAT_EVERY, Health, ProcessName
from infra.settings import Settings

log = logging.getLogger(__name__)
# A rebuilt consumer that again gets nothing waits twice as long, up to this many
# times the bound, before the next rebuild: each one costs the group a rebalance.
JOIN_BACKOFF_MOST = 8
# Rebuilds in a row after which a stuck join is an ERROR and an incident.
JOIN_FAILURES_LOUD = 3
# A member stuck in a join has a request in flight that the broker may never
# answer: leaving must not wait for it.
CLOSE_MS = 2000


class Beats:
    """This process's row in `receipts_processes`, and its incidents."""

    def __init__(self, settings: Settings, kind: str, every: float = BEAT_EVERY.total_seconds()) -> None:
        assert settings.database_url
        self.url = settings.database_url
        self.health = Health(settings.database_schema)
        self.process = ProcessName.here(kind)
        self.every = every
        self._last = float("-inf")
        self._failing = False

    def beat(self, state: str = "running", detail: str = "", now: bool = False) -> None:
        """At most one write every `every` seconds, unless `now`. The first also marks
        this host's processes that died without a word (see Health.bury)."""
        if not now and time.monotonic() - self._last < self.every:
            return
        if self._last == float("-inf"):
            self._write("dead processes", self._bury)
        self._last = time.monotonic()
        self._write("heartbeat", lambda curs: self.health.beat(curs, self.process, state, detail))

    def _bury(self, curs: psycopg.Cursor[Any]) -> None:
        for name in self.health.bury(curs, self.process.host):
            log.warning("%s died without stopping cleanly; marked died", name)

    def stopped(self) -> None:
        self.beat("stopped", now=True)

    def record(self, kind: str, subject: str, **detail: Any) -> bool:
        return self._write(
            f"incident {kind} ({subject})", lambda curs: self.health.record(curs, kind, subject, **detail)
        )

    def on_each_turn(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """`should_stop` as a loop calls it once per turn, beating on the way."""

        def beat_then_ask() -> bool:
            self.beat()
            return should_stop()

        return beat_then_ask

    async def beat_forever(self) -> None:
        """For the HTTP server: beats from its event loop, so a blocked loop stops beating
        (the write itself runs in a thread, so it never blocks requests)."""
        while True:
            await asyncio.to_thread(self.beat, "running", "", True)
            await asyncio.sleep(self.every)

    def _write(self, what: str, write: Callable[[psycopg.Cursor[Any]], None]) -> bool:
        """One write on a fresh connection; False when the database is away."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn, conn.cursor() as curs:
                write(curs)
        except psycopg.Error as error:
            if not self._failing:  # once per outage, not every two seconds
                log.warning("%s: %s not written: %s", self.process.name, what, error)
            self._failing = True
            return False
        if self._failing:
            log.info("%s writes to the database again", self.process.name)
        self._failing = False
        return True


class JoinWatchdog:
    """Rebuilds the ingest consumer when it has had no partitions for `bound` seconds
    while the broker answers: a member the group never completes a join for (seen
    on the embedded broker after many SIGKILLs during joins) is replaced by a new
    member. A process beyond the partition count also gets none; the growing
    bound keeps its rebuilds rare, and the warning says so."""

    def __init__(
        self,
        ingest: Ingest,
        settings: Settings,
        new_consumer: Callable[[str], StepConsumer],
        beats: Beats | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ingest = ingest
        self.settings = settings
        self.new_consumer = new_consumer
        self.beats = beats
        self.clock = clock
        self.bound = settings.join_timeout_seconds
        self.failures = 0
        self._since = clock()

    def check(self) -> None:
        """Called between turns of the loop, when no batch is in flight."""
        now = self.clock()
        if self.ingest.consumer.assignment():
            self.failures = 0
            self.bound = self.settings.join_timeout_seconds
            self._since = now
            return
        if now - self._since < self.bound:
            return
        self._since = now
        if not _answers(str(self.settings.kafka_bootstrap)):
            return  # an outage, not a stuck join: the consumer reconnects by itself
        self.failures += 1
        group, topic = self.settings.group, self.settings.topic
        log.warning(
            "ingest consumer in group %s has had no partitions of %s for %.0f s; leaving the group "
            "and joining as a new member (attempt %d; more ingest processes than partitions also "
            "looks like this)",
            group,
            topic,
            self.bound,
            self.failures,
        )
        self.ingest.consumer.close(autocommit=False, timeout_ms=CLOSE_MS)
        # Past a few new members in a row the broker holds the group itself in a join
        # that never completes (Tansu 0.6 was seen to): join a fresh group. Positions
        # live in PostgreSQL, so nothing is re-applied or skipped; other ingest
        # processes left in the old group read the same partitions, and the stored
        # positions turn their overlap into retries, never doubles.
        fresh = self.failures >= JOIN_FAILURES_LOUD
        self.ingest.consumer = self.new_consumer(f"{group}.rejoined-{self.failures}" if fresh else group)
        self.ingest.subscribe(topic)
        self.bound = min(self.bound * 2, self.settings.join_timeout_seconds * JOIN_BACKOFF_MOST)
        if self.failures >= JOIN_FAILURES_LOUD:
            log.error(
                "consumer group %s: %d new members in a row got no partitions of %s; the broker "
                "may hold the group in a join that never completes: joining a fresh group",
                group,
                self.failures,
                topic,
            )
            if self.beats is not None:
                self.beats.record("consumer_join_stuck", group, topic=topic, attempts=self.failures)

    def on_each_turn(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        def check_then_ask() -> bool:
            self.check()
            return should_stop()

        return check_then_ask


def _answers(bootstrap: str) -> bool:
    """True when one of the bootstrap servers accepts a connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "localhost", int(port)), timeout=1).close()
        except (OSError, ValueError):
            continue
        return True
    return False
