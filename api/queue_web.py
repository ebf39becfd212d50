"""The approval queue over HTTP: what waits for a person, and a person's decision on it.

`GET /queue` lists the caller's tenant's waiting steps; `POST /runs/{run}/steps/{step}/decision`
judges a decision by the queue's rules (a refusal is a 403 naming the rule) and publishes
one that stands to `agent-steps`; it shows in the queue and the receipt once recorded.
"""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from api.auth import PrincipalDep
from api.deps import QueriesDep, StoreDep, publisher_of
from domain.approvals import Decision
from projections.bounds import Text
from projections.queue import QueueFilter, QueuePage
from projections.reveal import reveal
from projections.review import Decided, decide

StepId = Annotated[Text, Path(description="the step's id (it may hold '/')")]


class DecisionAsked(BaseModel):
    decision: Literal["approve", "reject", "edit", "escalate"]
    version_hash: Text = Field(description="the version decided on: the queue item's version_hash")
    comment: str | None = Field(None, max_length=10_000, description="required to reject")
    output: str | None = Field(None, max_length=1_000_000, description="the new text, for an edit")


def queue_routes(app: FastAPI) -> None:
    @app.get("/queue", response_model=QueuePage, summary="Steps waiting for a person's decision")
    def queue(
        queries: QueriesDep, store: StoreDep, principal: PrincipalDep, f: Annotated[QueueFilter, Query()]
    ) -> QueuePage:
        tenant = principal.tenant_for(f.tenant)
        page = queries.queue(tenant, f)
        return reveal(store, tenant, page, (item.run_id for item in page.items))

    @app.post(
        "/runs/{run_id}/steps/{step_id:path}/decision",
        response_model=Decided,
        status_code=202,
        summary="Approve, reject (with a comment), edit or escalate a waiting step's current version",
        responses={403: {"description": "refused: the rule is named, and the attempt recorded"}},
    )
    async def decision(
        request: Request,
        run_id: Annotated[Text, Path()],
        step_id: StepId,
        asked: DecisionAsked,
        store: StoreDep,
        principal: PrincipalDep,
    ) -> Decided:
        publisher = publisher_of(request)
        wanted = Decision(asked.decision, asked.version_hash, asked.comment, asked.output)
        return await anyio.to_thread.run_sync(decide, store, publisher, principal, run_id, step_id, wanted)
