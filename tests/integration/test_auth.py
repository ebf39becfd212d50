"""Who is asking, on real PostgreSQL: every endpoint refuses a missing, malformed, unknown
or revoked token (walked from /openapi.json, so a new endpoint cannot be forgotten), and
`receipts principal add|list|revoke` administer the tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.cli import main
from api.web import create_app
from domain.principals import token_digest
from infra.settings import Settings
from infra.store import RunStore
from tests.integration.helpers import (
    add_principal,
    bearer,
    cli_env,
    client_for,
    execute,
    query,
    running_store,
)
from tests.integration.test_web import problem

pytestmark = pytest.mark.integration

# Nothing is exempt: not /health (service-wide, so admin only), not /openapi.json. There are
# no /docs pages (a browser cannot send the token to them).
UNLISTED = [("get", "/openapi.json")]


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


@pytest.fixture
def app(settings: Settings, store: RunStore) -> Iterator[TestClient]:
    """The app with no token of its own: each request says who it is."""
    with TestClient(create_app(settings)) as client:
        yield client


def _endpoints(app: TestClient, token: str) -> list[tuple[str, str]]:
    spec = app.get("/openapi.json", headers=bearer(token))
    assert spec.status_code == 200, spec.text
    paths: dict[str, dict[str, Any]] = spec.json()["paths"]
    assert "bearer" in json.dumps(spec.json()["components"]["securitySchemes"]).lower()
    # Every path parameter filled in: the request must reach the route, not a 404 of routing.
    return [
        (method, re.sub(r"\{[^}]+\}", "x", path)) for path, methods in paths.items() for method in methods
    ] + UNLISTED


def _refused(response: Any) -> dict[str, Any]:
    body = problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["title"] == "Unauthorized"
    return body


def test_every_endpoint_refuses_no_token_a_malformed_an_unknown_and_a_revoked_one(
    settings: Settings, app: TestClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = add_principal(settings, "admin")
    revoked = add_principal(settings, "gone", tenant="acme", roles=())
    cli_env(monkeypatch, settings, token=token)
    assert main(["principal", "revoke", "gone"]) == 0
    endpoints = _endpoints(app, token)
    assert len(endpoints) >= 10 and ("get", "/health") in endpoints
    unknown = "rcpt_" + "Z" * 43
    for method, path in endpoints:
        asks = [
            ({}, "no token"),
            ({"Authorization": "Basic dXNlcjpwdw=="}, "malformed Authorization header"),
            (bearer("rcpt_short"), "malformed token"),
            (bearer(unknown), "unknown or revoked token"),
            (bearer(revoked), "unknown or revoked token"),
        ]
        for headers, says in asks:
            # Bad parameters too: who is asking is settled before what is asked.
            response = app.request(method, path, headers=headers, params={"limit": "0", "as_of": "never"})
            assert says in _refused(response)["detail"], (method, path, headers)
        # The same token works: the refusals above were about the token, not the route.
        assert app.request(method, path, headers=bearer(token)).status_code != 401, (method, path)
    # An unknown and a revoked token are refused alike: nothing tells them apart.
    same = [app.get("/runs", headers=bearer(t)).json() for t in (unknown, revoked)]
    assert same[0] == same[1]
    assert app.get("/docs", headers=bearer(token)).status_code == 404


def test_health_and_administration_need_the_admin_role(
    settings: Settings, app: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    reviewer = add_principal(settings, "rita", roles=("sales-lead",))
    admin = add_principal(settings, "ada")
    body = problem(app.get("/health", headers=bearer(reviewer)), 403)
    assert "'admin' role" in body["detail"]
    assert app.get("/health", headers=bearer(admin)).status_code in (200, 503)
    assert app.get("/runs", headers=bearer(reviewer)).status_code == 200
    # Without database access of its own (the servers `up` wrote down), the CLI administers
    # as its token's principal: an admin may, a reviewer may not.
    _as_a_user_of_up(settings, tmp_path, monkeypatch)
    policy = tmp_path / "policy.toml"
    assert main(["policy", "sample"]) == 0
    policy.write_text(capsys.readouterr().out)
    out = {}
    for command in (["principal", "list"], ["principal", "add", "x", "--tenant", "t"], ["health"],
                    ["policy", "publish", str(policy)],
                    ["erase", "crm/contact/x", "--reason", "asked"], ["publisher", "list"]):  # fmt: skip
        monkeypatch.setenv("RECEIPTS_TOKEN", reviewer)
        assert main(command) == 3, command
        assert "does not hold the 'admin' role" in capsys.readouterr().err
        monkeypatch.setenv("RECEIPTS_TOKEN", admin)
        assert main(command) in (0, 1), command  # health: 1 when degraded
        out[" ".join(command[:2])] = capsys.readouterr().out
    assert "ada" in out["principal list"] and "rita" in out["principal list"]
    assert "in force since" in out["policy publish"]
    loaded_by = query(settings, "SELECT loaded_by FROM receipts_policies")
    assert loaded_by and "by principal ada" in loaded_by[-1][0]
    assert query(settings, "SELECT requested_by FROM receipts_erasures")[0][0].startswith("principal ada")
    monkeypatch.delenv("RECEIPTS_TOKEN")
    assert main(["principal", "list"]) == 3
    assert "no token: set RECEIPTS_TOKEN or run `receipts up` first" in capsys.readouterr().err


def _as_a_user_of_up(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI as a user of `receipts up` runs it: servers from up.json, no database URL."""
    data = tmp_path / "data"
    data.mkdir()
    state = {"database_url": settings.database_url, "kafka_bootstrap": settings.kafka_bootstrap}
    (data / "up.json").write_text(json.dumps(state))
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP", "TOKEN"):
        monkeypatch.delenv(f"RECEIPTS_{name}", raising=False)
    monkeypatch.setenv("RECEIPTS_DATA_DIR", str(data))
    monkeypatch.setenv("RECEIPTS_DATABASE_SCHEMA", settings.database_schema)


