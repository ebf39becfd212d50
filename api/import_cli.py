"""`receipts import FILE… [--mapping M]`: past agent runs, published on `agent-steps` (infra/importing/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.bootstrap import build_publisher
from infra.importing import CONTRACT, Imported, detect, import_file, load_mapping
from infra.kafka import producer
from infra.progress import Progress
from infra.settings import Settings

IMPORT_BATCH_BYTES = 512 * 1024


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    paths = [Path(name) for name in args.files]
    for path in paths:
        if not path.is_file():
            print(f"receipts: {path}: no such file", file=sys.stderr)
            return 2
    mapping = load_mapping(Path(args.mapping)) if args.mapping else None
    for path in paths:  # every file's format before anything is published
        kind = detect(path)
        if kind != CONTRACT and mapping is None:
            print(
                f"receipts: {path}: a {kind} file needs a mapping of its tools: give --mapping FILE",
                file=sys.stderr,
            )
            return 2
    settings = settings.resolved()  # the files and the mapping are checked before any server is asked
    # History goes out in the contract's JSON form, written by pydantic in C: the Avro path
    # (dict building, then fastavro) cost ~40% of an import's time (bench.import_runs). A
    # backlog, not a live path: larger batches a request (one request in flight keeps order).
    assert settings.kafka_bootstrap
    bulk = producer(settings.kafka_bootstrap, linger_ms=20, batch_size=IMPORT_BATCH_BYTES)
    publisher = build_publisher(settings.model_copy(update={"encoding": "json"}), producer_=bulk)
    imported = Imported()
    try:
        for path in paths:
            progress = Progress(f"importing {path.name}", path.stat().st_size)
            import_file(path, publisher, imported, progress.advance, mapping, args.workflow, args.tenant)
            progress.finish()
    finally:
        publisher.close()
    print("\n".join(imported.summary()))
    return 1 if imported.skipped else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "import",
        help="publish past agent runs (contract JSONL, chat transcripts, OTLP traces) on the steps topic",
        description="The format is detected from each file: contract events as JSONL (one step a line), "
        "OpenAI-style chat transcripts (a JSON array or JSONL of runs) or OpenTelemetry GenAI traces "
        "(OTLP JSON). Transcripts and traces need --mapping, a YAML file naming what each tool reads or "
        "writes. What cannot be imported is skipped and listed (exit 1). Importing the same file again "
        "records nothing new: event ids derive from the source's run ids and positions.",
    )
    cmd.add_argument("files", nargs="+", metavar="FILE")
    cmd.add_argument("--mapping", metavar="MAPPING", help="YAML mapping of the tools (transcripts, traces)")
    cmd.add_argument(
        "--workflow", metavar="W", help="the workflow of every run (else the run's or the mapping's)"
    )
    cmd.add_argument("--tenant", metavar="T", default="default", help="the tenant the runs belong to")
    cmd.set_defaults(func=cmd_import)
