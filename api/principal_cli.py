"""`receipts principal add|list|revoke`: who may ask, and in which tenant.

Administration: the `admin` role (the CLI's token), or database access (a
RECEIPTS_DATABASE_URL of one's own). `add` prints the new token once, alone on
stdout so a script can take it (`TOKEN=$(receipts principal add …)`); only its
SHA-256 is stored, so a lost token is replaced by a new principal, not recovered.
"""

from __future__ import annotations

import argparse
import sys

from api.admin_table import WHEN, AdminTable, administering, state
from infra.principals import TABLE, PrincipalRecord, Principals
from infra.settings import Settings


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    with administering(settings, TABLE, Principals, create=True) as (principals, by):
        token = principals.add(args.id, args.tenant, args.role, by)
    roles = ", ".join(sorted(set(args.role))) or "none"
    print(
        f"principal {args.id} added (tenant {args.tenant}, roles {roles}); its token follows, "
        "shown this once: keep it (RECEIPTS_TOKEN) or it is gone",
        file=sys.stderr,
    )
    print(token)
    return 0


def _row(record: PrincipalRecord) -> str:
    p = record.principal
    roles = ",".join(sorted(p.roles)) or "—"
    return f"{p.id:24} {p.tenant:16} {roles:32} {record.created_at:{WHEN}}  {state(record.revoked_at)}"


def _json(record: PrincipalRecord) -> dict[str, object]:
    return {
        "id": record.principal.id,
        "tenant": record.principal.tenant,
        "roles": sorted(record.principal.roles),
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


PRINCIPALS = AdminTable(
    noun="principal",
    table=TABLE,
    open_table=Principals,
    key="id",
    header=f"{'principal':24} {'tenant':16} {'roles':32} {'added (UTC)':19}  state",
    row=_row,
    to_json=_json,
    none="(no principals: `receipts principal add ID --tenant T --role R` adds one)",
    revoked="its token is refused from now on",
)


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
    listing.set_defaults(func=PRINCIPALS.cmd_list)
    revoke = commands.add_parser("revoke", help="refuse its token from now on (the record stays)")
    revoke.add_argument("id")
    revoke.set_defaults(func=PRINCIPALS.cmd_revoke)
