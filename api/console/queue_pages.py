"""The queue page and one pending step: what waits, and a reviewer's decision on it.

The queue comes from the queue view (one paged query); one step from the run's
own events (as `decide` reads it: the page shows the version a decision is
judged against). Decisions go through projections.review.decide, the API's
function: the same rules, the same refusals, recorded the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Literal
from urllib.parse import urlencode

import anyio
from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.console.diffs import Diff, current_text, unified, version_chain
from api.console.session import CheckedSession, SessionDep
from api.console.templating import page, step_url
from api.deps import QueriesDep, StoreDep, publisher_of
from api.queue_web import DecisionAsked
from domain.approvals import Decision
from domain.errors import Invalid
from domain.principals import Principal
from domain.receipt import checked
from domain.receipt_model import StepReceipt
from domain.source_findings import STALE_SOURCE_AGE
from domain.step_values import Source
from domain.steps import content_hash
from infra.sessions import Session
from infra.store import RunStore
from projections.bounds import Cursor, Text
from projections.queries import Queries
from projections.queue import QueueItem, QueuePage, ReviewerQueue, queue_items
from projections.reveal import reveal
from projections.review import DecisionRefused, StepNotFound, decide

NEIGHBOURS = 200  # how far along the queue j/k and "the next item" look
# How long the step page waits (reloading) for an edit just sent to be recorded.
EDIT_PATIENCE = 30.0

# The fields the step page's forms (preview and decide) send.
FormText = Annotated[Text, Form()]
EditedText = Annotated[str, Form(max_length=1_000_000)]  # an edited output, as typed


@dataclass(frozen=True, slots=True)
class PendingStep:
    """One step as its page shows it: the queue item (None once nothing waits), the step's
    record, each edit's diff, and the stale sources."""

    item: QueueItem | None
    step: StepReceipt
    workflow: str | None
    chain: list[Diff]
    current: str
    sources: list[Source]  # the evidence the step relied on, waiting or not
    stale: frozenset[str]


def pending_step(store: RunStore, tenant: str, run_id: str, step_id: str) -> PendingStep:
    receipt, contract = checked(store.run(tenant, run_id).entries, store.contract)
    step = next((s for s in receipt.steps if s.step_id == step_id), None)
    if step is None:
        raise StepNotFound(f"run '{run_id}' has no step '{step_id}'")
    item = next((i for _, i in queue_items(receipt, contract) if i.step_id == step_id), None)
    proposed, used = step.timestamps.proposed, set(step.source_ids)
    sources = [s for s in receipt.sources if s.id in used or s.key in used]
    stale = frozenset(
        s.key for s in sources if proposed and s.retrieved_at and proposed - s.retrieved_at > STALE_SOURCE_AGE
    )
    chain, current = version_chain(step), current_text(step)
    return PendingStep(item, step, receipt.workflow, chain, current, sources, stale)


