"""What the CLIs over the administration tables (`receipts principal`, `receipts publisher`)
share: opening a table as its administrator, listing its records as a table or JSON, and
revoking one (the record stays)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from eventsourcing.postgres import PostgresDatastore

from api.auth import cli_admin
from api.bootstrap import open_store, require_tables
from infra.settings import Settings

WHEN = "%Y-%m-%d %H:%M:%S"

Table = TypeVar("Table")
Record = TypeVar("Record")


class RecordTable(Protocol[Record]):
    def records(self) -> list[Record]: ...
    def revoke(self, key: str, /) -> bool: ...


@contextmanager
def administering(
    given: Settings,
    table: str,
    open_table: Callable[[PostgresDatastore, str], Table],
    *,
    create: bool = False,
) -> Iterator[tuple[Table, str]]:
    """The table (`open_table(datastore, schema)`) and who administers it: refused unless the
    CLI's token is an admin's or the caller has database access. `create`: a command that
    writes creates the tables it needs."""
    settings = given.resolved()
    store = open_store(settings, create=create)
    try:
        require_tables(settings, store, [table])
        by = cli_admin(given, store)
        yield open_table(store.steps.datastore, settings.database_schema), by
    finally:
        store.close()


def state(revoked_at: datetime | None) -> str:
    """A record's state column: active, or when it was revoked (UTC)."""
    return f"revoked {revoked_at:{WHEN}}" if revoked_at else "active"


def print_records(
    records: Sequence[Record],
    *,
    as_json: bool,
    to_json: Callable[[Record], dict[str, object]],
    header: str,
    row: Callable[[Record], str],
    none: str,
) -> int:
    """Every record, as JSON or as a table with `header`; `none` says how to add the first."""
    if as_json:
        print(json.dumps([to_json(r) for r in records], indent=2))
        return 0
    print(header)
    for record in records:
        print(row(record))
    if not records:
        print(none)
    return 0


@dataclass(frozen=True, slots=True)
class AdminTable(Generic[Record]):
    """One administration table as its CLI lists and revokes it."""

    noun: str  # what a record is called: principal, publisher
    table: str
    open_table: Callable[[PostgresDatastore, str], RecordTable[Record]]
    key: str  # the argument naming a record: id, name
    header: str
    row: Callable[[Record], str]
    to_json: Callable[[Record], dict[str, object]]
    none: str  # how to add the first, when there is none
    revoked: str  # what revoking it means

    def cmd_list(self, settings: Settings, args: argparse.Namespace) -> int:
        with administering(settings, self.table, self.open_table) as (records, _):
            listed = records.records()
        return print_records(
            listed, as_json=args.json, to_json=self.to_json, header=self.header, row=self.row, none=self.none
        )

    def cmd_revoke(self, settings: Settings, args: argparse.Namespace) -> int:
        key = getattr(args, self.key)
        with administering(settings, self.table, self.open_table) as (records, _):
            revoked = records.revoke(key)
        print(f"{self.noun} {key} {'revoked: ' + self.revoked if revoked else 'was revoked already'}")
        return 0
