"""A store with runs and signed checkpoints over them, exported to a directory, and the
SQL attacks the adversarial tests perform on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from api.checkpoint_cli import build_checkpointer
from domain.chain import GENESIS, link
from domain.run import run_uuid
from domain.steps import StepEvent
from infra.checkpoint_files import file_name, from_dir, write_dir
from infra.rows import read_step_state, step_state
from infra.settings import Settings
from infra.signing import SigningKey, ensure_signing_key
from infra.store import RunStore
from projections.anchored import AnchoredVerdict, verify_anchored
from schemas.codec import encode_json
from tests.integration.helpers import execute, query, running_store
from tests.unit.factories import clean_run


def run_steps(run_id: str, tenant: str = "default") -> list[StepEvent]:
    """A clean run of 7 events under another run id."""
    return [s.model_copy(update={"run_id": run_id, "tenant": tenant}) for s in clean_run()]


@dataclass
class Anchored:
    settings: Settings
    store: RunStore
    key: SigningKey
    dir: Path

    def record(self, *run_ids: str) -> None:
        self.store.record((s, encode_json(s)) for r in run_ids for s in run_steps(r))
        for run_id in run_ids:  # what ingest writes beside a new run (verify names runs by it)
            execute(
                self.settings,
                "INSERT INTO receipts_run_tenants (run_id, tenant) VALUES (%s, 'default')",
                run_id,
            )

    def close(self) -> None:
        assert build_checkpointer(self.settings, self.store).close() is not None

    def export(self) -> None:
        tables = self.store.steps.checkpoint_tables
        with self.store.steps.datastore.transaction(commit=False) as curs:
            write_dir(self.dir, tables.all(curs), tables.keyring.history(curs))  # (new, differing)

    def verify(self, run: str | None = None, anchors: list[SigningKey] | None = None) -> AnchoredVerdict:
        keys = [k.public for k in (anchors if anchors is not None else [self.key])]
        return verify_anchored(self.store, from_dir(self.dir), keys, ("default", run) if run else None)

    # --- attacks, in SQL ------------------------------------------------------------------

    def run_key(self, run_id: str) -> UUID:
        return run_uuid("default", run_id)

    def rows(self, run_id: str) -> list[tuple[int, bytes]]:
        found = query(
            self.settings,
            "SELECT originator_version, state FROM receipts_events WHERE originator_id = %s "
            "ORDER BY originator_version",
            run_uuid("default", run_id),
        )
        return [(int(v), bytes(s)) for v, s in found]

    def set_state(self, run_id: str, version: int, state: bytes) -> None:
        execute(
            self.settings,
            "UPDATE receipts_events SET state = %s WHERE originator_id = %s AND originator_version = %s",
            state,
            run_uuid("default", run_id),
            version,
        )

    def delete(self, run_id: str, *versions: int) -> None:
        execute(
            self.settings,
            "DELETE FROM receipts_events WHERE originator_id = %s AND originator_version = ANY(%s)",
            run_uuid("default", run_id),
            list(versions),
        )

    def rewrite(self, run_id: str, version: int) -> None:
        """Edit one event's bytes and recompute every digest from it on: the chain verifies."""
        previous = GENESIS
        for v, state in self.rows(run_id):
            header = read_step_state(state)
            wire = header.wire
            if v == version:
                wire = edited_wire(wire)
            if v >= version:
                digest = link(previous, wire)
                rewritten = step_state(
                    header.recorded_at, digest, header.event_id, wire, v == 1, header.step_type
                )
                self.set_state(run_id, v, rewritten)
                previous = digest
            else:
                previous = header.digest

    def checkpoint_file(self, seq: int) -> Path:
        return self.dir / file_name(seq)


def edited_wire(wire: bytes) -> bytes:
    """The same JSON step, now said to be done by someone else."""
    data = json.loads(wire)
    data["actor"]["id"] = "someone-else"
    return json.dumps(data).encode()


@contextmanager
def anchored(settings: Settings, tmp_path: Path, checkpoints: int = 2) -> Iterator[Anchored]:
    """Runs a, b, c in checkpoint 1; each later checkpoint adds one more run (d, e, …)."""
    key, _ = ensure_signing_key(tmp_path / "signing.key")
    settings = settings.model_copy(update={"signing_key": tmp_path / "signing.key"})
    with running_store(settings) as store:
        setup = Anchored(settings, store, key, tmp_path / "checkpoints")
        setup.record("a", "b", "c")
        setup.close()
        for n in range(1, checkpoints):
            setup.record(chr(ord("c") + n))
            setup.close()
        setup.export()
        yield setup
