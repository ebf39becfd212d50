"""The HTTP API: incident questions over the views, receipts, verification.

Every error is an RFC 9457 problem document (`application/problem+json`) with a
sentence a person can act on; a bad parameter is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import AwareDatetime, BaseModel
from starlette.exceptions import HTTPException

from api.bootstrap import build_projections, build_queries, open_store
from api.liveness import Beats
from api.render import receipt_markdown
from domain.receipt import Receipt
from domain.run import NothingRecordedYet
from infra.settings import Settings
from infra.store import RunNotFound, RunStore, RunUnreadable
from projections.queries import (
    BadQuery,
    FindingsPage,
    NotYetApplied,
    Queries,
    RelatedRuns,
    RunFilter,
    RunsPage,
)

MARKDOWN = "text/markdown"
MAX_WAIT = 10.0
Tenant = Annotated[str, Query(description="isolation boundary of the run")]


class Verified(BaseModel):
    run_id: str
    tenant: str
    events: int
    verified: bool
    head: str | None
    first_bad_version: int | None = None
    first_bad_event_id: str | None = None
    reason: str | None = None


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings)
        build_projections(settings, store)  # the views' tables, if no runner made them yet
        app.state.store = store
        app.state.queries = build_queries(settings, store)
        beats = Beats(settings, "serve")
        beating = asyncio.create_task(beats.beat_forever())
        yield
        beating.cancel()
        store.close()
        await asyncio.to_thread(beats.stopped)

    app = FastAPI(
        title="Agent Receipts",
        version="1",
        summary="Receipts for AI-agent runs: reconstruct a run, find every run related to the damage.",
        lifespan=lifespan,
        responses={404: {"model": Problem}, 422: {"model": Problem}},
    )
    _install_problems(app)
    _routes(app)
    return app


def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


def _queries(request: Request) -> Queries:
    queries: Queries = request.app.state.queries
    return queries


StoreDep = Annotated[RunStore, Depends(_store)]
QueriesDep = Annotated[Queries, Depends(_queries)]


def _routes(app: FastAPI) -> None:
    @app.get("/runs", response_model=RunsPage, summary="List runs, newest first, with filters")
    def list_runs(queries: QueriesDep, f: Annotated[RunFilter, Query()]) -> RunsPage:
        return queries.runs(f)

    @app.get(
        "/runs/{run_id}/receipt",
        summary="A run's receipt: JSON, or Markdown (Accept: text/markdown)",
        responses={200: {"content": {MARKDOWN: {}}}, 503: {"model": Problem}},
    )
    def receipt(
        run_id: str,
        store: StoreDep,
        queries: QueriesDep,
        tenant: Tenant = "default",
        as_of: Annotated[AwareDatetime | None, Query(description="the receipt as it stood then")] = None,
        after_event: Annotated[str | None, Query(description="wait until this event is in it")] = None,
        wait: Annotated[float, Query(gt=0, le=MAX_WAIT, description="seconds to wait for after_event")] = 2.0,
        accept: Annotated[str, Header()] = "application/json",
    ) -> Response:
        after = queries.unfinished_after
        if as_of is not None:
            # From the aggregate's own events: the views only know the present.
            document = store.receipt(tenant, run_id, after, as_of=as_of).model_dump_json()
        elif after_event is not None:
            document = queries.receipt_after(tenant, run_id, after_event, wait)
        else:
            # A run recorded but not yet in the views is rendered from the store;
            # only a run the store does not have is a 404.
            document = (
                queries.receipt_json(tenant, run_id) or store.receipt(tenant, run_id, after).model_dump_json()
            )
        if MARKDOWN in accept:
            markdown = receipt_markdown(Receipt.model_validate_json(document))
            return PlainTextResponse(markdown, media_type=MARKDOWN)
        return Response(document, media_type="application/json")

    @app.get("/runs/{run_id}/verify", response_model=Verified, summary="Recompute the run's hash chain")
    def verify(run_id: str, store: StoreDep, tenant: Tenant = "default") -> Verified:
        v = store.verify(tenant, run_id)
        broken = v.broken
        return Verified(
            run_id=run_id,
            tenant=tenant,
            events=len(v.links),
            verified=broken is None,
            head=v.head,
            first_bad_version=broken.version if broken else None,
            first_bad_event_id=broken.event_id if broken else None,
            reason=broken.reason if broken else None,
        )

    @app.get(
        "/entities/{system}/{kind}/{entity_id:path}/runs",
        response_model=RelatedRuns,
        summary="Runs that proposed, executed or reverted something on this record",
    )
    def touched(
        queries: QueriesDep,
        system: str,
        kind: str,
        entity_id: Annotated[str, Path()],
        tenant: Tenant = "default",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RelatedRuns:
        return queries.touched(system, kind, entity_id, tenant=tenant, limit=limit)

    @app.get(
        "/sources/{system}/{kind}/{source_id:path}/runs",
        response_model=RelatedRuns,
        summary="Runs that relied on this document or record (or on one version of it)",
    )
    def relied_on(
        queries: QueriesDep,
        system: str,
        kind: str,
        source_id: Annotated[str, Path()],
        tenant: Tenant = "default",
        version: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RelatedRuns:
        return queries.relied_on(system, kind, source_id, tenant=tenant, version=version, limit=limit)

    @app.get("/findings", response_model=FindingsPage, summary="Receipt gaps across runs, newest runs first")
    def findings(
        queries: QueriesDep,
        tenant: Tenant = "default",
        code: str | None = None,
        severity: str | None = None,
        workflow: str | None = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: str | None = None,
    ) -> FindingsPage:
        return queries.findings(
            tenant=tenant,
            code=code,
            severity=severity,
            workflow=workflow,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )

    @app.get("/health", summary="Liveness, and how many events each view is behind the event store")
    def health(store: StoreDep, queries: QueriesDep) -> dict[str, Any]:
        last = store.steps.max_notification_id() or 0
        behind = {view: last - position for view, position in queries.positions(store.name).items()}
        return {"status": "ok", "time": datetime.now(UTC).isoformat(), "last_event": last, "behind": behind}


def _install_problems(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(BadQuery)
    async def bad_query(_request: Request, error: BadQuery) -> JSONResponse:
        errors = [{"field": error.field, "message": error.message}]
        return problem(422, "Invalid request", str(error), errors=errors)

    @app.exception_handler(RunNotFound)
    async def not_found(_request: Request, error: RunNotFound) -> JSONResponse:
        return problem(404, "Run not found", str(error))

    @app.exception_handler(NothingRecordedYet)
    async def too_early(_request: Request, error: NothingRecordedYet) -> JSONResponse:
        return problem(404, "Nothing recorded at that time", str(error))

    @app.exception_handler(RunUnreadable)
    async def unreadable(_request: Request, error: RunUnreadable) -> JSONResponse:
        return problem(409, "Run record damaged", str(error))

    @app.exception_handler(NotYetApplied)
    async def not_yet(_request: Request, error: NotYetApplied) -> JSONResponse:
        response = problem(503, "Event not applied yet", str(error))
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        detail = _HTTP_DETAIL.get(error.status_code, str(error.detail))
        return problem(error.status_code, str(error.detail), detail)


_HTTP_DETAIL = {
    404: "no such endpoint; GET /openapi.json lists them",
    405: "this endpoint does not take that method; GET /openapi.json lists what it takes",
}
