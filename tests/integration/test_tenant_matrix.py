"""A principal sees its own tenant only: every question, over HTTP and from the CLI, asked
by tenant `acme` about tenant `default`'s runs, receipts, findings, entities and sources
gives nothing, exactly as if they did not exist; `default` still sees them (the control)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_projections
from api.cli import main
from api.demo import publish_demo
from api.web import create_app
from infra.publisher import Publisher
from infra.settings import Settings
from tests.fakes import FakeProducer
from tests.integration.helpers import add_principal, bearer, cli_env, running_store
from tests.integration.incidents import GENERATED, record, record_incidents
from tests.integration.test_web import problem

pytestmark = pytest.mark.integration

# Tenant `default` holds the demo and the generated runs; `acme` its own demo (prefix acme-)
# and one run under an id `default` uses too (gen-000), which must resolve to acme's own.
OWN = "gen-000"
THEIRS = ["demo-lead-followup", "demo-pricing-update", "demo-boring-failures", GENERATED[1].run_id]
UNKNOWN = "no-such-run"
# Subjects only `default`'s runs touched or relied on (acme's gen-000 touched c-0, used v0).
THEIR_ENTITY, THEIR_SOURCE = "hubspot/contact/c-3", ("cms/page/pricing", "v3")


@dataclass(frozen=True)
class Tenants:
    client: TestClient
    acme: dict[str, str]
    default: dict[str, str]
    acme_token: str
    last_event: dict[str, str]  # run id -> its last event id (default's runs)


@pytest.fixture
def tenants(settings: Settings) -> Iterator[Tenants]:
    with running_store(settings) as store:
        record_incidents(store)
        record(store, lambda p: publish_demo(p, prefix="acme"), tenant="acme")
        record(store, GENERATED[0].publish, tenant="acme")
        build_projections(settings, store).catch_up()
        last = {r: store.run("default", r).entries[-1].step.event_id for r in THEIRS}
        acme = add_principal(settings, "alice", tenant="acme", roles=("admin", "sales-lead"))
        default = add_principal(settings, "dora", tenant="default", roles=("sales-lead",))
        with TestClient(create_app(settings)) as client:
            yield Tenants(client, bearer(acme), bearer(default), acme, last)


def _without(body: dict[str, Any], run_id: str) -> str:
    """A problem document with the run's id taken out: what else could tell two runs apart."""
    return json.dumps(body).replace(run_id, "RUN")


def test_another_tenants_run_is_a_404_exactly_like_an_unknown_run(tenants: Tenants) -> None:
    c, acme = tenants.client, tenants.acme
    for tail, params, accept in [
        ("receipt", {}, "application/json"),
        ("receipt", {}, "text/markdown"),
        ("receipt", {"as_of": "2026-11-20T00:00:00Z"}, "application/json"),
        ("verify", {}, "application/json"),
    ]:
        unknown = problem(
            c.get(f"/runs/{UNKNOWN}/{tail}", params=params, headers={**acme, "Accept": accept}), 404
        )
        assert "tenant 'acme'" in unknown["detail"]
        for run_id in THEIRS:
            headers = {**acme, "Accept": accept}
            theirs = problem(c.get(f"/runs/{run_id}/{tail}", params=params, headers=headers), 404)
            assert _without(theirs, run_id) == _without(unknown, UNKNOWN), (tail, params, accept)
            # The control: its own tenant reads it.
            assert c.get(f"/runs/{run_id}/{tail}", params=params, headers=tenants.default).status_code in (
                200,
                404,  # as_of before the run: a 404 for its owner too, saying so
            )
        assert c.get(f"/runs/{THEIRS[0]}/receipt", headers=tenants.default).status_code == 200
    # Waiting for another tenant's event behaves as for an event nobody recorded.
    run_id = THEIRS[0]
    waited = c.get(
        f"/runs/{run_id}/receipt",
        params={"after_event": tenants.last_event[run_id], "wait": 0.2},
        headers=acme,
    )
    nobody = c.get(f"/runs/{UNKNOWN}/receipt", params={"after_event": "e-none", "wait": 0.2}, headers=acme)
    assert waited.status_code == nobody.status_code == 503
    assert _without(waited.json(), run_id).replace(tenants.last_event[run_id], "E") == _without(
        nobody.json(), UNKNOWN
    ).replace("e-none", "E")
    # The run id both tenants use: each reads its own.
    mine = c.get(f"/runs/{OWN}/receipt", headers=acme).json()
    theirs = c.get(f"/runs/{OWN}/receipt", headers=tenants.default).json()
    assert (
        mine["tenant"] == "acme"
        and theirs["tenant"] == "default"
        and mine["event_ids"] != theirs["event_ids"]
    )


