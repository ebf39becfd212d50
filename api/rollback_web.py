"""Rollbacks over HTTP: ask for one (`POST /runs/{run}/rollback`, with an `Idempotency-Key`),
and list them with where each stands (`GET /rollbacks`)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import PrincipalDep
from api.deps import QueriesDep, StoreDep, publisher_of
from domain.rollback import RollbackPlan
from infra.idempotency import Answered, once
from projections.bounds import Text
from projections.review import ask_rollback
from projections.rollbacks import RollbackFilter, RollbacksPage


class RollbackAsked(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why: it goes in the receipt")
    steps: list[Text] = Field(default_factory=list, max_length=1000, description="step ids; none: the run")


class PlannedReversal(BaseModel):
    reverse_id: str
    step_id: str
    method: str


class Standing(BaseModel):
    step_id: str
    runbook: str


class RollbackAccepted(BaseModel):
    rollback_id: str
    run_id: str
    reverse: list[PlannedReversal] = Field(description="one per executed step, newest first")
    stands: list[Standing] = Field(description="what cannot be undone, and what a person must do")
    partial: bool = Field(description="true when something executed stands: never reported as done")


def accepted(plan: RollbackPlan) -> RollbackAccepted:
    return RollbackAccepted(
        rollback_id=plan.rollback_id,
        run_id=plan.run_id,
        reverse=[
            PlannedReversal(reverse_id=r.reverse_id, step_id=r.step_id, method=r.method) for r in plan.reverse
        ],
        stands=[Standing(step_id=s.step_id or "", runbook=s.data.runbook) for s in plan.stands],
        partial=plan.partial,
    )


def rollback_routes(app: FastAPI) -> None:
    @app.post(
        "/runs/{run_id}/rollback",
        response_model=RollbackAccepted,
        status_code=202,
        summary="Ask to roll a run (or some of its steps) back; reverse events go to the rollback tooling",
        responses={
            403: {"description": "the principal lacks the rollback role (the attempt is recorded)"},
            409: {"description": "a request with this Idempotency-Key is still being handled"},
        },
    )
    async def ask(
        request: Request,
        run_id: Annotated[Text, Path()],
        asked: RollbackAsked,
        store: StoreDep,
        principal: PrincipalDep,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        publisher = publisher_of(request)
        settings = request.app.state.settings

        def handle() -> Answered:
            plan = ask_rollback(
                store,
                publisher,
                principal,
                run_id,
                asked.reason,
                asked.steps,
                settings.reverse_topic,
                idempotency_key,
            )
            return Answered(202, accepted(plan).model_dump(mode="json"))

        if idempotency_key is None:
            answered = await anyio.to_thread.run_sync(handle)
        else:
            body = {"run_id": run_id, **asked.model_dump()}
            datastore, schema = store.steps.datastore, settings.database_schema
            answered = await anyio.to_thread.run_sync(
                once, datastore, schema, principal.tenant, idempotency_key, body, handle
            )
        return JSONResponse(answered.body, status_code=answered.status)

    @app.get("/rollbacks", response_model=RollbacksPage, summary="Every rollback asked for, newest first")
    def list_rollbacks(
        queries: QueriesDep, principal: PrincipalDep, f: Annotated[RollbackFilter, Query()]
    ) -> RollbacksPage:
        return queries.rollbacks(principal.tenant_for(f.tenant), f)
