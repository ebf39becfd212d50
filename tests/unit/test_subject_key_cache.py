"""The key ring's cache stays bounded: keys past their TTL are dropped once it grows, an
erased subject's answer is kept for good."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from infra import subject_keys
from infra.subject_keys import KeyRing


class _Cursor:
    def __init__(self, erased: set[str]) -> None:
        self.erased = erased
        self.rows: list[dict[str, Any]] = []

    def execute(self, _statement: object, params: tuple[Any, ...]) -> None:
        tenants, names = params[0], params[1]
        self.rows = [
            {"tenant": t, "subject": s, "secret": None if s in self.erased else b"k" * 32}
            for t, s in zip(tenants, names, strict=True)
        ]

    def fetchall(self) -> list[dict[str, Any]]:
        return self.rows


class _Keys:
    """Stands in for the keys table: every subject has a key but the erased ones."""

    def __init__(self, erased: set[str]) -> None:
        self.erased = erased
        self.reads = 0

    @contextmanager
    def transaction(self, commit: bool) -> Iterator[_Cursor]:
        self.reads += 1
        yield _Cursor(self.erased)


def test_the_cache_drops_keys_past_their_ttl_once_it_grows_and_keeps_erased_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(subject_keys.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(subject_keys, "CACHED_SUBJECTS", 100)
    table = _Keys(erased={"gone"})
    ring = KeyRing(table, "s", ttl=5.0)  # type: ignore[arg-type]
    assert ring.keys_of([("acme", "gone")])[("acme", "gone")].erased
    for batch in range(50):  # 10 new subjects a second: at most ~50 alive within the TTL
        now[0] = batch
        ring.keys_of([("acme", f"c-{batch}-{n}") for n in range(10)])
        assert len(ring._cache) <= 2 * 100 + 10
    assert ("acme", "gone") in ring._cache  # never read again
    reads = table.reads
    assert ring.keys_of([("acme", "c-49-0")]) and table.reads == reads  # a fresh one still answers
