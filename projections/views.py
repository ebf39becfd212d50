"""The read models: each a named set of tables, applied one log page at a time.

A view's `apply` is a pure function of the page (and, for views of whole runs,
each touched run's steps up to the page's end): no clock, no side effects, so a
rebuild from the log writes the same rows as incremental application. Views of
whole runs replace a touched run's rows; the timeline appends one row per step.

This module holds what every view shares; the views are in run_views.py,
reference_views.py, queue.py and rollbacks.py, listed together in catalog.py.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from domain.policy import Contract
from domain.receipt import checked
from domain.receipt_model import Receipt
from domain.run import Entry
from projections.log import EventLog, Recorded, histories

Row = tuple[Any, ...]
# PostgreSQL's btree index row holds ~2.7 KB. A longer key fails the insert, or,
# in a rebuild (indexes built at the end), the whole rebuild at its last step.
# So keys are checked as rows are written, against a limit below that.
KEY_BYTES = 2000


class UnindexableValue(ValueError):
    def __init__(self, view: str, column: str, size: int) -> None:
        super().__init__(f"{view}.{column} would be {size} bytes; an index key holds at most {KEY_BYTES}")


def _key_size(value: object) -> int:
    """Bytes of a text (or text array) key; 0 when clearly short (the common case, no encoding)."""
    if isinstance(value, str):
        return len(value.encode()) if len(value) > KEY_BYTES // 4 else 0
    if isinstance(value, list):
        return max((_key_size(item) for item in value), default=0)
    return 0


def _group_size(values: Sequence[object]) -> int:
    """Bytes the text values of one composite btree key take together; 0 when
    they are clearly short together."""
    texts = [v for v in values if isinstance(v, str)]
    if sum(map(len, texts)) <= KEY_BYTES // 4:
        return 0
    return sum(len(text.encode()) for text in texts)


@dataclass(frozen=True, slots=True)
class RunSoFar:
    """A run as a page leaves it: every step so far, the receipt they fold to, and the lane
    contract it was checked against (None: none applies)."""

    key: UUID
    entries: Sequence[Entry]
    receipt: Receipt
    contract: Contract | None = None


class Batch:
    """One page of the log, being applied; the runs it touched are rendered once,
    on first use, and shared by every view of whole runs."""

    def __init__(
        self,
        curs: psycopg.Cursor[Any],
        log: EventLog,
        steps: Sequence[Recorded],
        later: Collection[UUID] = (),
        fresh: bool = False,
    ) -> None:
        self._curs = curs
        self._log = log
        self.steps = steps
        # Runs a later page will render whole (a parallel rebuild): left to it.
        self._later = later
        # The views were emptied and no run is written twice: nothing to replace.
        self.fresh = fresh

    @cached_property
    def runs(self) -> list[RunSoFar]:
        touched = histories(self._curs, self._log, self.steps)
        contracts = self._log.policy_book.lookup(self._curs)
        runs = []
        for key, entries in touched.items():
            if entries and key not in self._later:
                runs.append(RunSoFar(key, entries, *checked(entries, contracts)))
        return runs


class View:
    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    # Column definitions, then the indexes (what follows "CREATE INDEX name ON table").
    definition: ClassVar[str]
    indexes: ClassVar[tuple[str, ...]] = ()
    # Indexes that need pg_trgm; skipped (queries still work, slower) without it.
    trigram_indexes: ClassVar[tuple[str, ...]] = ()
    # ALTER TABLE actions run after the table is made ("{}" is the table).
    alterations: ClassVar[tuple[str, ...]] = ()
    # Text columns some index keys on (see KEY_BYTES).
    keyed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, schema: str) -> None:
        self.schema = schema

    @property
    def table(self) -> str:
        return f"view_{self.name}"

    @property
    def identifier(self) -> Composed:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(self.table))

    @property
    def tracking_table(self) -> str:
        return f"{self.table}_tracking"

    @property
    def tracking_identifier(self) -> Composed:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(self.tracking_table))

    def create(self, curs: psycopg.Cursor[Any], trigrams: bool) -> None:
        curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (" + self.definition + ")").format(self.identifier))
        for alteration in self.alterations:
            curs.execute(SQL("ALTER TABLE {} " + alteration).format(self.identifier))
        indexes = self.indexes + (self.trigram_indexes if trigrams else ())
        for number, index in enumerate(indexes):
            curs.execute(
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + index).format(
                    Identifier(self._index_name(number)), self.identifier
                )
            )

    def drop_indexes(self, curs: psycopg.Cursor[Any]) -> None:
        """Drop the secondary indexes (for a bulk load; `create` builds them again)."""
        for number in range(len(self.indexes) + len(self.trigram_indexes)):
            curs.execute(
                SQL("DROP INDEX IF EXISTS {}.{}").format(
                    Identifier(self.schema), Identifier(self._index_name(number))
                )
            )

    def _index_name(self, number: int) -> str:
        return f"{self.table}_{number}"

    def apply(self, curs: psycopg.Cursor[Any], batch: Batch) -> None:
        raise NotImplementedError

    def copy(self, curs: psycopg.Cursor[Any], rows: Iterable[Row]) -> None:
        statement = SQL("COPY {} ({}) FROM STDIN").format(
            self.identifier, SQL(", ").join(map(Identifier, self.columns))
        )
        keyed = [(i, self.columns[i]) for i in map(self.columns.index, self.keyed)]
        groups = self._key_groups
        with curs.copy(statement) as copy:
            for row in rows:
                for i, column in keyed:
                    if (size := _key_size(row[i])) > KEY_BYTES:
                        raise UnindexableValue(self.name, column, size)
                for group in groups:
                    if (size := _group_size([row[i] for i in group])) > KEY_BYTES:
                        raise UnindexableValue(self.name, "+".join(self.columns[i] for i in group), size)
                copy.write_row(row)

    @cached_property
    def _key_groups(self) -> list[tuple[int, ...]]:
        """The keyed columns each btree index keys on together (GIN keys are elements or trigrams)."""
        groups = []
        for index in self.indexes:
            if "gin" in index.lower():
                continue
            names = [c for c in self.keyed if re.search(rf"\b{c}\b", index)]
            if len(names) > 1:
                groups.append(tuple(self.columns.index(c) for c in names))
        return groups


class WholeRunView(View):
    """Views of whole runs: a touched run's rows are replaced by what its steps say now."""

    def apply(self, curs: psycopg.Cursor[Any], batch: Batch) -> None:
        runs = batch.runs
        if not batch.fresh:
            curs.execute(
                SQL("DELETE FROM {} WHERE run_key = ANY(%s)").format(self.identifier),
                ([run.key for run in runs],),
            )
        self.copy(curs, (row for run in runs for row in self.rows(run)))

    def rows(self, run: RunSoFar) -> Iterator[Row]:
        raise NotImplementedError
