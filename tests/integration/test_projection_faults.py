"""The projection runner on a bad day: PostgreSQL restarted under it, steps no view can apply."""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.bootstrap import build_projections, build_queries
from api.service_cli import rebuild
from domain.chain import GENESIS, link
from domain.run import run_uuid
from infra.embedded import EmbeddedPostgres
from infra.rows import OPENED_TOPIC, RECORDED_TOPIC, step_state
from infra.settings import Settings
from projections.catalog import VIEW_NAMES
from projections.integrity import verify_run
from tests.integration.helpers import running_store
from tests.integration.incidents import record_incidents
from tests.integration.test_projections import dump

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start (the session's one is shared)."""
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    yield server
    server.stop()


def _restart(server: EmbeddedPostgres, down_for: float) -> None:
    """Crash the server (`-m immediate`: no shutdown checkpoint, clients cut off) and
    start it again on the same socket and port."""
    url = server.url
    server.crash()
    time.sleep(down_for)
    assert server.start() == url


def _min_position(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url, connect_timeout=2) as conn:
        rows = conn.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT notification_id FROM {} WHERE application_name = 'Receipts'").format(
                    sql.Identifier(settings.database_schema, f"view_{name}_tracking")
                )
                for name in VIEW_NAMES
            )
        ).fetchall()
    return min(int(r[0]) for r in rows)


def test_the_runner_carries_on_across_a_postgres_crash_restart(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> None:
    settings = settings.model_copy(update={"database_url": own_postgres.url, "database_schema": "public"})
    with running_store(settings) as store:
        events = record_incidents(store)
        end = store.steps.max_notification_id()
        assert end
    with running_store(settings) as store:
        runner = build_projections(settings, store)
        runner.page_size = 1  # many small transactions: the crash lands mid-way
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop.is_set,), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while _min_position(settings) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            _restart(own_postgres, down_for=1.5)
            assert 0 < _min_position(settings) < end, "the crash should land while pages were applied"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if _min_position(settings) == end:
                        break
                except psycopg.OperationalError:
                    pass
                time.sleep(0.1)
            assert thread.is_alive(), "the runner must not end on a lost database"
            assert _min_position(settings) == end, "the runner did not carry on by itself"
        finally:
            stop.set()
            thread.join(15)
        healed = dump(settings)
        assert len(healed["timeline"]) == events  # nothing applied twice, nothing skipped
        rebuild(build_projections(settings, store), str(settings.database_url), lambda _: None)
        assert dump(settings) == healed


def _message(kind: str, run_id: str, n: int, data: dict[str, Any], step_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "type": kind,
            "event_id": f"{run_id}-{n}",
            "run_id": run_id,
            "tenant": "default",
            "occurred_at": "2026-11-20T10:00:00Z",
            "actor": {"kind": "agent", "id": "bot"},
            "step_id": step_id,
            "data": data,
        }
    ).encode()


def _started(run_id: str, workflow: str) -> bytes:
    return _message(
        "run.started",
        run_id,
        1,
        {
            "workflow": workflow,
            "input": {"system": "hubspot", "kind": "form", "id": "lead-1"},
            "agent": {"name": "bot", "version": "1"},
            "model": {"provider": "acme", "name": "m", "version": "1"},
        },
    )


