"""Read-your-writes waits that hold no thread and no connection while they wait.

`GET /runs/R/receipt?after_event=E&wait=S` used to poll the view from a worker
thread: 80 such requests took every thread of the HTTP server's pool and
`/health` waited 19 s behind them. Now a waiter is an asyncio event: the
projection runner NOTIFYs `views_channel(schema)` in each page's transaction
(delivered on commit) with the runs the page touched, and one listening
connection per HTTP process wakes the waiters of those runs, which look once
at the view and answer. How many may wait at once is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Identifier

from domain.errors import Unavailable
from infra.retry import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")
# A NOTIFY payload holds at most 8000 bytes: past this many runs, wake everyone.
MAX_NAMED_RUNS = 200
EVERYONE = "*"
# Waiters look again this often even without a notification (one lost while
# the listener reconnected must not cost a waiter its whole wait).
RECHECK_EVERY = 1.0


def views_channel(schema: str) -> str:
    """The channel the runner notifies after each page: one per schema (channels
    are database-wide), within PostgreSQL's 63-byte identifier limit."""
    return f"receipts_views_{schema}"[:63]


def payload(run_keys: Collection[UUID]) -> str:
    if not run_keys or len(run_keys) > MAX_NAMED_RUNS:
        return EVERYONE
    return ",".join(key.hex for key in run_keys)


class TooManyWaiters(Unavailable, RuntimeError):
    title = "Too many requests waiting"
    retry_after = 1

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} requests are already waiting for events to be applied (RECEIPTS_MAX_WAITERS); "
            "try again shortly, or ask without after_event"
        )


class Waiters:
    def __init__(self, database_url: str, channel: str, limit: int) -> None:
        self.database_url = database_url
        self.channel = channel
        self.limit = limit
        self._waiting: dict[UUID, set[asyncio.Event]] = {}
        self._count = 0
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @property
    def count(self) -> int:
        return self._count

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="views-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def wait_for(
        self, run_key: UUID, check: Callable[[], Awaitable[T | None]], timeout: float
    ) -> T | None:
        """`check()` now and after each commit that touched the run, until it
        returns something or `timeout` passes (then None)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._slot(run_key) as woken:
            while True:
                woken.clear()  # before looking: a commit during the check wakes the next wait
                found = await check()
                if found is not None:
                    return found
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, RECHECK_EVERY))

    @contextlib.asynccontextmanager
    async def _slot(self, run_key: UUID) -> AsyncIterator[asyncio.Event]:
        if self._count >= self.limit:
            raise TooManyWaiters(self.limit)
        self._count += 1
        woken = asyncio.Event()
        self._waiting.setdefault(run_key, set()).add(woken)
        try:
            yield woken
        finally:
            self._count -= 1
            events = self._waiting.get(run_key)
            if events is not None:
                events.discard(woken)
                if not events:
                    del self._waiting[run_key]

    def _wake(self, message: str) -> None:
        if message == EVERYONE:
            targets: Any = self._waiting.values()
        else:
            keys = []
            for part in message.split(","):
                with contextlib.suppress(ValueError):  # not ours: ignore
                    keys.append(UUID(hex=part))
            targets = [self._waiting[key] for key in keys if key in self._waiting]
        for events in targets:
            for woken in events:
                woken.set()

    async def _listen(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    await conn.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
                    backoff.succeeded()
                    self.listening.set()
                    self._wake(EVERYONE)  # whatever was committed while nobody listened
                    async for notify in conn.notifies():
                        self._wake(notify.payload)
            except (psycopg.Error, OSError) as error:
                self.listening.clear()
                delay = backoff.failed()
                log.warning(
                    "views listener lost the database (waiters look every %.0f s); reconnect in %.1f s: %s",
                    RECHECK_EVERY,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
