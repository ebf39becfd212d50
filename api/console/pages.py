"""The console's routes: sign in and out, and how an error becomes a page."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console import queue_pages, run_pages
from api.console.session import (
    SIGNIN_COOKIE,
    CheckedSession,
    SignedOut,
    check_signin,
    end_session,
    keep_session,
    set_cookie,
    sign_in,
    sign_out,
    signin_token,
)
from api.console.templating import page
from domain.errors import ReceiptsError, Unauthorized

SIGNIN_SECONDS = 3600


def console_routes(app: FastAPI) -> None:
    _errors(app)

    @app.get("/", response_class=HTMLResponse)
    def signin_page(request: Request) -> Response:
        return _signin(request)

    @app.post("/")
    async def signin(
        request: Request,
        token: Annotated[str, Form(max_length=200)] = "",
        csrf: Annotated[str | None, Form(max_length=200)] = None,
    ) -> Response:
        check_signin(request, csrf)
        try:
            session_id, _session = await sign_in(request, token)
        except Unauthorized as refused:
            return _signin(request, refused.detail, status=401)
        response = RedirectResponse("/ui/queue", status_code=303)
        keep_session(request, response, session_id)
        return response

    @app.post("/signout")
    async def signout(request: Request, _session: CheckedSession) -> Response:
        await sign_out(request)
        response = RedirectResponse("/ui/", status_code=303)
        end_session(response)
        return response

    queue_pages.routes(app)
    run_pages.routes(app)


def _signin(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = signin_token(request)
    response = page(request, "signin.html", None, status, signin_csrf=token, error=error)
    set_cookie(request, response, SIGNIN_COOKIE, token, SIGNIN_SECONDS)
    return response


def _errors(app: FastAPI) -> None:
    @app.exception_handler(SignedOut)
    async def signed_out(request: Request, error: SignedOut) -> Response:
        if request.method == "GET":
            return _signin(request, error.detail, status=401)
        return RedirectResponse("/ui/", status_code=303)

    @app.exception_handler(ReceiptsError)
    async def receipts_error(request: Request, error: ReceiptsError) -> Response:
        # The page says what the API's problem document would, with the same status.
        return page(request, "error.html", None, error.status, title=error.title, detail=error.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in error.errors()
        )
        return page(request, "error.html", None, 422, title="Invalid request", detail=detail)
