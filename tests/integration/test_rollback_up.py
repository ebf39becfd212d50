"""`receipts up` with RECEIPTS_ROLLBACK supervises a rollback worker like its other children."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.targets import site_repository
from tests.integration.test_rollback_worker import rollback_file
from tests.integration.up_process import UpProcess, gone_within, up_env

pytestmark = pytest.mark.integration


def test_up_runs_restarts_and_stops_the_rollback_worker(tmp_path: Path) -> None:
    site = site_repository(tmp_path / "site")
    targets = rollback_file(tmp_path, site, "http://127.0.0.1:9/undo")
    up = UpProcess(up_env(tmp_path / "data", RECEIPTS_ROLLBACK=str(targets)))
    try:
        first = up.child("rollback-worker")
        up.wait_for(r"rollback worker: \S+\.reverse -> ")
        first.kill()
        deadline = time.monotonic() + 30
        again = up.child("rollback-worker")
        while again.pid == first.pid:  # still the one being reaped
            assert time.monotonic() < deadline, "up did not restart the rollback worker"
            time.sleep(0.1)
            again = up.child("rollback-worker")
    finally:
        assert up.stop() == 0, up.output
    assert gone_within([again], 10) == []


def test_up_without_targets_runs_no_rollback_worker(tmp_path: Path) -> None:
    up = UpProcess(up_env(tmp_path / "data"))
    try:
        up.child("serve")
        with pytest.raises(AssertionError, match="no running rollback-worker"):
            up.child("rollback-worker", timeout=2)
    finally:
        assert up.stop() == 0, up.output