def test_lists_and_lookups_give_nothing_of_another_tenant(tenants: Tenants) -> None:
    c, acme = tenants.client, tenants.acme
    runs = c.get("/runs", params={"limit": 500}, headers=acme).json()["runs"]
    assert runs and {r["tenant"] for r in runs} == {"acme"}
    assert {r["run_id"] for r in runs} == {OWN} | _acme_runs()
    assert c.get("/runs", params={"workflow": "support-triage", "limit": 500}, headers=acme).json()[
        "runs"
    ] == [r for r in runs if r["workflow"] == "support-triage"]
    findings = c.get("/findings", params={"limit": 500}, headers=acme).json()["findings"]
    assert findings and {f["run_id"] for f in findings} <= {r["run_id"] for r in runs}
    touched = c.get(f"/entities/{THEIR_ENTITY}/runs", headers=acme).json()
    assert touched["runs"] == [] and touched["tenant"] == "acme"
    relied = c.get(
        f"/sources/{THEIR_SOURCE[0]}/runs", params={"version": THEIR_SOURCE[1]}, headers=acme
    ).json()
    assert relied["runs"] == []
    # Shared subjects: its own runs only.
    pricing = c.get("/entities/github/file/site/pricing.md/runs", headers=acme).json()["runs"]
    assert [r["run_id"] for r in pricing] == ["acme-pricing-update"]
    # The control: the owner sees what acme did not.
    assert c.get(f"/entities/{THEIR_ENTITY}/runs", headers=tenants.default).json()["runs"]
    their_sources = c.get(
        f"/sources/{THEIR_SOURCE[0]}/runs", params={"version": THEIR_SOURCE[1]}, headers=tenants.default
    )
    assert their_sources.json()["runs"]
    assert len(c.get("/runs", params={"limit": 500}, headers=tenants.default).json()["runs"]) > len(runs)


def test_naming_another_tenant_is_refused_the_same_way_whatever_it_names(tenants: Tenants) -> None:
    c, acme = tenants.client, tenants.acme
    paths = [
        "/runs",
        "/findings",
        f"/runs/{THEIRS[0]}/receipt",
        f"/runs/{THEIRS[0]}/verify",
        f"/entities/{THEIR_ENTITY}/runs",
        f"/sources/{THEIR_SOURCE[0]}/runs",
    ]
    for path in paths:
        refusals = [
            problem(c.get(path, params={"tenant": t}, headers=acme), 403) for t in ("default", "nope")
        ]
        assert refusals[0] == refusals[1], path
        assert c.get(path, params={"tenant": "acme"}, headers=acme).status_code in (200, 404), path


def _acme_runs() -> set[str]:
    """The run ids of acme's demo (prefix acme-)."""
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer, encoding="json"), prefix="acme")  # type: ignore[arg-type]
    return {key.decode() for _, key, _ in producer.sent}


def test_the_cli_questions_give_nothing_of_another_tenant(
    settings: Settings, tenants: Tenants, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch, settings, token=tenants.acme_token)
    for run_id in THEIRS:
        for command in (["show", run_id], ["show", run_id, "--json"], ["verify", run_id]):
            assert main(command) == 2, command
            assert f"no run '{run_id}' in tenant 'acme'" in capsys.readouterr().err
    assert main(["show", OWN, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tenant"] == "acme"
    assert main(["runs", "--json", "--limit", "500"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert {r["tenant"] for r in runs} == {"acme"} and not {r["run_id"] for r in runs} & set(THEIRS)
    assert main(["findings", "--json", "--limit", "500"]) == 0
    assert not {f["run_id"] for f in json.loads(capsys.readouterr().out)["findings"]} & set(THEIRS)
    assert main(["touched", THEIR_ENTITY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []
    assert main(["relied-on", THEIR_SOURCE[0], "--version", THEIR_SOURCE[1], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []
    for command in (["runs"], ["findings"], ["touched", THEIR_ENTITY], ["relied-on", THEIR_SOURCE[0]],
                    ["show", THEIRS[0]], ["verify", THEIRS[0]]):  # fmt: skip
        assert main([*command, "--tenant", "default"]) == 3, command
        assert "sees tenant 'acme' only" in capsys.readouterr().err
    # The control: `default`'s principal reads them from the CLI.
    cli_env(monkeypatch, settings, token=tenants.default["Authorization"].removeprefix("Bearer "))
    assert main(["touched", THEIR_ENTITY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"]
    assert main(["verify", THEIRS[0]]) == 0
