"""`receipts ingest` (or another of its long-running commands) as a real child process,
for tests that signal or kill it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from typing import ClassVar

from infra.settings import Settings


class IngestProcess:
    # Every one started: a test that fails before stopping its process must not leave
    # it consuming (tests/conftest.py kills what is left when the session ends).
    started: ClassVar[list[subprocess.Popen[str]]] = []

    def __init__(self, settings: Settings, command: str = "ingest", **overrides: object) -> None:
        env = dict(os.environ)
        values = {
            "DATABASE_URL": settings.database_url,
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "DATABASE_SCHEMA": settings.database_schema,
            "TOPIC": settings.topic,
            "GROUP": settings.group,
            "PARTITIONS": settings.partitions,
            "SESSION_TIMEOUT_MS": settings.session_timeout_ms,
            "HEARTBEAT_INTERVAL_MS": settings.heartbeat_interval_ms,
        }
        values.update({name.upper(): value for name, value in overrides.items()})
        env.update({f"RECEIPTS_{name}": str(value) for name, value in values.items()})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        IngestProcess.started.append(self.process)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def assigned(self) -> set[int]:
        """Partitions of the latest assignment, from the 'resumed …' log line."""
        lines = [line for line in self.lines if "resumed " in line]
        if not lines:
            return set()
        return {int(p) for p in re.findall(r"/(\d+)", lines[-1].split(" from stored")[0])}

    def stop(self, signal_number: int, timeout: float = 20.0) -> int:
        self.process.send_signal(signal_number)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code
