"""One progress line for long commands (rebuild, import, verify --all).

On a terminal it redraws one line in place; written to a file or a pipe (a log,
CI) it prints a plain line now and then instead, so logs hold no `\\r` soup.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "events",
        out: TextIO | None = None,
        every: float | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        """`write` instead of `out`: lines go to a caller's log (never redrawn)."""
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.out = out or sys.stderr
        self.write = write
        self.live = write is None and self.out.isatty()
        # Redraw twice a second on a terminal; a log line every 10 s elsewhere.
        self.every = every if every is not None else (0.5 if self.live else 10.0)
        self.started = self.last = time.monotonic()
        self.done = 0
        self.count = 0

    def advance(self, done: int = 0, count: int = 0) -> None:
        """`done` more of the total are through; `count` more units were handled."""
        self.done += done
        self.count += count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._show(now, final=False)

    def finish(self) -> float:
        """The closing line; returns the rate in units a second."""
        now = time.monotonic()
        self.done = self.total
        self._show(now, final=True)
        return self.count / max(now - self.started, 1e-9)

    def _show(self, now: float, final: bool) -> None:
        share = min(self.done / self.total, 1.0)
        rate = self.count / max(now - self.started, 1e-9)
        text = f"{self.label}: {share:4.0%} {self.count:,} {self.unit}  {rate:,.0f} {self.unit}/s"
        if self.write is not None:
            self.write(text + ("  done" if final else ""))
        elif self.live:
            bar = f"[{'#' * int(share * 30):30}] "
            self.out.write(f"\r{self.label}: {bar}{text[len(self.label) + 2 :]}" + ("\n" if final else ""))
            self.out.flush()
        else:
            self.out.write(text + ("  done\n" if final else "\n"))
            self.out.flush()
