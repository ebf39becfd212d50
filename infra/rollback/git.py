"""The git adapter: a website update undone by `git revert` of its commit.

The executed step's reference (its `external_ref`, else the rollback link's `ref`)
is the commit. The revert is one commit on the checked-out branch whose message
carries the trailer `Reverse-Event: <reverse id>`: that trailer is how a repeated
delivery finds the revert already made and answers with its sha instead of
reverting twice. Never a force-push; a conflict is a failure naming the
conflicting paths (and the revert is aborted), not something to retry.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from domain.rollback import ReverseEvent
from infra.rollback.adapter import Failed, Outcome, Reverted

log = logging.getLogger(__name__)
TRAILER = "Reverse-Event"
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


class GitError(RuntimeError):
    pass


class GitAdapter:
    def __init__(
        self,
        repository: Path,
        *,
        push: str | None = None,
        author: str = "Agent Receipts <receipts@localhost>",
    ) -> None:
        self.repository = repository
        self.push_remote = push
        name, email = author.rstrip(">").split(" <", 1)
        # The identity of the revert commit, whatever the clone has configured.
        self._identity = ["-c", f"user.name={name}", "-c", f"user.email={email}"]

    def apply(self, reverse: ReverseEvent) -> Outcome:
        if reverse.method != "revert":
            return Failed(
                f"a git target undoes by revert; this step's rollback method is {reverse.method}", False
            )
        commit = reverse.external_ref or reverse.ref
        if commit is None or not _SHA.match(commit):
            return Failed(f"the step names no commit to revert (reference {commit!r})", False)
        try:
            return self._apply(reverse, commit)
        except GitError as error:
            # git itself failing (a locked index, a full disk): the same revert may work later.
            return Failed(str(error), True)

    def _apply(self, reverse: ReverseEvent, commit: str) -> Outcome:
        self._abort_unfinished()
        done = self.made_for(reverse.reverse_id)
        if done is None:
            if self._git("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode:
                return Failed(f"commit {commit} is not in {self.repository}", False)
            conflict = self._revert(reverse, commit)
            if conflict is not None:
                return conflict
            done = self._git("rev-parse", "HEAD").stdout.strip()
            log.info("reverted %s as %s for reverse event %s", commit, done, reverse.reverse_id)
        if self.push_remote:
            # Never forced: a remote that moved on refuses, and the revert is tried again.
            pushed = self._git("push", self.push_remote, "HEAD", check=False)
            if pushed.returncode:
                return Failed(
                    f"revert {done} not pushed to {self.push_remote}: {pushed.stderr.strip()}", True
                )
        return Reverted(done, verified=self._restored(commit, done))

    def made_for(self, reverse_id: str) -> str | None:
        """The revert commit already made for this reverse event, if any."""
        found = self._git(
            "log", "--format=%H", "--fixed-strings", f"--grep={TRAILER}: {reverse_id}", "HEAD"
        ).stdout.split()
        return found[0] if found else None

    def _revert(self, reverse: ReverseEvent, commit: str) -> Failed | None:
        # --no-commit, then one commit with the trailer: a crash leaves either no revert
        # or one carrying the trailer, never an unmarked revert that could be made twice.
        reverted = self._git("revert", "--no-commit", commit, check=False)
        if reverted.returncode:
            conflicted = self._git("diff", "--name-only", "--diff-filter=U").stdout.split()
            self._git("revert", "--abort", check=False)
            if conflicted:
                return Failed(f"reverting {commit} conflicts in {', '.join(conflicted)}", False)
            return Failed(f"git revert {commit} failed: {reverted.stderr.strip()}", False)
        subject = self._git("log", "-1", "--format=%s", commit).stdout.strip()
        message = (
            f'Revert "{subject}"\n\nThis reverts commit {self._full(commit)}.\n'
            f"Rollback {reverse.rollback_id}: {reverse.reason}\n\n{TRAILER}: {reverse.reverse_id}\n"
        )
        self._git(*self._identity, "commit", "--allow-empty", "--no-verify", "-F", "-", input=message)
        return None

    def _abort_unfinished(self) -> None:
        """A revert a crash left half-done (index changed, no commit) is undone first."""
        if self._git("rev-parse", "-q", "--verify", "REVERT_HEAD", check=False).returncode == 0:
            log.warning("aborting an unfinished revert in %s", self.repository)
            self._git("revert", "--abort", check=False)

    def _restored(self, commit: str, revert: str) -> bool:
        """The paths the commit touched are, after the revert, as they were before it."""
        paths = self._git("diff-tree", "--no-commit-id", "--name-only", "-r", commit).stdout.split()
        if not paths:
            return False
        return self._git("diff", "--quiet", f"{commit}^", revert, "--", *paths, check=False).returncode == 0

    def _full(self, commit: str) -> str:
        return self._git("rev-parse", commit).stdout.strip()

    def _git(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=self.repository, capture_output=True, text=True, input=input, check=False
        )
        if check and result.returncode:
            raise GitError(
                f"git {args[0] if args[0] != '-c' else 'commit'} failed in {self.repository}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result