def test_principal_add_prints_a_token_once_list_shows_none_revoke_refuses_it(
    settings: Settings, app: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch, settings)  # database access: administration without a token of its own
    monkeypatch.delenv("RECEIPTS_TOKEN")
    assert (
        main(["principal", "add", "bob@acme", "--tenant", "acme", "--role", "sales-lead", "--role", "x"]) == 0
    )
    printed = capsys.readouterr()
    token = printed.out.strip()
    assert printed.out == token + "\n" and "shown this once" in printed.err
    assert app.get("/runs", headers=bearer(token)).json() == {"runs": [], "next_cursor": None}
    stored = query(
        settings, "SELECT tenant, roles, token_digest FROM receipts_principals WHERE id = 'bob@acme'"
    )
    assert stored == [("acme", ["sales-lead", "x"], token_digest(token))]
    assert token not in json.dumps(query(settings, "SELECT * FROM receipts_principals"), default=str)

    assert main(["principal", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    [bob] = [p for p in json.loads(listed) if p["id"] == "bob@acme"]
    assert bob["tenant"] == "acme" and bob["roles"] == ["sales-lead", "x"] and bob["revoked_at"] is None
    assert token not in listed and token_digest(token) not in listed

    assert main(["principal", "add", "bob@acme", "--tenant", "other"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["principal", "add", "bob smith", "--tenant", "acme"]) == 2
    assert "not a name" in capsys.readouterr().err

    assert main(["principal", "revoke", "bob@acme"]) == 0
    assert "revoked" in capsys.readouterr().out
    _refused(app.get("/runs", headers=bearer(token)))
    monkeypatch.setenv("RECEIPTS_TOKEN", token)
    assert main(["runs"]) == 3
    assert "unknown or revoked token" in capsys.readouterr().err
    assert main(["principal", "revoke", "bob@acme"]) == 0
    assert "was revoked already" in capsys.readouterr().out
    assert main(["principal", "revoke", "nobody"]) == 2
    assert "no principal 'nobody'" in capsys.readouterr().err
    # The record stays, and the id is not given again.
    assert main(["principal", "add", "bob@acme", "--tenant", "acme"]) == 2
    assert main(["principal", "list"]) == 0
    assert re.search(r"bob@acme\s+acme\s+sales-lead,x\s+\S+ \S+\s+revoked ", capsys.readouterr().out)


def test_the_server_refuses_to_start_before_the_principals_table_exists(settings: Settings) -> None:
    with running_store(settings):
        execute(settings, "DROP TABLE receipts_principals")
        with pytest.raises(Exception, match="receipts migrate"), client_for(settings, token="unused"):
            pass
