"""The HTTP API: incident questions over the views, receipts, verification.

Every endpoint, /openapi.json included, takes `Authorization: Bearer TOKEN`
(api/auth.py) and answers in the caller's own tenant: another tenant's run is
a 404 exactly like a run that does not exist. There are no /docs pages: a
browser cannot send the token to them; load /openapi.json into a viewer instead.

Every error is an RFC 9457 problem document (`application/problem+json`) with a
sentence a person can act on; a bad parameter is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api import auth, console
from api.auth import AdminDep, PrincipalDep, TenantDep
from api.bootstrap import build_queries, build_status, open_store, require_tables
from api.deps import QueriesDep, StoreDep
from api.liveness import Beats
from api.queue_web import queue_routes
from api.readiness_render import readiness_markdown
from api.render import receipt_markdown
from api.rollback_web import rollback_routes
from domain.errors import Invalid, ReceiptsError
from domain.personal import SEALED_PREFIX
from domain.readiness import Readiness
from domain.receipt_model import Receipt
from domain.run import run_uuid
from infra.policies import NoPolicy
from infra.settings import Settings
from infra.store import RunStore
from projections.answers import FindingsPage, NotYetApplied, RelatedRuns, RunFilter, RunQuery, RunsPage
from projections.bounds import Cursor, Instant, Text
from projections.integrity import Verified, served, stored_chain, verify_run
from projections.queries import Queries
from projections.status import HealthReport, StatusProbe
from projections.waiters import Waiters, views_channel

MARKDOWN = "text/markdown"
MAX_WAIT = 10.0
# Every parameter is bounded (projections/bounds.py): no NUL, ids of at most
# MAX_TEXT characters, times within [EARLIEST, LATEST): a 422, never a 500.
RunId = Annotated[Text, Path(description="the run's id as its publisher named it")]
Name = Annotated[Text, Path()]
Accept = Annotated[str, Header(max_length=1024)]


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
        require_tables(settings, store)  # the read side creates none: `up` or `migrate` does
        auth.install(settings, store, app.state)
        console.install(settings, store, app.state)
        app.state.store = store
        app.state.settings = settings
        app.state.queries = build_queries(settings, store)
        app.state.status = build_status(settings, store)
        # /health runs on threads of its own: never queued behind the shared pool's load.
        app.state.health_threads = anyio.CapacityLimiter(2)
        assert settings.database_url  # open_store needs it too
        waiters = Waiters(
            settings.database_url, views_channel(settings.database_schema), settings.max_waiters
        )
        app.state.waiters = waiters
        await waiters.start()
        beats = Beats(settings, "serve")
        beating = asyncio.create_task(beats.beat_forever())
        yield
        beating.cancel()
        await waiters.stop()
        app.state.status.close()
        if getattr(app.state, "publisher", None) is not None:
            await asyncio.to_thread(app.state.publisher.close)
        store.close()
        await asyncio.to_thread(beats.stopped)

    app = FastAPI(
        title="Agent Receipts",
        version="1",
        summary="Receipts for AI-agent runs: reconstruct a run, find every run related to the damage.",
        lifespan=lifespan,
        responses={401: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
        # Every route depends on a principal; the built-in /openapi.json and /docs would not.
        dependencies=[Depends(auth.authenticated)],
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    _install_problems(app)
    _routes(app)
    console.mount_console(app)
    return app


class PolicyVersionPublic(BaseModel):
    """A policy put in force: its version (SHA-256 of the canonical document), when, by whom."""

    version: str
    loaded_at: datetime
    loaded_by: str


class PolicyPublic(PolicyVersionPublic):
    document: dict[str, Any]  # the canonical document the version hashes
    source: str  # the text as loaded (TOML)


class PolicyVersionsPublic(BaseModel):
    versions: list[PolicyVersionPublic]  # oldest first; the last is in force


def _routes(app: FastAPI) -> None:
    _policy_routes(app)
    queue_routes(app)
    rollback_routes(app)

    @app.get("/runs", response_model=RunsPage, summary="List runs, newest first, with filters")
    def list_runs(queries: QueriesDep, principal: PrincipalDep, f: Annotated[RunQuery, Query()]) -> RunsPage:
        # The tenant is a field of the query model (which forbids unknown fields), not TenantDep.
        return queries.runs(RunFilter(**{**f.model_dump(), "tenant": principal.tenant_for(f.tenant)}))

    @app.get(
        "/runs/{run_id}/receipt",
        summary="A run's receipt: JSON, or Markdown (Accept: text/markdown)",
        responses={200: {"content": {MARKDOWN: {}}}, 503: {"model": Problem}},
    )
    async def receipt(
        request: Request,
        run_id: RunId,
        store: StoreDep,
        queries: QueriesDep,
        tenant: TenantDep,
        as_of: Annotated[Instant | None, Query(description="the receipt as it stood then")] = None,
        after_event: Annotated[Text | None, Query(description="wait until this event is in it")] = None,
        wait: Annotated[float, Query(gt=0, le=MAX_WAIT, description="seconds to wait for after_event")] = 2.0,
        accept: Accept = "application/json",
    ) -> Response:
        viewed: str | None = None
        if after_event is not None and as_of is None:
            # Waits on the event loop, woken by the views' commits: no thread and no
            # connection is held while waiting, only for each look (a few ms).
            waiters: Waiters = request.app.state.waiters

            def look() -> Awaitable[str | None]:
                return anyio.to_thread.run_sync(queries.receipt_including, tenant, run_id, after_event)

            viewed = await waiters.wait_for(run_uuid(tenant, run_id), look, wait)
            if viewed is None:
                raise NotYetApplied(after_event, run_id, wait)
        return await anyio.to_thread.run_sync(_receipt, store, queries, tenant, run_id, as_of, viewed, accept)

    @app.get(
        "/runs/{run_id}/verify",
        response_model=Verified,
        summary="Recompute the run's hash chain; compare the receipts view with a fresh fold of its events",
    )
    def verify(run_id: RunId, store: StoreDep, queries: QueriesDep, tenant: TenantDep) -> Verified:
        return verify_run(store, queries, tenant, run_id)

    @app.get(
        "/entities/{system}/{kind}/{entity_id:path}/runs",
        response_model=RelatedRuns,
        summary="Runs that proposed, executed or reverted something on this record",
    )
    def touched(
        queries: QueriesDep,
        system: Name,
        kind: Name,
        entity_id: Name,
        tenant: TenantDep,
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
        system: Name,
        kind: Name,
        source_id: Name,
        tenant: TenantDep,
        version: Annotated[Text | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RelatedRuns:
        return queries.relied_on(system, kind, source_id, tenant=tenant, version=version, limit=limit)

    @app.get("/findings", response_model=FindingsPage, summary="Receipt gaps across runs, newest runs first")
    def findings(
        queries: QueriesDep,
        tenant: TenantDep,
        code: Annotated[Text | None, Query()] = None,
        severity: Annotated[Text | None, Query()] = None,
        workflow: Annotated[Text | None, Query()] = None,
        since: Annotated[Instant | None, Query()] = None,
        until: Annotated[Instant | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[Cursor | None, Query()] = None,
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

    @app.get(
        "/readiness",
        response_model=Readiness,
        summary="Per workflow and lane: runs, complete receipts, findings, rates, and a verdict "
        "(Markdown with Accept: text/markdown)",
    )
    def lane_readiness(
        queries: QueriesDep,
        tenant: TenantDep,
        workflow: Annotated[Text | None, Query()] = None,
        since: Annotated[Instant | None, Query(description="runs started at or after")] = None,
        accept: Accept = "application/json",
    ) -> Readiness | Response:
        report = queries.readiness(tenant, workflow, since)
        if MARKDOWN in accept:
            return PlainTextResponse(readiness_markdown(report), media_type=MARKDOWN)
        return report

    @app.get(
        "/health",
        response_model=HealthReport,
        summary="Processes, view lag, quarantined events, recent incidents; 503 when degraded",
        responses={503: {"model": HealthReport, "description": "degraded: `problems` says why"}},
    )
    async def health(request: Request, _admin: AdminDep) -> JSONResponse:
        status: StatusProbe = request.app.state.status
        report = await anyio.to_thread.run_sync(status.report, limiter=request.app.state.health_threads)
        body = report.model_dump(mode="json")
        waiters: Waiters = request.app.state.waiters  # this HTTP process's read-your-writes waits
        listening = waiters.listening.is_set()
        body["waiters"] = {"waiting": waiters.count, "limit": waiters.limit, "listening": listening}
        return JSONResponse(body, status_code=200 if report.status == "ok" else 503)


def _receipt(
    store: RunStore,
    queries: Queries,
    tenant: str,
    run_id: str,
    as_of: datetime | None,
    viewed: str | None,
    accept: str,
) -> Response:
    document = receipt_document(store, queries, tenant, run_id, as_of, viewed)
    if MARKDOWN in accept:
        markdown = receipt_markdown(Receipt.model_validate_json(document))
        return PlainTextResponse(markdown, media_type=MARKDOWN)
    return Response(document, media_type="application/json")


def receipt_document(
    store: RunStore,
    queries: Queries,
    tenant: str,
    run_id: str,
    as_of: datetime | None = None,
    viewed: str | None = None,
) -> str:
    """The receipt every reader is served (the API, the console), as JSON: `viewed` is the
    view's document when the caller has it already."""
    after = queries.unfinished_after
    if as_of is not None:
        # From the aggregate's own events: the views only know the present.
        return _folded(store.receipt(tenant, run_id, after, as_of=as_of))
    # A view's document vouches for nothing: its integrity is the store's
    # chain, recomputed now. A run recorded but not yet in the views is
    # rendered from the store; only a run the store does not have is a 404.
    viewed = viewed or queries.receipt_json(tenant, run_id)
    # A view holding sealed personal fields (it keeps no plaintext to outlive a key) is
    # not served either: the store's fold opens them, or shows them erased.
    if viewed is not None and SEALED_PREFIX not in viewed:
        return served(viewed, stored_chain(store, tenant, run_id))
    return _folded(store.receipt(tenant, run_id, after))


