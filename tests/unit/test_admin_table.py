"""The admin-table CLIs' listing (api/admin_table.py): a table with its header and a state
column, JSON with every record, and a hint to add the first when there is none."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from api.admin_table import print_records, state

ADDED = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
REVOKED = datetime(2025, 3, 4, 17, 30, 5, tzinfo=UTC)
RECORDS = [("crm-bot", None), ("old-bot", REVOKED)]


def _listed(records: list[tuple[str, datetime | None]], *, as_json: bool) -> int:
    return print_records(
        records,
        as_json=as_json,
        to_json=lambda r: {"name": r[0], "revoked_at": r[1].isoformat() if r[1] else None},
        header="name      state",
        row=lambda r: f"{r[0]:9} {state(r[1])}",
        none="(none yet: `add` adds one)",
    )


def test_a_table_has_the_header_then_a_row_a_record_with_its_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _listed(RECORDS, as_json=False) == 0
    assert capsys.readouterr().out.splitlines() == [
        "name      state",
        "crm-bot   active",
        "old-bot   revoked 2025-03-04 17:30:05",
    ]


def test_json_holds_every_record_and_no_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _listed(RECORDS, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"name": "crm-bot", "revoked_at": None},
        {"name": "old-bot", "revoked_at": REVOKED.isoformat()},
    ]


def test_no_records_says_how_to_add_one_and_json_is_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert _listed([], as_json=False) == 0
    assert capsys.readouterr().out.splitlines() == ["name      state", "(none yet: `add` adds one)"]
    assert _listed([], as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert state(None) == "active" and state(ADDED) == "revoked 2025-03-03 09:00:00"
