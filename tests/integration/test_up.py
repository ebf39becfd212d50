"""`receipts up` as a new user runs it: embedded servers, demo, show, Ctrl-C, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.demo import publish_demo
from infra.publisher import Publisher
from infra.settings import Settings
from tests.fakes import FakeProducer

pytestmark = pytest.mark.integration


def _receipts(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def _start_up(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--kafka-port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "resumed " in line or time.monotonic() > deadline:
            break
    assert any("Agent Receipts is up." in line for line in lines), "".join(lines)
    return process, lines


def _show_eventually(env: dict[str, str], run_id: str, *options: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        shown = _receipts(env, "show", run_id, *options)
        if shown.returncode == 0 or time.monotonic() > deadline:
            assert shown.returncode == 0, shown.stderr
            return shown.stdout
        time.sleep(0.3)


def test_up_demo_show_ctrl_c_and_restart_keeps_receipts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTS_")}
    env["RECEIPTS_DATA_DIR"] = str(tmp_path / "data")

    assert "no servers to talk to" in _receipts(env, "show", "demo-crm-note").stderr

    up, _ = _start_up(env)
    state = json.loads((tmp_path / "data" / "up.json").read_text())
    assert state["pid"] == up.pid
    assert "already running" in _receipts(env, "up").stderr

    # Publish while `up` is frozen, then Ctrl-C the moment it wakes: the broker keeps
    # messages in memory only, so `up` must ingest all that was published before it
    # stops the broker.
    up.send_signal(signal.SIGSTOP)
    demo = _receipts(env, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "./receipts show demo-lead-followup" in demo.stdout
    up.send_signal(signal.SIGCONT)
    up.send_signal(signal.SIGINT)
    output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    assert "finishing what was published" in output
    assert not (tmp_path / "data" / "up.json").exists()

    # A second `up` on the same data dir finds every event the first one was sent.
    again, _ = _start_up(env)
    try:
        verify = _receipts(env, "verify", "demo-pricing-update")
        assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout + verify.stderr
        stored = sum(json.loads(_show_eventually(env, run_id, "--json"))["integrity"]["events"]
                     for run_id in _demo_run_ids())  # fmt: skip
        assert stored == _demo_event_count()
        assert "Final state: sent" in _show_eventually(env, "demo-lead-followup")
    finally:
        stopping = time.monotonic()
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    assert again.returncode == 0
    assert time.monotonic() - stopping < 10, "an idle `up` should stop at once, not wait out the drain"


def _demo_published() -> list[str]:
    """The run id of every event the demo publishes, in order."""
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer))  # type: ignore[arg-type]
    return [key.decode() for _, key, _ in producer.sent]


def _demo_run_ids() -> list[str]:
    return sorted(set(_demo_published()))


def _demo_event_count() -> int:
    return len(_demo_published())


def test_up_on_external_servers_starts_nothing_embedded(tmp_path: Path, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTS_")}
    env.update({
        "RECEIPTS_DATA_DIR": str(tmp_path / "data"),
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
        "RECEIPTS_TOPIC": settings.topic,
    })  # fmt: skip
    up, lines = _start_up(env)
    try:
        assert f"Kafka     {settings.kafka_bootstrap}" in "".join(lines)
        assert not (tmp_path / "data" / "pg").exists()
        assert not (tmp_path / "data" / "tansu.log").exists()
        assert _receipts(env, "demo", "--prefix", "ext").returncode == 0
        assert "Final state: sent" in _show_eventually(env, "ext-lead-followup")
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)
    assert up.returncode == 0
