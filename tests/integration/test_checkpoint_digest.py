"""The checkpointer reads digests in SQL, verify in Python: the two must agree on every
row, honest or not, or an untouched store would not verify."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infra.rows import DIGEST_SQL, anchored_digest, step_state
from infra.settings import Settings
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

HONEST = step_state(
    datetime(2026, 1, 1, tzinfo=UTC), bytes(range(32)), "evt-1", b'{"x":1}', True, "run.started"
)


@pytest.mark.parametrize(
    "state",
    [
        HONEST,
        HONEST.replace(bytes(range(32)).hex().encode(), bytes(range(32)).hex().upper().encode()),
        HONEST.replace(b'"d":"', b'"D":"'),
        HONEST[:60],
        HONEST.replace(b'"t":"', b'"t":"' + b"x" * 100),  # the digest field pushed past 128 bytes
        HONEST.replace(b"0001", b"zz01"),
        b'{"policy": "not a step"}',
        b"S1",
        b"",
    ],
)
def test_sql_and_python_read_the_same_digest(settings: Settings, state: bytes) -> None:
    [(in_sql,)] = query(settings, f"SELECT {DIGEST_SQL} FROM (VALUES (%s::bytea)) AS t(state)", state)
    assert bytes(in_sql) == anchored_digest(state)
