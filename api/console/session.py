"""Who is at the browser: a session cookie in, the session's `Principal` out; and CSRF.

Signing in trades an API token (checked by the same `Principals.authenticate` as
`Authorization: Bearer`) for a server-side session (infra/sessions.py). The cookie
holds only the session id: HttpOnly (no script reads it), SameSite=Strict (no other
site's page sends it), Path=/ui. Every form carries the session's CSRF token and a
POST whose token does not match is refused with a 403 before anything is done.
The sign-in form, before any session, carries a token of its own, double-submitted
in a short-lived cookie.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

import anyio
from fastapi import Depends, Form, Request
from fastapi.responses import Response

from domain.errors import Forbidden, Unauthorized
from domain.principals import Principal
from infra.principals import Principals
from infra.sessions import LIFETIME, Session, Sessions

COOKIE = "receipts_session"
SIGNIN_COOKIE = "receipts_signin"
PATH = "/ui"


class SignedOut(Unauthorized):
    """No live session: the console answers with the sign-in page."""

    title = "Signed out"


class BadCsrf(Forbidden):
    title = "Form refused"

    def __init__(self) -> None:
        super().__init__(
            "this form's CSRF token does not match your session: reload the page and submit it again"
        )


def matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def _session(request: Request) -> Session:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        raise SignedOut("sign in with your API token")
    sessions: Sessions = request.app.state.sessions
    found = await anyio.to_thread.run_sync(sessions.find, session_id, limiter=request.app.state.auth_threads)
    if found is None:
        raise SignedOut("your session has ended (expired, signed out or revoked): sign in again")
    return found


SessionDep = Annotated[Session, Depends(_session)]


async def _principal(session: SessionDep) -> Principal:
    return session.principal


ConsolePrincipal = Annotated[Principal, Depends(_principal)]


async def _checked_form(session: SessionDep, csrf: Annotated[str | None, Form()] = None) -> Session:
    """A POST's session, once its form's CSRF token matched (else a 403, nothing done)."""
    if not matches(session.csrf, csrf):
        raise BadCsrf()
    return session


CheckedSession = Annotated[Session, Depends(_checked_form)]


def signin_token(request: Request) -> str:
    """The sign-in form's CSRF token: the one its cookie holds, or a new one."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)


def check_signin(request: Request, csrf: str | None) -> None:
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not expected or not matches(expected, csrf):
        raise BadCsrf()


async def sign_in(request: Request, token: str) -> tuple[str, Session]:
    principals: Principals = request.app.state.principals
    principal = await anyio.to_thread.run_sync(principals.authenticate, token)
    sessions: Sessions = request.app.state.sessions
    return await anyio.to_thread.run_sync(sessions.open, principal)


async def sign_out(request: Request) -> None:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        sessions: Sessions = request.app.state.sessions
        await anyio.to_thread.run_sync(sessions.close, session_id)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        # Over plain http (a local `receipts up`) a Secure cookie would never come back.
        secure=request.url.scheme == "https",
    )


def keep_session(request: Request, response: Response, session_id: str) -> None:
    set_cookie(request, response, COOKIE, session_id, int(LIFETIME.total_seconds()))
    response.delete_cookie(SIGNIN_COOKIE, path=PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH)
