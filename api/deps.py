"""What the HTTP routes are handed: the store and the questions, from the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from infra.store import RunStore
from projections.queries import Queries


# Dependencies are coroutines: a sync one would take a worker thread per request.
async def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


async def _queries(request: Request) -> Queries:
    queries: Queries = request.app.state.queries
    return queries


StoreDep = Annotated[RunStore, Depends(_store)]
QueriesDep = Annotated[Queries, Depends(_queries)]
