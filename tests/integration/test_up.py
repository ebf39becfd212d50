"""`receipts up` as a new user runs it: embedded servers, demo, show, Ctrl-C, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest

from api.demo import publish_demo
from domain.policy import sample_policy
from domain.routing import Router, decide
from domain.steps import StepEvent
from infra.publisher import Publisher
from infra.settings import Settings
from schemas import Codec
from tests.fakes import FakeProducer

pytestmark = pytest.mark.integration


def _receipts(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _start_up(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    command = [sys.executable, "-m", "api.cli", "up", "--kafka-port", "0", "--http-port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "resumed " in line or time.monotonic() > deadline:
            break
    assert any("Agent Receipts is up." in line for line in lines), "".join(lines)
    return process, lines


def _child(pid: int, command: str) -> psutil.Process:
    """`up`'s child running `receipts COMMAND`."""
    for child in psutil.Process(pid).children():
        if child.cmdline()[2:4] == ["api.cli", command]:
            return child
    raise AssertionError(f"`up` has no {command} child")


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
    # The first start adds a local admin; its token is the owner's alone, and the CLI's.
    token_file = tmp_path / "data" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    admins = _receipts(env, "principal", "list", "--json")
    assert admins.returncode == 0, admins.stderr
    [admin] = json.loads(admins.stdout)
    assert admin["tenant"] == "default" and {"admin", "sales-lead"} <= set(admin["roles"])
    assert token not in admins.stdout
    assert "already running" in _receipts(env, "up").stderr

    # Publish while `up` and its ingest are frozen, then Ctrl-C the moment they wake:
    # the broker keeps messages in memory only, so `up` must have ingest drain all that
    # was published before it stops the broker.
    ingest = _child(up.pid, "ingest")
    for process in (up, ingest):
        process.send_signal(signal.SIGSTOP)
    demo = _receipts(env, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "./receipts show demo-lead-followup" in demo.stdout
    for process in (ingest, up):
        process.send_signal(signal.SIGCONT)
    up.send_signal(signal.SIGINT)
    output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    assert "finishing what was published" in output
    assert not (tmp_path / "data" / "up.json").exists()

    # A second `up` on the same data dir finds every event the first one was sent.
    again, _ = _start_up(env)
    assert token_file.read_text().strip() == token  # a restart adds nobody: the same token
    try:
        verify = _receipts(env, "verify", "demo-pricing-update")
        assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout + verify.stderr
        stored = sum(
            json.loads(_show_eventually(env, run_id, "--json"))["integrity"]["events"]
            for run_id in _demo_run_ids()
        )
        assert stored == _demo_event_count()
        assert "Final state: sent" in _show_eventually(env, "demo-lead-followup")
        children = [c for c in psutil.Process(again.pid).children() if "api.cli" in c.cmdline()]
        assert sorted(c.cmdline()[3] for c in children) == ["ingest", "project", "relay", "serve"]
        http = json.loads((tmp_path / "data" / "up.json").read_text())["http"]
        _ask_the_incident_questions(env, http, token)
    finally:
        stopping = time.monotonic()
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    assert again.returncode == 0
    assert time.monotonic() - stopping < 15, "an idle `up` should stop at once, not wait out the drain"
    assert not any(child.is_running() for child in children)


def _get(url: str, token: str | None) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _ask_the_incident_questions(env: dict[str, str], http: str, token: str) -> None:
    """Over HTTP (waiting for the projections to apply the demo's last event) and the CLI,
    with the token `up` wrote."""
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer, encoding="json"))  # type: ignore[arg-type]
    last = json.loads(producer.sent[-1][2])
    url = f"{http}/runs/{last['run_id']}/receipt?after_event={last['event_id']}&wait=10"
    assert last["event_id"] in _get(url, token)["event_ids"]
    assert "/runs" in _get(f"{http}/openapi.json", token)["paths"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"{http}/runs", None)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    runs = _receipts(env, "runs", "--finding", "no_source_evidence")
    assert runs.returncode == 0 and "demo-boring-failures" in runs.stdout, runs.stderr
    touched = _receipts(env, "touched", "github/file/site/pricing.md")
    assert "demo-pricing-update" in touched.stdout and "reverted" in touched.stdout, touched.stderr
    relied = _receipts(env, "relied-on", "cms/page/pricing", "--version", "v12", "--json")
    assert [r["run_id"] for r in json.loads(relied.stdout)["runs"]] == ["demo-lead-followup"]
    # Sent by the agent in the lane the service's policy leaves to a person.
    findings = _receipts(env, "findings", "--code", "executed_in_draft_only")
    assert "demo-boring-failures" in findings.stdout, findings.stderr
    bad = _receipts(env, "touched", "just-an-id")
    assert bad.returncode == 2 and "is not SYSTEM/KIND/ID" in bad.stderr


def _demo_published() -> list[str]:
    """The run id of every event the demo publishes, in order."""
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer))  # type: ignore[arg-type]
    return [key.decode() for _, key, _ in producer.sent]


def _demo_run_ids() -> list[str]:
    return sorted(set(_demo_published()))


def _demo_event_count() -> int:
    """Every event the demo publishes, and the service's decision after each proposed or edited step."""
    producer = FakeProducer()
    publish_demo(Publisher(producer=producer))  # type: ignore[arg-type]
    router, codec = Router(sample_policy()), Codec()
    runs: dict[str, list[StepEvent]] = {}
    count = 0
    for _, _, value in producer.sent:
        step = codec.decode(value)
        recorded = runs.setdefault(step.run_id, [])
        count += 1 + (decide(router, recorded, step) is not None)
        recorded.append(step)
    return count


def test_up_on_external_servers_starts_nothing_embedded(tmp_path: Path, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTS_")}
    env.update(
        {
            "RECEIPTS_DATA_DIR": str(tmp_path / "data"),
            "RECEIPTS_DATABASE_URL": str(settings.database_url),
            "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
            "RECEIPTS_DATABASE_SCHEMA": settings.database_schema,
            "RECEIPTS_TOPIC": settings.topic,
        }
    )
    up, lines = _start_up(env)
    try:
        assert f"Kafka     {settings.kafka_bootstrap}" in "".join(lines)
        assert not (tmp_path / "data" / "pg").exists()
        assert not (tmp_path / "data" / "tansu.log").exists()
        assert _receipts(env, "demo", "--prefix", "ext").returncode == 0
        # On external servers nobody is added implicitly: their administrators add principals.
        assert not (tmp_path / "data" / "token").exists()
        refused = _receipts(env, "show", "ext-lead-followup")
        assert refused.returncode == 3 and "no token: set RECEIPTS_TOKEN" in refused.stderr
        added = _receipts(env, "principal", "add", "ops", "--tenant", "default", "--role", "admin")
        assert added.returncode == 0, added.stderr
        env["RECEIPTS_TOKEN"] = added.stdout.strip()
        assert "Final state: sent" in _show_eventually(env, "ext-lead-followup")
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)
    assert up.returncode == 0
    # Each process said it stopped cleanly, in the database that outlives them.
    with psycopg.connect(str(settings.database_url)) as conn:
        rows = conn.execute(
            f'SELECT kind, state FROM "{settings.database_schema}".receipts_processes'
        ).fetchall()
    assert sorted(rows) == [(kind, "stopped") for kind in ("ingest", "project", "relay", "serve", "up")]
