"""Shared moves for the console's tests (HTTP and browser): a store with waiting steps in two
tenants, and signing in over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from api.web import create_app
from domain.steps import StepEvent
from infra.settings import Settings
from infra.store import RunStore
from schemas.codec import encode_json
from tests.integration.helpers import add_principal
from tests.unit import factories as f

STEP = "r-1/step-1"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def waiting(run_id: str, tenant: str = "default", minutes: float = 0) -> list[StepEvent]:
    """A lead follow-up whose draft waits for a sales lead (the sample policy's review lane)."""
    step = f"{run_id}/step-1"
    where = {"run_id": run_id, "tenant": tenant}
    return [
        f.started(at=f.at(minutes), **where),
        f.source("form-1", system="hubspot", kind="form_submission", at=f.at(minutes + 1), **where),
        f.source("pricing", at=f.at(minutes + 1), **where),
        f.proposed(step, at=f.at(minutes + 2), **where),
        f.policy(step, "review", at=f.at(minutes + 3), **where),
    ]


def seed(settings: Settings, store: RunStore, *runs: list[StepEvent]) -> None:
    store.record([(s, encode_json(s)) for run in runs for s in run])
    build_projections(settings, store).catch_up()


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Sign `client` in with `token`; returns the session's CSRF token."""
    form = client.get("/ui/")
    response = client.post("/ui/", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/ui/queue").text)


@contextmanager
def console_for(
    settings: Settings, principal: str, tenant: str = "default", roles: tuple[str, ...] = ("sales-lead",)
) -> Iterator[tuple[TestClient, str]]:
    """The app as `serve` builds it, a browser-like client signed in as a new principal;
    yields the client and its session's CSRF token."""
    token = add_principal(settings, principal, tenant, roles)
    with TestClient(create_app(settings)) as client:
        yield client, sign_in(client, token)
