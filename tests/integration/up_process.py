"""`receipts up` as a real process, for tests that kill it or its children."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg

from api.bootstrap import build_publisher
from infra.settings import Settings
from infra.store import read_step_state
from tests.integration.helpers import published_rows

# Short waits, so that restarts and heartbeats show within a test's patience.
FAST = {
    "RECEIPTS_RESTART_BACKOFF_SECONDS": "0.2",
    "RECEIPTS_RESTART_BACKOFF_MAX_SECONDS": "1",
    "RECEIPTS_SESSION_TIMEOUT_MS": "6000",
    "RECEIPTS_HEARTBEAT_INTERVAL_MS": "500",
}


def up_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTS_")}
    env.update(FAST)
    env["RECEIPTS_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


class UpProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.data_dir = Path(env["RECEIPTS_DATA_DIR"])
        command = [sys.executable, "-m", "api.cli", "up", "--kafka-port", "0", "--http-port", "0"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("resumed ", timeout=90)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def settings(self, **update: object) -> Settings:
        """Settings that talk to this `up`'s servers."""
        state = json.loads((self.data_dir / "up.json").read_text())
        return Settings(
            database_url=state["database_url"], kafka_bootstrap=state["kafka_bootstrap"], **update
        )

    def child(self, name: str, timeout: float = 30.0) -> psutil.Process:
        """The running child: `postgres`, `broker`, or a `receipts` command (ingest, relay…)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in psutil.Process(self.process.pid).children():
                try:
                    if _is(child, name):
                        return child
                except psutil.Error:
                    continue
            time.sleep(0.05)
        raise AssertionError(f"`up` has no running {name} child; output:\n{self.output}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def _is(process: psutil.Process, name: str) -> bool:
    line = process.cmdline()
    if name == "postgres":
        return process.name() == "postgres"
    if name == "broker":
        return "broker" in line and "tansu" in " ".join(line)
    return line[2:4] == ["api.cli", name]


def gone_within(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of `processes` still running (not zombies) after `seconds`."""
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def publish_runs(settings: Settings, runs: int, prefix: str, steps: int = 3) -> int:
    """`runs` small runs as JSON; returns how many events were published."""
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}))
    try:
        for n in range(runs):
            with publisher.run(
                "crm-notes", run_id=f"{prefix}-{n}", input={"system": "gong", "kind": "call", "id": f"c-{n}"}
            ) as run:
                for i in range(steps):
                    step = run.propose(
                        "write_note", {"system": "crm", "kind": "note", "id": f"{n}-{i}"}, "crm.note"
                    )
                    step.executed("noted")
                run.finish("sent")
    finally:
        publisher.close()
    return publisher.published


def stored_event_ids(settings: Settings) -> list[str]:
    """The event id of every stored row of a published step, duplicates kept (the service's
    decisions are rows of their own)."""
    return [read_step_state(state).event_id for _, _, state in published_rows(settings)]


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.2)


def query(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]
