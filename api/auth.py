"""Who is asking, for HTTP and the CLI alike: a token in, a `Principal` out.

HTTP: `Authorization: Bearer TOKEN` on every endpoint (the app depends on
`authenticated` as a whole, so a new endpoint cannot forget it). The CLI:
RECEIPTS_TOKEN, else the token `receipts up` wrote to `.receipts/token`. Both
look the token up in `receipts_principals` (infra/principals.py) and answer in
the principal's own tenant only (`Principal.tenant_for`).

Administration (`receipts principal …`, `policy publish`, the service-wide
health report) needs the `admin` role, or, from the CLI, database access: a
RECEIPTS_DATABASE_URL of one's own, whose holder could write the tables anyway
(and who must be able to add the first principal on external servers, where
`up` adds none).
"""

from __future__ import annotations

import os
import socket
from typing import Annotated

import anyio
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import State

from api.bootstrap import require_tables
from domain.errors import Unauthorized
from domain.principals import ADMIN, Principal, bearer_token, checked_token
from infra.principals import TABLE, Principals
from infra.settings import Settings
from infra.store import RunStore
from projections.bounds import Text

NO_TOKEN = "no token: set RECEIPTS_TOKEN or run `receipts up` first (it writes {file})"


def principals_of(settings: Settings, store: RunStore) -> Principals:
    return Principals(store.steps.datastore, settings.database_schema)


# --- HTTP ---------------------------------------------------------------------------------------

# Declares the scheme in /openapi.json; the header itself is read by `authenticated`, so a
# missing and a malformed one get their own sentence (HTTPBearer would say neither).
_bearer = HTTPBearer(auto_error=False, description="a token from `receipts principal add` or `up`")


async def authenticated(
    request: Request, _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    principals: Principals = request.app.state.principals
    # Threads of its own: a lookup never waits behind slow queries in the shared pool.
    return await anyio.to_thread.run_sync(
        principals.authenticate, token, limiter=request.app.state.auth_threads
    )


PrincipalDep = Annotated[Principal, Depends(authenticated)]


async def _tenant(
    principal: PrincipalDep,
    tenant: Annotated[
        Text | None, Query(description="optional: the caller's own tenant (the token decides it)")
    ] = None,
) -> str:
    return principal.tenant_for(tenant)


async def _admin(principal: PrincipalDep) -> Principal:
    principal.require(ADMIN)
    return principal


TenantDep = Annotated[str, Depends(_tenant)]
AdminDep = Annotated[Principal, Depends(_admin)]


def install(settings: Settings, store: RunStore, state: State) -> None:
    """For the app's lifespan: the principals table must exist (`migrate` or `up` creates it)."""
    require_tables(settings, store, [TABLE])
    state.principals = principals_of(settings, store)
    state.auth_threads = anyio.CapacityLimiter(4)


# --- the CLI ------------------------------------------------------------------------------------


def cli_token(settings: Settings) -> str:
    """RECEIPTS_TOKEN, else the token file `up` wrote."""
    if settings.token is not None:
        return checked_token(settings.token.get_secret_value())
    try:
        return checked_token(settings.token_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Unauthorized(NO_TOKEN.format(file=settings.token_file)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise Unauthorized(f"cannot read the token in {settings.token_file}: {error}") from None


def cli_principal(settings: Settings, store: RunStore) -> Principal:
    """The principal the CLI's token names (`settings` resolved, `store` open)."""
    require_tables(settings, store, [TABLE])
    return principals_of(settings, store).authenticate(cli_token(settings))


def cli_admin(given: Settings, store: RunStore) -> str:
    """Who administers: database access (RECEIPTS_DATABASE_URL in `given`, the settings as
    configured, before `resolved()`) or an `admin` principal; returns it, for the record."""
    host = f"pid {os.getpid()} on {socket.gethostname()}"
    if given.database_url:
        return f"database access ({host})"
    principal = cli_principal(given.resolved(), store)
    principal.require(ADMIN)
    return f"principal {principal.id} ({host})"