def _policy_routes(app: FastAPI) -> None:
    @app.get("/policy", summary="The routing policy in force now, or at a time (404: none loaded then)")
    def policy(
        store: StoreDep,
        as_of: Annotated[Instant | None, Query(description="the policy in force then")] = None,
    ) -> PolicyPublic:
        loaded = store.policy_in_force(as_of)
        return PolicyPublic(
            version=loaded.version,
            loaded_at=loaded.loaded_at,
            loaded_by=loaded.loaded_by,
            document=loaded.document,
            source=loaded.source,
        )

    @app.get("/policy/versions", summary="Every policy put in force, oldest first (404: none yet)")
    def policy_versions(store: StoreDep) -> PolicyVersionsPublic:
        versions = store.policy_versions()
        if not versions:
            raise NoPolicy("no policy has been loaded yet: ingest loads one when it starts")
        return PolicyVersionsPublic(
            versions=[
                PolicyVersionPublic(version=v.version, loaded_at=v.loaded_at, loaded_by=v.loaded_by)
                for v in versions
            ]
        )


def _folded(receipt: Receipt) -> str:
    """A receipt folded from the store just now: its chain was checked now."""
    integrity = receipt.integrity.model_copy(update={"checked_at": datetime.now(UTC)})
    return receipt.model_copy(update={"integrity": integrity}).model_dump_json()


def _install_problems(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(ReceiptsError)
    async def receipts_error(_request: Request, error: ReceiptsError) -> JSONResponse:
        """Every error of ours carries its status and title: one handler."""
        extra: dict[str, Any] = {}
        if isinstance(error, Invalid):
            extra["errors"] = [{"field": error.field, "message": error.message}]
        response = problem(error.status, error.title, error.detail, **extra)
        response.headers.update(error.headers())
        return response

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        detail = _HTTP_DETAIL.get(error.status_code, str(error.detail))
        return problem(error.status_code, str(error.detail), detail)


_HTTP_DETAIL = {
    404: "no such endpoint; GET /openapi.json lists them",
    405: "this endpoint does not take that method; GET /openapi.json lists what it takes",
}
