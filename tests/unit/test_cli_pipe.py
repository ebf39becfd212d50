"""The CLI read by a pager or `head` that stops reading: an exit code, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_stops_reading_gets_no_traceback() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "policy", "sample"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert cli.stdout is not None and cli.stderr is not None
    cli.stdout.close()  # nobody reads what it prints
    said = cli.stderr.read().decode()
    assert cli.wait(30) == 1 and "Traceback" not in said, said
