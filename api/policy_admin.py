"""`receipts policy publish|show|versions`: the policy commands that need the database.

`publish FILE` puts a policy in force the way ingest does at start (recorded in
`receipts_policies` unless it is in force already; running ingest processes
pick it up within RECEIPTS_POLICY_CHECK_SECONDS); `show [--as-of T] [--json]`
prints the policy in force then; `versions` lists every policy put in force.
`show` and `versions` ask as the CLI's principal (api/auth.py); `publish` is
administration: the `admin` role, or database access.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from api.auth import cli_admin, cli_principal
from api.bootstrap import open_store, require_tables
from api.incident_cli import when
from api.render import short_version
from domain.errors import ReceiptsError
from infra.policies import LoadedPolicy, NoPolicy, read_policy_file
from infra.settings import Settings
from infra.store import RunStore


def given(settings: object) -> Settings:
    """The settings as configured (before `resolved()`: who has database access)."""
    return settings if isinstance(settings, Settings) else Settings()


def settings_of(settings: object) -> Settings:
    return given(settings).resolved()


def loaded_json(loaded: LoadedPolicy) -> dict[str, Any]:
    """A policy put in force, as the CLI's --json and the HTTP API show it."""
    return {
        "version": loaded.version,
        "loaded_at": loaded.loaded_at.isoformat(),
        "loaded_by": loaded.loaded_by,
        "document": loaded.document,
        "source": loaded.source,
    }


def reader(settings: Settings) -> RunStore:
    """The store, for a command that only reads: a clear error before any table exists."""
    store = open_store(settings)
    try:
        require_tables(settings, store, ["receipts_policies"])
        cli_principal(settings, store)
    except ReceiptsError:
        store.close()
        raise
    return store


def cmd_publish(settings: object, args: argparse.Namespace) -> int:
    policy, text = read_policy_file(Path(args.file))
    store = open_store(settings_of(settings), create=True)  # administration writes: its table too
    try:
        by = cli_admin(given(settings), store)
        loaded, new = store.record_policy(policy, text, f"receipts policy publish by {by}")
    finally:
        store.close()
    if new:
        print(f"policy {loaded.version} in force since {loaded.loaded_at.isoformat()}")
    else:
        print(f"policy {loaded.version} is already in force (since {loaded.loaded_at.isoformat()})")
    return 0


def cmd_show(settings: object, args: argparse.Namespace) -> int:
    store = reader(settings_of(settings))
    try:
        loaded = store.policy_in_force(args.as_of)
    finally:
        store.close()
    if args.json:
        print(json.dumps(loaded_json(loaded), indent=2))
    else:
        at = f" at {args.as_of.isoformat()}" if args.as_of else ""
        print(
            f"# policy {loaded.version} (in force{at}; "
            f"loaded {loaded.loaded_at.isoformat()} by {loaded.loaded_by})"
        )
        print(loaded.source, end="" if loaded.source.endswith("\n") else "\n")
    return 0


def cmd_versions(settings: object, args: argparse.Namespace) -> int:
    store = reader(settings_of(settings))
    try:
        versions = store.policy_versions()
    finally:
        store.close()
    if not versions:
        raise NoPolicy("no policy has been loaded yet: `receipts ingest`, `up` or `policy publish` loads one")
    if args.json:
        print(
            json.dumps(
                [{k: v for k, v in loaded_json(v).items() if k != "source"} for v in versions], indent=2
            )
        )
        return 0
    for number, loaded in enumerate(versions):
        now = "  <- in force" if number == len(versions) - 1 else ""
        print(f"{loaded.loaded_at.isoformat()}  {short_version(loaded.version)}  {loaded.loaded_by}{now}")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = commands.add_parser("publish", help="put a policy in force (recorded in the database)")
    publish.add_argument("file")
    publish.set_defaults(func=cmd_publish)
    show = commands.add_parser("show", help="the policy in force now, or at a time")
    show.add_argument("--as-of", type=when, help="in force at this time (ISO 8601; UTC if no offset)")
    show.add_argument("--json", action="store_true", help="version, when, by whom, document and source")
    show.set_defaults(func=cmd_show)
    versions = commands.add_parser("versions", help="every policy put in force, oldest first")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(func=cmd_versions)
