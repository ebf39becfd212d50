"""`receipts principal add|list|revoke`: who may ask, and in which tenant.

Administration: the `admin` role (the CLI's token), or database access (a
RECEIPTS_DATABASE_URL of one's own). `add` prints the new token once, alone on
stdout so a script can take it (`TOKEN=$(receipts principal add …)`); only its
SHA-256 is stored, so a lost token is replaced by a new principal, not recovered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from api.auth import cli_admin
from api.bootstrap import open_store, require_tables
from infra.principals import TABLE, PrincipalRecord, Principals
from infra.settings import Settings

WHEN = "%Y-%m-%d %H:%M:%S"


@contextmanager
def _administering(given: Settings, *, create: bool = False) -> Iterator[tuple[Principals, str]]:
    """The principals table and who administers it (refused unless admin or database access)."""
    settings = given.resolved()
    store = open_store(settings, create=create)  # `add` writes: it creates the tables it needs
    try:
        require_tables(settings, store, [TABLE])
        by = cli_admin(given, store)
        yield Principals(store.steps.datastore, settings.database_schema), by
    finally:
        store.close()


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    with _administering(settings, create=True) as (principals, by):
        token = principals.add(args.id, args.tenant, args.role, by)
    roles = ", ".join(sorted(set(args.role))) or "none"
    print(
        f"principal {args.id} added (tenant {args.tenant}, roles {roles}); its token follows, "
        "shown this once: keep it (RECEIPTS_TOKEN) or it is gone",
        file=sys.stderr,
    )
    print(token)
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    with _administering(settings) as (principals, _):
        records = principals.records()
    if args.json:
        print(json.dumps([_json(r) for r in records], indent=2))
        return 0
    print(f"{'principal':24} {'tenant':16} {'roles':32} {'added (UTC)':19}  state")
    for r in records:
        p = r.principal
        state = f"revoked {r.revoked_at:{WHEN}}" if r.revoked_at else "active"
        roles = ",".join(sorted(p.roles)) or "—"
        print(f"{p.id:24} {p.tenant:16} {roles:32} {r.created_at:{WHEN}}  {state}")
    if not records:
        print("(no principals: `receipts principal add ID --tenant T --role R` adds one)")
    return 0


def cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    with _administering(settings) as (principals, _):
        revoked = principals.revoke(args.id)
    done = "revoked: its token is refused from now on" if revoked else "was revoked already"
    print(f"principal {args.id} {done}")
    return 0


def _json(record: PrincipalRecord) -> dict[str, object]:
    return {
        "id": record.principal.id,
        "tenant": record.principal.tenant,
        "roles": sorted(record.principal.roles),
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    principal = sub.add_parser(
        "principal", help="who may ask (API tokens): add, list, revoke; needs admin or database access"
    )
    commands = principal.add_subparsers(dest="principal_command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", help="add a principal and print its new token, once")
    add.add_argument("id", help="e.g. alice@acme or ci-bot")
    add.add_argument("--tenant", required=True, help="the one tenant it sees")
    add.add_argument(
        "--role",
        action="append",
        default=[],
        help="a role it holds (repeat for more), e.g. admin, sales-lead",
    )
    add.set_defaults(func=cmd_add)
    listing = commands.add_parser("list", help="every principal, active or revoked (no tokens)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    revoke = commands.add_parser("revoke", help="refuse its token from now on (the record stays)")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_revoke)
