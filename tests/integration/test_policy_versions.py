"""The policy in force, kept in PostgreSQL: published versions, as-of lookups, the
commands and the HTTP endpoints, a file with an error refused at start, and a running
ingest picking up a version published since it started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.bootstrap import PolicyWatch, migrate
from api.cli import main
from domain.policy import Policy, load_policy, sample_text
from infra.policies import NoPolicy
from infra.settings import Settings
from infra.store import RunStore
from tests.integration.helpers import cli_env, client_for, ingest_for, running_store

pytestmark = pytest.mark.integration

T1 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
T2, T3 = T1 + timedelta(hours=1), T1 + timedelta(hours=2)
SECOND = timedelta(seconds=1)


def _variant(n: int) -> str:
    """The sample with another default reason: another document, another version."""
    text = sample_text()
    old = 'reason = "no rule covers this step: a person reviews it"'
    assert old in text
    return text.replace(old, f'reason = "no rule covers this step (variant {n}): a person reviews it"')


POLICIES: list[tuple[Policy, str]] = [(load_policy(_variant(n)), _variant(n)) for n in (1, 2, 3)]
INVALID = sample_text().replace('lane = "block"', 'lane = "maybe"')


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings as the `receipts` command reads them (its tables in place, as `up`
    leaves them, and a token: `show` and `versions` ask as a principal)."""
    migrate(settings)
    cli_env(
        monkeypatch, settings, TOPIC=settings.topic, GROUP=settings.group, DATA_DIR=str(tmp_path / "data")
    )
    return settings


def _publish_three(store: RunStore) -> None:
    for (policy, text), at in zip(POLICIES, (T1, T2, T3), strict=True):
        loaded, new = store.record_policy(policy, text, "test", at=at)
        assert new and loaded.version == policy.version and loaded.loaded_at == at


def test_three_versions_and_exact_as_of_lookups(store: RunStore) -> None:
    _publish_three(store)
    v1, v2, v3 = (p.version for p, _ in POLICIES)
    with pytest.raises(NoPolicy):
        store.policy_in_force(T1 - SECOND)
    cases = [(T1, v1), (T2 - SECOND, v1), (T2, v2), (T3 - SECOND, v2), (T3, v3), (T3 + timedelta(days=9), v3)]
    assert [store.policy_in_force(at).version for at, _ in cases] == [v for _, v in cases]
    assert store.policy_in_force().version == v3
    in_force = store.policy_in_force(T2)
    assert in_force.policy() == POLICIES[1][0] and in_force.source == POLICIES[1][1]
    # The one in force again: nothing new. An earlier one again: in force from then on.
    assert store.record_policy(*POLICIES[2], "test")[1] is False
    _, new = store.record_policy(*POLICIES[0], "test", at=T3 + timedelta(hours=1))
    assert new and store.policy_in_force().version == v1 and store.policy_in_force(T3).version == v3
    assert [v.version for v in store.policy_versions()] == [v1, v2, v3, v1]


def test_publish_show_and_versions_commands(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for n, (_, text) in enumerate(POLICIES, start=1):
        files.append(tmp_path / f"policy-{n}.toml")
        files[-1].write_text(text)
    assert main(["policy", "publish", str(files[0])]) == 0
    assert POLICIES[0][0].version in capsys.readouterr().out
    assert main(["policy", "publish", str(files[0])]) == 0
    assert "already in force" in capsys.readouterr().out
    published_at = datetime.now(UTC)
    assert main(["policy", "publish", str(files[1])]) == 0
    capsys.readouterr()

    assert main(["policy", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == POLICIES[1][0].version and shown["source"] == POLICIES[1][1]
    assert Policy.model_validate(shown["document"]) == POLICIES[1][0]
    assert main(["policy", "show", "--as-of", published_at.isoformat()]) == 0
    out = capsys.readouterr().out
    assert POLICIES[0][0].version in out.splitlines()[0] and POLICIES[0][1] in out
    assert main(["policy", "show", "--as-of", "2000-01-01T00:00Z"]) == 2
    assert "no policy was in force at 2000-01-01" in capsys.readouterr().err

    assert main(["policy", "versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("<- in force")
    assert POLICIES[1][0].version.removeprefix("sha256:")[:12] in lines[1]


def test_a_policy_file_with_an_error_is_refused_naming_line_and_field(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(INVALID)
    line = INVALID.splitlines().index('lane = "maybe"') + 1
    assert main(["policy", "publish", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line}: rules.0.lane:" in err and "Traceback" not in err
    monkeypatch.setenv("RECEIPTS_POLICY", str(bad))
    for command in (["ingest"], ["up"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"{bad}:{line}: rules.0.lane:" in err and "Traceback" not in err, command
    assert not (tmp_path / "data" / "up.json").exists()  # `up` started nothing
    with running_store(env) as store:
        assert store.policy_versions() == []


def test_ingest_puts_the_configured_policy_in_force_and_picks_up_a_published_one(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICIES[0][1])
    settings = settings.model_copy(update={"policy": path})
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        assert ingest.router is not None and ingest.router.version == POLICIES[0][0].version
        assert store.policy_in_force().version == POLICIES[0][0].version
        watch = PolicyWatch(ingest, store, every=60.0)
        watch.check()
        assert ingest.router.version == POLICIES[0][0].version  # nothing new: the same router
        store.record_policy(*POLICIES[1], "receipts policy publish")
        watch.check()
        assert ingest.router.version == POLICIES[1][0].version
    # A restart with the same file: the file's policy is put in force again.
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        assert ingest.router is not None and ingest.router.version == POLICIES[0][0].version
        assert [v.version for v in store.policy_versions()] == [POLICIES[i][0].version for i in (0, 1, 0)]


def test_the_http_endpoints(settings: Settings, store: RunStore) -> None:
    with client_for(settings) as client:
        for path in ("/policy", "/policy/versions"):
            response = client.get(path)
            assert (
                response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
            )
            assert response.json()["title"] == "No policy recorded"
        _publish_three(store)
        now = client.get("/policy").json()
        assert now["version"] == POLICIES[2][0].version and now["source"] == POLICIES[2][1]
        assert Policy.model_validate(now["document"]) == POLICIES[2][0]
        then = client.get("/policy", params={"as_of": (T2 + SECOND).isoformat()}).json()
        assert then["version"] == POLICIES[1][0].version
        assert client.get("/policy", params={"as_of": (T1 - SECOND).isoformat()}).status_code == 404
        bad = client.get("/policy", params={"as_of": "yesterday"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "as_of"
        versions = client.get("/policy/versions").json()["versions"]
        assert [v["version"] for v in versions] == [p.version for p, _ in POLICIES]
        assert datetime.fromisoformat(versions[0]["loaded_at"]) == T1