def _reviewer_queue(
    principal: Principal,
    workflow: str | None = None,
    lane: Literal["review", "escalate"] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> ReviewerQueue:
    return ReviewerQueue(
        roles=sorted(principal.roles), workflow=workflow, lane=lane, cursor=cursor, limit=limit
    )


def neighbours(
    queries: Queries, principal: Principal, run_id: str, step_id: str
) -> tuple[str | None, str | None]:
    """The queue items before and after this one (links for k and j, and where a decision
    goes next), in the queue's order."""
    listed = queries.reviewer_queue(principal.tenant, _reviewer_queue(principal, limit=NEIGHBOURS))
    keys = [(i.run_id, i.step_id) for i in listed.items]
    if (run_id, step_id) not in keys:
        first = step_url(*keys[0]) if keys else None
        return None, first
    at = keys.index((run_id, step_id))
    before = step_url(*keys[at - 1]) if at > 0 else None
    after = step_url(*keys[at + 1]) if at + 1 < len(keys) else None
    return before, after


def routes(app: FastAPI) -> None:
    @app.get("/queue", response_class=HTMLResponse)
    def queue(
        request: Request,
        session: SessionDep,
        store: StoreDep,
        queries: QueriesDep,
        workflow: Annotated[Text | None, Query()] = None,
        lane: Annotated[Text | None, Query(description="review or escalate; empty: any")] = None,
        cursor: Annotated[Cursor | None, Query()] = None,
        sent: Annotated[Text | None, Query()] = None,
    ) -> Response:
        # A form's empty field means "any", not a value: the filter form sends every field.
        try:
            asked = _reviewer_queue(session.principal, workflow or None, lane or None, cursor or None)  # type: ignore[arg-type]
        except ValidationError as error:
            raise Invalid("lane", error.errors()[0]["msg"]) from None
        tenant = session.principal.tenant
        listed: QueuePage = queries.reviewer_queue(tenant, asked)
        # The view holds personal fields sealed: opened here, or shown erased.
        listed = reveal(store, tenant, listed, (item.run_id for item in listed.items))
        return page(
            request,
            "queue.html",
            session,
            items=listed.items,
            next_cursor=listed.next_cursor,
            workflow=workflow or "",
            lane=lane or "",
            sent=sent,
            now=datetime.now(UTC),
        )

    @app.get("/step", response_class=HTMLResponse)
    def step(
        request: Request,
        session: SessionDep,
        store: StoreDep,
        queries: QueriesDep,
        run: Annotated[Text, Query()],
        step: Annotated[Text, Query()],
        sent: Annotated[Text | None, Query()] = None,
        edited: Annotated[Text | None, Query(description="the hash of an edit just sent")] = None,
        sent_at: Annotated[float | None, Query(description="when it was sent (Unix time)")] = None,
    ) -> Response:
        late = sent_at is not None and time.time() - sent_at > EDIT_PATIENCE
        return _step_page(request, session, store, queries, run, step, sent=sent, edited=edited, late=late)

    @app.post("/preview", response_class=HTMLResponse)
    def preview(
        request: Request,
        session: CheckedSession,
        store: StoreDep,
        run_id: FormText,
        step_id: FormText,
        version_hash: FormText,
        output: EditedText,
        fragment: Annotated[bool, Form()] = False,
    ) -> Response:
        """The diff of the current version to an edit, before it is submitted: a page of its
        own (no script), or the fragment the edit form's script shows in place."""
        shown = pending_step(store, session.principal.tenant, run_id, step_id)
        diff = unified(shown.current, _lines(output), "current", "your edit")
        name = "_diff.html" if fragment else "preview.html"
        return page(
            request,
            name,
            session,
            diff=diff,
            run_id=run_id,
            step_id=step_id,
            version_hash=version_hash,
            output=_lines(output),
            step=shown.step,
        )

    @app.post("/decide")
    async def decision(
        request: Request,
        session: CheckedSession,
        store: StoreDep,
        queries: QueriesDep,
        run_id: FormText,
        step_id: FormText,
        decision: Annotated[str, Form()],
        version_hash: FormText,
        comment: Annotated[str | None, Form(max_length=10_000)] = None,
        output: Annotated[str | None, Form(max_length=1_000_000)] = None,
    ) -> Response:
        try:
            asked = DecisionAsked(
                decision=decision,  # type: ignore[arg-type]
                version_hash=version_hash,
                comment=comment or None,
                output=_lines(output) if decision == "edit" and output is not None else None,
            )
        except ValidationError as error:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            return page(request, "error.html", session, 422, title="Invalid decision", detail=detail)
        principal = session.principal
        _before, after = await anyio.to_thread.run_sync(neighbours, queries, principal, run_id, step_id)
        publisher = publisher_of(request)
        wanted = Decision(asked.decision, asked.version_hash, asked.comment, asked.output)
        try:
            decided = await anyio.to_thread.run_sync(
                decide, store, publisher, principal, run_id, step_id, wanted
            )
        except DecisionRefused as refused:
            shown = partial(
                _step_page, request, session, store, queries, run_id, step_id, refused=refused, status=403
            )
            return await anyio.to_thread.run_sync(partial(shown, draft=asked.output))
        sent = f"{decided.decision} of {step_id} sent ({decided.event_id})"
        if decided.decision == "edit":
            # Stay on the step: its edited version waits for an approval next.
            edited = content_hash(asked.output or "")
            asked_again = {"sent": sent, "edited": edited, "sent_at": f"{time.time():.0f}"}
            where = step_url(run_id, step_id) + "&" + urlencode(asked_again)
        else:
            where = (f"{after}&" if after else "/ui/queue?") + urlencode({"sent": sent})
        return RedirectResponse(where, status_code=303)


def _lines(text: str | None) -> str:
    """A browser sends a textarea's lines ending in CRLF: the text the reviewer typed has LF."""
    return (text or "").replace("\r\n", "\n")


def _step_page(
    request: Request,
    session: Session,
    store: RunStore,
    queries: Queries,
    run_id: str,
    step_id: str,
    *,
    sent: str | None = None,
    edited: str | None = None,
    late: bool = False,
    refused: DecisionRefused | None = None,
    status: int = 200,
    draft: str | None = None,
) -> Response:
    principal = session.principal
    shown = pending_step(store, principal.tenant, run_id, step_id)
    before, after = neighbours(queries, principal, run_id, step_id)
    # An edit sent and not recorded yet: offer no decision on the version before it, and
    # reload until it is; past EDIT_PATIENCE stop waiting and say so.
    unrecorded = bool(edited) and shown.item is not None and shown.item.version_hash != edited
    arriving = unrecorded and not late
    return page(
        request,
        "step.html",
        session,
        status,
        run_id=run_id,
        step_id=step_id,
        shown=shown,
        item=shown.item,
        step=shown.step,
        before=before,
        after=after,
        sent=sent,
        arriving=arriving,
        late=unrecorded and late,
        refused=refused,
        draft=draft if draft is not None else shown.current,
        now=datetime.now(UTC),
    )
