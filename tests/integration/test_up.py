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


def _show_eventually(env: dict[str, str], run_id: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        shown = _receipts(env, "show", run_id)
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

    demo = _receipts(env, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "./receipts show demo-lead-followup" in demo.stdout
    assert "Final state: sent" in _show_eventually(env, "demo-lead-followup")

    up.send_signal(signal.SIGINT)
    output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    assert "finishing what was published" in output
    assert not (tmp_path / "data" / "up.json").exists()

    # A second `up` on the same data dir finds the receipts the first one stored.
    again, _ = _start_up(env)
    try:
        verify = _receipts(env, "verify", "demo-pricing-update")
        assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout + verify.stderr
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    assert again.returncode == 0
