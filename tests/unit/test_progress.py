"""The progress line: redrawn on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from infra.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_and_no_carriage_returns() -> None:
    out = io.StringIO()
    progress = Progress("rebuilding runs", total=10, out=out, every=0.0)
    progress.advance(done=5, count=500)
    rate = progress.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("rebuilding runs:  50% 500 events")
    assert lines[-1].startswith("rebuilding runs: 100% 500 events") and lines[-1].endswith("done")
    assert rate > 0


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    out = Terminal()
    progress = Progress("verifying", total=4, unit="runs", out=out, every=0.0)
    progress.advance(done=1, count=1)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[#######                       ]  25% 1 runs" in text


def test_nothing_is_written_between_intervals() -> None:
    out = io.StringIO()
    progress = Progress("x", total=100, out=out, every=3600)
    for _ in range(50):
        progress.advance(done=1, count=1)
    assert out.getvalue() == ""
