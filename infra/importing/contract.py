"""Contract events as JSONL (one step a line, in our wire shape: what a platform already
logging our contract has), streamed a line at a time. Each line goes through the same codec
and limits as ingest; a line that is not a step is skipped with its number and reason, never
stops the import. Event ids are the file's own, so importing the same file again records
nothing new (ingest counts them as duplicates)."""

from __future__ import annotations

from pathlib import Path

from infra.importing.base import FLUSH_EVERY, Advance, Imported, StepSender, no_progress
from schemas import Codec, DecodeError


def import_contract(
    path: Path,
    publisher: StepSender,
    imported: Imported,
    advance: Advance = no_progress,
    codec: Codec | None = None,
) -> None:
    codec = codec or Codec()
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            advance(len(raw), 0)
            if not raw.strip():
                continue
            try:
                step = codec.decode(raw.strip())
            except DecodeError as error:
                imported.skip(path.name, number, str(error))
                continue
            publisher.publish(step)
            imported.events += 1
            imported.runs.add((step.tenant, step.run_id))
            advance(0, 1)
            if imported.events % FLUSH_EVERY == 0:
                publisher.flush()  # the publisher keeps what it sent until the broker has it
    publisher.flush()
