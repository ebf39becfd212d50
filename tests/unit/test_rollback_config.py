"""RECEIPTS_ROLLBACK: the targets file is validated whole, errors name the line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.rollback.build import build_adapters
from infra.rollback.config import (
    CorrectionTarget,
    GitTarget,
    RollbackConfigError,
    WebhookTarget,
    load_rollback_config,
    read_rollback_config,
)
from infra.rollback.correction import CorrectionAdapter
from infra.rollback.git import GitAdapter
from infra.rollback.webhook import WebhookAdapter

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _issue_example(repository: Path) -> str:
    return f"""
[targets.github]          # website updates
adapter = "git"
repository = "{repository}"

[targets.hubspot]         # CRM notes and fields
adapter = "webhook"
url = "https://crm.internal/agent-undo"
secret = "{SECRET}"

[targets.gmail]           # sent email cannot be unsent
adapter = "correction"
notify = "hubspot"
"""


def _error(text: str) -> RollbackConfigError:
    with pytest.raises(RollbackConfigError) as caught:
        load_rollback_config(text)
    return caught.value


def test_the_issue_example_loads_and_builds_one_adapter_per_target(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    config = load_rollback_config(_issue_example(tmp_path))
    assert isinstance(config.targets["github"], GitTarget)
    assert isinstance(config.targets["hubspot"], WebhookTarget)
    assert isinstance(config.targets["gmail"], CorrectionTarget)
    adapters = build_adapters(config)
    assert isinstance(adapters["github"], GitAdapter)
    assert isinstance(adapters["hubspot"], WebhookAdapter)
    assert (
        isinstance(adapters["gmail"], CorrectionAdapter) and adapters["gmail"].notify is adapters["hubspot"]
    )


def test_a_repository_that_is_not_one_names_its_line(tmp_path: Path) -> None:
    error = _error(_issue_example(tmp_path / "nowhere"))
    assert (error.line, error.field) == (4, "targets.github.repository")
    assert "not a git repository" in error.message


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts 'whsec_'"),
        ("whsec_not base64!", "is base64"),
        ("whsec_c2hvcnQ=", "at least 16 bytes"),
    ],
)
def test_a_bad_secret_names_its_line(tmp_path: Path, secret: str, expected: str) -> None:
    (tmp_path / ".git").mkdir()
    error = _error(_issue_example(tmp_path).replace(SECRET, secret))
    assert (error.line, error.field) == (9, "targets.hubspot.secret") and expected in error.message


def test_notify_must_name_a_webhook_target(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    error = _error(_issue_example(tmp_path).replace('notify = "hubspot"', 'notify = "github"'))
    assert (error.line, error.field) == (13, "targets.gmail.notify")
    assert "'github', which is not a webhook target" in error.message


def test_an_unknown_adapter_or_field_is_refused() -> None:
    assert _error('[targets.x]\nadapter = "ftp"\n').field.startswith("targets.x")
    error = _error(f'[targets.x]\nadapter = "webhook"\nurl = "https://a"\nsecret = "{SECRET}"\nretries = 3\n')
    assert (error.line, error.field) == (5, "targets.x.retries")
    assert _error('[targets.x]\nadapter = "webhook"\nurl = "ftp://a"\n').field == "targets.x.url"


def test_toml_that_does_not_parse_names_its_line() -> None:
    error = _error('[targets.x]\nadapter = "git\n')
    assert error.line == 2 and "not valid TOML" in error.message


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RollbackConfigError, match="cannot read"):
        read_rollback_config(tmp_path / "rollback.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[targets.x]\nadapter = "ftp"\n')
    with pytest.raises(RollbackConfigError, match=str(bad)):
        read_rollback_config(bad)
