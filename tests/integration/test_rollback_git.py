"""The git adapter on a real repository: a website update reverted by commit, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.rollback import Failed, Reverted
from infra.rollback.git import TRAILER, GitAdapter
from tests.integration.targets import commit_file, git, reverse_event, reverts_in, site_repository

pytestmark = pytest.mark.integration


def _updated_site(tmp_path: Path) -> tuple[Path, str]:
    site = site_repository(tmp_path / "site")
    sha = commit_file(site, "pricing.html", "<p>Plan: 4 EUR</p>\n", "Agent: update pricing")
    return site, sha


def test_a_website_update_is_reverted_by_a_commit_and_the_file_is_back(tmp_path: Path) -> None:
    site, sha = _updated_site(tmp_path)
    outcome = GitAdapter(site).apply(reverse_event(external_ref=sha))
    assert isinstance(outcome, Reverted) and outcome.verified
    assert (site / "pricing.html").read_text() == "<p>Plan: 40 EUR</p>\n"
    assert git(site, "rev-parse", "HEAD") == outcome.reverse_ref != sha
    message = git(site, "log", "-1", "--format=%B")
    assert f"This reverts commit {sha}." in message and f"{TRAILER}: rev-1" in message
    assert git(site, "status", "--porcelain") == ""


def test_the_same_reverse_event_again_answers_the_first_revert_and_reverts_nothing_more(
    tmp_path: Path,
) -> None:
    site, sha = _updated_site(tmp_path)
    adapter = GitAdapter(site)
    first = adapter.apply(reverse_event(external_ref=sha))
    again = GitAdapter(site).apply(reverse_event(external_ref=sha))  # a new process, same repository
    assert isinstance(first, Reverted) and again == first
    assert len(reverts_in(site)) == 1


def test_a_later_commit_does_not_hide_the_earlier_revert(tmp_path: Path) -> None:
    site, sha = _updated_site(tmp_path)
    first = GitAdapter(site).apply(reverse_event(external_ref=sha))
    commit_file(site, "about.html", "<p>About us, again</p>\n", "Human: about page")
    again = GitAdapter(site).apply(reverse_event(external_ref=sha))
    assert isinstance(first, Reverted) and isinstance(again, Reverted)
    assert again.reverse_ref == first.reverse_ref and len(reverts_in(site)) == 1


def test_a_conflict_is_a_failure_naming_the_paths_and_leaves_the_repository_clean(tmp_path: Path) -> None:
    site, sha = _updated_site(tmp_path)
    commit_file(site, "pricing.html", "<p>Plan: 5 EUR</p>\n", "Human: fix pricing by hand")
    head = git(site, "rev-parse", "HEAD")
    outcome = GitAdapter(site).apply(reverse_event(external_ref=sha))
    assert isinstance(outcome, Failed) and not outcome.retryable
    assert "conflicts in pricing.html" in outcome.error and sha in outcome.error
    assert git(site, "rev-parse", "HEAD") == head and git(site, "status", "--porcelain") == ""


def test_a_revert_left_half_done_by_a_crash_is_aborted_and_made_once(tmp_path: Path) -> None:
    site, sha = _updated_site(tmp_path)
    git(site, "revert", "--no-commit", sha)  # what a crash before the commit leaves
    outcome = GitAdapter(site).apply(reverse_event(external_ref=sha))
    assert isinstance(outcome, Reverted) and outcome.verified
    assert len(reverts_in(site)) == 1 and git(site, "status", "--porcelain") == ""


def test_the_link_reference_names_the_commit_when_the_execution_does_not(tmp_path: Path) -> None:
    site, sha = _updated_site(tmp_path)
    outcome = GitAdapter(site).apply(reverse_event(external_ref=None, ref=sha))
    assert isinstance(outcome, Reverted)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"external_ref": None}, "names no commit"),
        ({"external_ref": "not a sha"}, "names no commit"),
        ({"external_ref": "0" * 40}, "is not in"),
        ({"method": "amend"}, "undoes by revert"),
    ],
)
def test_what_git_cannot_revert_is_a_failure_a_person_must_see(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    site, sha = _updated_site(tmp_path)
    outcome = GitAdapter(site).apply(reverse_event(**{"external_ref": sha, **overrides}))
    assert isinstance(outcome, Failed) and not outcome.retryable and expected in outcome.error
    assert reverts_in(site) == []


def test_a_push_goes_to_the_remote_without_force_and_a_refused_push_is_retryable(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    site, sha = _updated_site(tmp_path)
    git(site, "remote", "add", "origin", str(remote))
    git(site, "push", "-q", "origin", "main")
    outcome = GitAdapter(site, push="origin").apply(reverse_event(external_ref=sha))
    assert isinstance(outcome, Reverted)
    assert git(remote, "rev-parse", "main") == outcome.reverse_ref
    # The remote moves on under the clone: a non-forced push is refused, and may be retried.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    commit_file(other, "about.html", "<p>moved on</p>\n", "Elsewhere")
    git(other, "push", "-q", "origin", "main")
    sha2 = commit_file(site, "about.html", "<p>About, v2</p>\n", "Agent: about")
    refused = GitAdapter(site, push="origin").apply(reverse_event(reverse_id="rev-2", external_ref=sha2))
    assert isinstance(refused, Failed) and refused.retryable and "not pushed" in refused.error
