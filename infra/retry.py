"""One way to back off: delays that double with consecutive failures, up to a cap,
and start again from the base after a success."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Backoff:
    base: float = 0.05
    cap: float = 5.0
    failures: int = 0

    def delay(self) -> float:
        """The wait before the next try, given the failures so far."""
        return 0.0 if not self.failures else min(self.base * 2 ** (self.failures - 1), self.cap)

    def failed(self) -> float:
        """Count a failure; returns how long to wait before trying again."""
        self.failures += 1
        return self.delay()

    def succeeded(self) -> None:
        self.failures = 0

    def sleep_after_failure(self) -> None:
        time.sleep(self.failed())
