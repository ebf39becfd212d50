"""`receipts publisher add|list|revoke|keygen`: who may write, and for which tenant.

Administration, as for principals: the `admin` role (the CLI's token), or database
access. `keygen` needs neither: it writes a key pair for a platform, which keeps the
private half and registers the public one with `add`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.admin_table import WHEN, AdminTable, administering, state
from domain.errors import Invalid
from infra.publishers import TABLE, PublisherRecord, Publishers
from infra.settings import Settings
from infra.signing import PublicKey, SigningKey


def read_public_key(path: Path) -> PublicKey:
    """A public key file: `ed25519:BASE64` as keygen writes it, bare base64, or PEM (openssl)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Invalid("--public-key", f"cannot read {path}: {error}") from None
    return PublicKey.parse(text)


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    key = read_public_key(Path(args.public_key))
    with administering(settings, TABLE, Publishers, create=True) as (publishers, by):
        publishers.add(args.name, args.tenant, key, by)
    print(
        f"publisher {args.name} added for tenant {args.tenant} (key {key.key_id}): "
        "events it signs are vouched for from now on"
    )
    return 0


def _row(record: PublisherRecord) -> str:
    key = record.public_key.key_id
    return (
        f"{record.name:24} {record.tenant:16} {key:16} {record.created_at:{WHEN}}  {state(record.revoked_at)}"
    )


def cmd_keygen(_settings: Settings, args: argparse.Namespace) -> int:
    private = Path(args.file)
    public = private.with_name(private.name + ".pub")
    if private.exists() and not args.force:
        raise Invalid("FILE", f"{private} exists; pass --force to replace it (its old signatures stay valid)")
    key = SigningKey.generate()
    key.write(private)  # 0600 from the moment it exists
    public.write_text(key.public.text + "\n", encoding="utf-8")
    print(f"private key: {private} (mode 0600; give it to the publisher: Signer.load(NAME, FILE))")
    print(f"public key:  {public} ({key.public.text})")
    print(f"register it: receipts publisher add NAME --tenant TENANT --public-key {public}", file=sys.stderr)
    return 0


def _json(record: PublisherRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "tenant": record.tenant,
        "public_key": record.public_key.text,
        "key_id": record.public_key.key_id,
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


PUBLISHERS = AdminTable(
    noun="publisher",
    table=TABLE,
    open_table=Publishers,
    key="name",
    header=f"{'publisher':24} {'tenant':16} {'key id':16} {'added (UTC)':19}  state",
    row=_row,
    to_json=_json,
    none="(no publishers: `receipts publisher add NAME --tenant T --public-key FILE` adds one)",
    revoked="its signatures no longer vouch for anything",
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publisher = sub.add_parser(
        "publisher",
        help="who may write (publishers' Ed25519 keys): add, list, revoke, keygen; "
        "needs admin or database access",
    )
    commands = publisher.add_subparsers(dest="publisher_command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", help="register a platform's public key for one tenant")
    add.add_argument("name", help="the name its events are signed as, e.g. crm-bot")
    add.add_argument("--tenant", required=True, help="the one tenant its signatures vouch for")
    add.add_argument(
        "--public-key", required=True, metavar="FILE", help="ed25519:BASE64 (keygen's FILE.pub), or PEM"
    )
    add.set_defaults(func=cmd_add)
    listing = commands.add_parser("list", help="every publisher, active or revoked")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=PUBLISHERS.cmd_list)
    revoke = commands.add_parser("revoke", help="refuse its signatures from now on (the record stays)")
    revoke.add_argument("name")
    revoke.set_defaults(func=PUBLISHERS.cmd_revoke)
    keygen = commands.add_parser("keygen", help="write a key pair: FILE (private, 0600) and FILE.pub")
    keygen.add_argument("file", metavar="FILE")
    keygen.add_argument("--force", action="store_true", help="replace FILE if it exists")
    keygen.set_defaults(func=cmd_keygen)