def _store_rows(settings: Settings, run_id: str, wires: list[bytes]) -> None:
    """Write a run's steps straight into the events table, as a stored row looks
    (chained), bypassing ingest: rows stored before the door checked them."""
    assert settings.database_url
    statement = sql.SQL(
        "INSERT INTO {} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(settings.database_schema, "receipts_events"))
    digest = GENESIS
    with psycopg.connect(settings.database_url) as conn:
        for version, wire in enumerate(wires, start=1):
            digest = link(digest, wire)
            event_id = json.loads(wire)["event_id"]
            state = step_state(datetime.now(UTC), digest, event_id, wire, opens_run=version == 1)
            topic = OPENED_TOPIC if version == 1 else RECORDED_TOPIC
            conn.execute(statement, (run_uuid("default", run_id), version, topic, state))


def _store_poison(settings: Settings) -> None:
    # Rows stored before the door checked what it checks now: they no longer decode.
    # A workflow name with NUL (no text column takes it), then a later step of that run.
    _store_rows(
        settings,
        "poison-nul",
        [
            _started("poison-nul", "a\u0000b"),
            _message("run.finished", "poison-nul", 2, {"final_state": "sent"}),
        ],
    )
    # A target id of 100 KB (incompressible) that no btree index row can hold.
    _store_proposal(
        settings, "poison-long", {"system": "crm", "kind": "contact", "id": secrets.token_urlsafe(75_000)}
    )
    # Within every limit of the door, yet refused by PostgreSQL: three names of 512
    # three-byte characters (random: no compression) make one `touches` index row of
    # 4.6 KB, where a btree row holds at most 2,704 bytes.
    rng = random.Random(14)
    system, kind, wide = ("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(512)) for _ in range(3))
    _store_proposal(settings, "poison-wide", {"system": system, "kind": kind, "id": wide})


def _store_proposal(settings: Settings, run_id: str, target: dict[str, str]) -> None:
    proposed = {
        "action": {"verb": "note", "target": target, "tool": "crm.note", "params": {}, "output": "x"},
        "signal": {"flags": []},
        "rollback": {"method": "none"},
    }
    _store_rows(
        settings,
        run_id,
        [
            _started(run_id, "crm-notes"),
            _message("action.proposed", run_id, 2, proposed, step_id="s1"),
            _message("run.finished", run_id, 3, {"final_state": "abandoned"}),
        ],
    )


def _quarantined(settings: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(str(settings.database_url)) as conn:
        return conn.execute(
            sql.SQL("SELECT run_key, view, reason FROM {} ORDER BY position").format(
                sql.Identifier(settings.database_schema, "view_quarantine")
            )
        ).fetchall()


def test_a_step_no_view_can_apply_is_quarantined_and_the_rest_applied(settings: Settings) -> None:
    with running_store(settings) as store:
        events = record_incidents(store)
        _store_poison(settings)
        record_incidents(store)  # more after the poison: redelivered, so nothing new
        runner = build_projections(settings, store)
        runner.catch_up()
        end = runner.log_end()
        assert runner.positions() == dict.fromkeys(VIEW_NAMES, end)
        assert runner.catch_up() == 0  # the quarantined steps never stop a page again
        quarantined = _quarantined(settings)
        assert [(run, view) for run, view, _ in quarantined] == [
            (run_uuid("default", "poison-nul"), "log"),
            (run_uuid("default", "poison-long"), "log"),
            (run_uuid("default", "poison-wide"), "touches"),
        ]
        assert "NUL" in quarantined[0][2] and "no longer decodes" in quarantined[0][2]
        assert "at most 512 characters" in quarantined[1][2]
        assert "touches.tenant+system+kind+entity_id would be 4615 bytes" in quarantined[2][2]
        tables = dump(settings)
        assert len(tables["timeline"]) == events + 8 - 3  # every step but the three set aside
        runs = {row[2]: row for row in tables["runs"]}
        assert runs["poison-nul"][14] == "sent" and runs["poison-nul"][3] is None  # finished, no workflow
        assert runs["poison-long"][14] == "abandoned" and runs["poison-long"][16] == 2
        assert runs["poison-wide"][14] == "abandoned" and runs["poison-wide"][16] == 2
        # verify says why the view of a run with a quarantined step differs from its events.
        verified = verify_run(store, build_queries(settings, store), "default", "poison-wide")
        assert verified.chain_verified and verified.view == "differs"
        assert (
            verified.quarantined[0].startswith("log position ")
            and "refused by view touches" in (verified.quarantined[0])
        )
        # A rebuild leaves the same steps out and writes the same rows.
        rebuild(build_projections(settings, store), str(settings.database_url), lambda _: None)
        assert dump(settings) == tables


def test_a_rebuild_meeting_such_a_step_quarantines_it_too(settings: Settings) -> None:
    with running_store(settings) as store:
        events = record_incidents(store)
        _store_poison(settings)
        runner = build_projections(settings, store)
        rebuild(runner, str(settings.database_url), lambda _: None, workers=1, size=50)
        assert runner.positions() == dict.fromkeys(VIEW_NAMES, runner.log_end())
        assert [view for _, view, _ in _quarantined(settings)] == ["log", "log", "touches"]
        rebuilt = dump(settings)
        assert len(rebuilt["timeline"]) == events + 8 - 3
        assert runner.catch_up() == 0
