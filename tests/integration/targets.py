"""Real rollback targets for tests: a local HTTP server taking webhooks, a git repository."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from domain.rollback import ReverseEvent

SECRET = "whsec_" + base64.b64encode(b"a test key of 24 bytes!!").decode()


@dataclass
class Delivery:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    status: int

    @property
    def verified(self) -> bool:
        """Checked the way a receiver would, from the secret alone (not our signing code)."""
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        signed = f"{self.webhook_id}.{self.timestamp}.".encode() + self.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return any(
            part.startswith("v1,") and hmac.compare_digest(part[3:], expected)
            for part in self.signature.split()
        )

    @property
    def document(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, body), then 200 `{"ref": ...}`."""

    url: str = ""
    script: list[tuple[int, bytes]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    # Ids answered 2xx: a receiver that dedupes on webhook-id applies each once.
    applied: dict[str, int] = field(default_factory=dict)
    # Set: the next delivery is taken and then held, unanswered, until `release` is set
    # (a sender killed while it waits for the answer).
    hold_next: bool = False
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, webhook_id: str) -> tuple[int, bytes]:
        if self.script:
            return self.script.pop(0)
        self.applied[webhook_id] = self.applied.get(webhook_id, 0) + 1
        return 200, json.dumps({"ref": f"applied:{webhook_id}"}).encode()


@contextmanager
def webhook_receiver(script: list[tuple[int, bytes]] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(script=list(script or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            webhook_id = self.headers.get("webhook-id", "")
            status, answer = receiver.answer(webhook_id)
            receiver.deliveries.append(
                Delivery(
                    webhook_id,
                    self.headers.get("webhook-timestamp", ""),
                    self.headers.get("webhook-signature", ""),
                    body,
                    status,
                )
            )
            if receiver.hold_next:
                receiver.hold_next = False
                receiver.release.wait(60)
            self.send_response(status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/agent-undo"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def git(repository: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Site Bot", "-c", "user.email=bot@example.com", *args],
        cwd=repository,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def site_repository(path: Path) -> Path:
    """A website repository with a pricing page at its first version."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "pricing.html").write_text("<p>Plan: 40 EUR</p>\n")
    (path / "about.html").write_text("<p>About us</p>\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "Site as published")
    return path


def commit_file(repository: Path, name: str, text: str, message: str) -> str:
    (repository / name).write_text(text)
    git(repository, "add", name)
    git(repository, "commit", "-q", "-m", message)
    return git(repository, "rev-parse", "HEAD")


def reverts_in(repository: Path) -> list[str]:
    return git(repository, "log", "--format=%H", "--grep=^Revert").split()


def reverse_event(**overrides: Any) -> ReverseEvent:
    """A reverse event as the planner makes them (domain.rollback.plan), for one step."""
    values: dict[str, Any] = {
        "reverse_id": "rev-1",
        "rollback_id": "rb-1",
        "tenant": "default",
        "run_id": "run-1",
        "step_id": "run-1/step-1",
        "executed_event_id": "evt-exec-1",
        "method": "revert",
        "verb": "update_page",
        "target": {"system": "github", "kind": "file", "id": "pricing.html"},
        "reason": "the price was wrong",
        "requested_by": {"kind": "human", "id": "maria", "role": "rollback"},
        "requested_at": datetime(2025, 3, 3, 9, 30, tzinfo=UTC),
    }
    return ReverseEvent.model_validate({**values, **overrides})
