"""What the HTTP routes are handed: the store and the questions, from the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.bootstrap import build_publisher
from infra.publisher import Publisher
from infra.settings import NotRunning
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


def publisher_of(request: Request) -> Publisher:
    """The HTTP process's publisher (decisions, rollback requests), made when first needed:
    reading needs no broker. Its steps go out as JSON."""
    state = request.app.state
    if getattr(state, "publisher", None) is None:
        settings = state.settings
        if not settings.kafka_bootstrap:
            raise NotRunning("no Kafka to publish to: RECEIPTS_KAFKA_BOOTSTRAP is not set")
        state.publisher = build_publisher(settings.model_copy(update={"encoding": "json"}), as_service=True)
    publisher: Publisher = state.publisher
    return publisher
