"""Every HTTP parameter is bounded: hostile values are 4xx problem documents, never 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api.cli import main
from infra.settings import Settings
from tests.integration.helpers import client_for, running_store
from tests.integration.test_web import problem

pytestmark = pytest.mark.integration

NUL = "a\x00b"
OVERLONG = "x" * 600
# Times PostgreSQL (or Python turning them into UTC) cannot hold.
EXTREME_TIMES = ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00", "1800-01-01T00:00:00Z")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with running_store(settings), client_for(settings) as client:
        yield client


def _schema(parameter: dict[str, Any]) -> dict[str, Any]:
    schema = parameter["schema"]
    for option in schema.get("anyOf", []):  # `X | None`
        if option.get("type") != "null":
            return option  # type: ignore[no-any-return]
    return schema  # type: ignore[no-any-return]


def _hostile(parameter: dict[str, Any]) -> list[str]:
    schema = _schema(parameter)
    if schema.get("type") == "integer":
        return ["99999999999999999999", "-1"]
    if schema.get("type") == "number":
        return ["1e308", "nan", "-1"]
    values = ["x" * 2000] if parameter["in"] == "header" else [NUL, OVERLONG]  # no NUL in a header
    if schema.get("format") == "date-time":
        values += EXTREME_TIMES
    return values


def test_every_parameter_of_every_get_endpoint_is_bounded(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    sent = 0
    for template, operations in paths.items():
        if "get" not in operations:
            continue
        parameters = operations["get"].get("parameters", [])
        for parameter in parameters:
            for value in _hostile(parameter):
                path, params, headers = template, {}, {}
                for other in parameters:  # the other path parameters, harmless
                    if other["in"] == "path" and other is not parameter:
                        path = path.replace("{" + other["name"] + "}", "x")
                if parameter["in"] == "path":
                    path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
                elif parameter["in"] == "query":
                    params[parameter["name"]] = value
                else:
                    headers[parameter["name"]] = value
                response = client.get(path, params=params, headers=headers)
                where = f"GET {template} {parameter['in']} {parameter['name']}={value[:40]!r}"
                assert response.status_code == 422, f"{where}: {response.status_code} {response.text[:300]}"
                body = problem(response, 422)
                assert body["errors"], where
                sent += 1
    assert sent > 60  # the walk reached the parameters


def _forged(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _forged("x", 5),
        _forged("2026-01-01T00:00:00+00:00", "not-a-uuid"),
        _forged("9999-12-31T23:00:00-05:00", "6c0f7c8e-0000-4000-8000-000000000000"),
        _forged("2026-01-01T00:00:00+00:00", "6c0f7c8e-0000-4000-8000-000000000000", "1"),
        _forged("2026-01-01T00:00:00+00:00", "6c0f7c8e-0000-4000-8000-000000000000", 2**40),
        _forged(None, None),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_forged_cursor_is_a_422_naming_the_cursor(client: TestClient, cursor: str) -> None:
    for path in ("/runs", "/findings"):
        body = problem(client.get(path, params={"cursor": cursor}), 422)
        assert body["errors"][0]["field"] == "cursor", body


def test_the_cli_refuses_a_time_it_cannot_hold_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("runs", "findings"):
        with pytest.raises(SystemExit) as stopped:
            main([command, "--since", "0001-01-01T00:30+01:00"])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert "must lie between 1900-01-01 and 9000-01-01 (UTC)" in error and "Traceback" not in error
