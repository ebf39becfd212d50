"""The receipt page of any run, its Markdown, and the incident search.

The receipt is the one the API serves (api.web.receipt_document: the receipts
view with its chain recomputed from the store, or, "as of" a time, folded from
the run's events); the timeline is the run's events as recorded. The search asks
the API's questions (projections/queries.py) in the principal's own tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import TypeAdapter, ValidationError

from api.console.diffs import version_chain
from api.console.session import SessionDep
from api.console.templating import page
from api.deps import QueriesDep, StoreDep
from api.render import receipt_markdown
from api.web import receipt_document
from domain.errors import Invalid
from domain.receipt_model import Receipt
from domain.run import Entry
from projections.answers import RelatedRuns, RunFilter, RunQuery, RunsPage
from projections.bounds import Instant, Text

RunPath = Annotated[str, "the run's id; it may hold '/'"]
_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)
# The search form's fields that filter the runs list (RunQuery's, less tenant and paging).
RUN_FIELDS = ("workflow", "final_state", "finding", "reviewer", "since", "until", "text")


def as_of_time(text: str | None) -> datetime | None:
    """A time picker's value ("2026-11-25T14:02", read as UTC) or RFC 3339; None if empty."""
    if not text or not text.strip():
        return None
    text = text.strip()
    if len(text) <= 19 and "+" not in text and not text.endswith("Z"):
        text += "Z"  # datetime-local carries no zone: the page says UTC
    try:
        return _INSTANT.validate_python(text)
    except ValidationError as error:
        raise Invalid("as_of", error.errors()[0]["msg"]) from None


def routes(app: FastAPI) -> None:
    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def receipt(
        request: Request,
        run_id: RunPath,
        session: SessionDep,
        store: StoreDep,
        queries: QueriesDep,
        as_of: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response:
        tenant = session.principal.tenant
        at = as_of_time(as_of)
        shown = Receipt.model_validate_json(receipt_document(store, queries, tenant, run_id, at))
        entries: list[Entry] = list(store.run(tenant, run_id).entries)
        if at is not None:
            entries = [e for e in entries if e.recorded_at <= at]
        return page(
            request,
            "receipt.html",
            session,
            receipt=shown,
            chains={s.step_id: version_chain(s) for s in shown.steps},
            timeline=entries,
            as_of=at,
            as_of_value=at.strftime("%Y-%m-%dT%H:%M:%S") if at else "",
        )

    @app.get("/receipt.md")
    def markdown(
        session: SessionDep,
        store: StoreDep,
        queries: QueriesDep,
        run: Annotated[Text, Query()],
        as_of: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response:
        tenant = session.principal.tenant
        document = receipt_document(store, queries, tenant, run, as_of_time(as_of))
        text = receipt_markdown(Receipt.model_validate_json(document))
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    @app.get("/search", response_class=HTMLResponse)
    def search(request: Request, session: SessionDep, queries: QueriesDep) -> Response:
        asked = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
        tenant = session.principal.tenant
        errors: list[str] = []
        runs: RunsPage | None = None
        related: RelatedRuns | None = None
        try:
            if "touched" in asked:
                system, kind, id_ = _record(asked["touched"], "touched")
                related = queries.touched(system, kind, id_, tenant=tenant)
            elif "source" in asked:
                system, kind, id_ = _record(asked["source"], "source")
                version = asked.get("version")
                related = queries.relied_on(system, kind, id_, tenant=tenant, version=version)
            else:
                filters: dict[str, Any] = {k: asked[k] for k in (*RUN_FIELDS, "cursor") if k in asked}
                for field in ("since", "until"):
                    if field in filters:
                        filters[field] = as_of_time(filters[field])
                RunQuery(**filters)  # refuses what the API would, naming the field
                runs = queries.runs(RunFilter(**filters, tenant=tenant))
        except ValidationError as error:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
        except Invalid as error:
            errors = [error.detail]
        return page(
            request,
            "search.html",
            session,
            422 if errors else 200,
            asked=asked,
            errors=errors,
            runs=runs,
            related=related,
            now=datetime.now(UTC),
        )


def _record(text: str, field: str) -> tuple[str, str, str]:
    """SYSTEM/KIND/ID (the id may hold '/'), as the CLI's `touched` and `relied-on` take it."""
    system, _, rest = text.partition("/")
    kind, _, id_ = rest.partition("/")
    if not (system and kind and id_):
        raise Invalid(field, f"'{text[:100]}' is not SYSTEM/KIND/ID (e.g. hubspot/contact/dana-lee-4410)")
    for part in (system, kind, id_):
        TypeAdapter(Text).validate_python(part)
    return system, kind, id_
