"""The reviewer's console: the approval queue and the receipt in a browser, under /ui.

Server-rendered (Jinja2 templates, plain CSS, one small script for keyboard
shortcuts and the edit preview; every page reads and every form submits without
it). A sub-application mounted on the HTTP app: it shares the app's state (the
store, the questions, the principals, the publisher) but not its Bearer-token
dependency: a browser signs in once and carries a session cookie instead
(api/console/session.py). Every question and decision goes through the same
functions, and so the same tenant and role checks, as the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.datastructures import State
from starlette.staticfiles import StaticFiles

from api.bootstrap import require_tables
from infra.sessions import TABLE, Sessions
from infra.settings import Settings
from infra.store import RunStore

HERE = Path(__file__).parent
# Only this origin's own script, styles and forms; never framed (no clickjacking of a decision).
GUARDS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def install(settings: Settings, store: RunStore, state: State) -> None:
    """For the app's lifespan: the sessions table must exist (`migrate` or `up` creates it)."""
    require_tables(settings, store, [TABLE])
    state.sessions = Sessions(store.steps.datastore, settings.database_schema)


def mount_console(app: FastAPI) -> None:
    from api.console.pages import console_routes

    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state = app.state  # one store, one pool, one publisher: the app's
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @console.middleware("http")
    async def guarded(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(GUARDS)
        if not request.url.path.startswith(("/ui/static/", "/static/")):
            response.headers["Cache-Control"] = "no-store"  # receipts stay off shared disks
        return response

    console_routes(console)
    app.mount("/ui", console)
