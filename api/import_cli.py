"""`receipts import FILE…`: past agent runs, published on `agent-steps` (infra/importing.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.bootstrap import build_publisher
from infra.importing import Imported, detect, import_file
from infra.progress import Progress
from infra.settings import Settings


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    paths = [Path(name) for name in args.files]
    for path in paths:
        if not path.is_file():
            print(f"receipts: {path}: no such file", file=sys.stderr)
            return 2
        detect(path)  # every file's format before anything is published
    publisher = build_publisher(settings)
    imported = Imported()
    try:
        for path in paths:
            progress = Progress(f"importing {path.name}", path.stat().st_size)
            import_file(path, publisher, imported, progress.advance)
            progress.finish()
    finally:
        publisher.close()
    print("\n".join(imported.summary()))
    return 1 if imported.skipped else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "import",
        help="publish past agent runs from files (contract events as JSONL) on the steps topic",
        description="Each line is one step in the wire contract's JSON shape; the format is detected "
        "from the file. Lines that are not steps are skipped and listed (exit 1). Importing the same "
        "file again records nothing new: event ids are the file's own.",
    )
    cmd.add_argument("files", nargs="+", metavar="FILE")
    cmd.set_defaults(func=cmd_import)
