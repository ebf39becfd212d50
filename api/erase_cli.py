"""`receipts erase SUBJECT --reason TEXT [--tenant T]`: destroy a subject's key.

Administration: the `admin` role (the CLI's token), or database access. Every field
sealed under the key reads as erased from then on, in receipts and views alike; the
events themselves, and so their chain, stay as they were. The erasure is recorded
(`subject.erased`: subject, reason, requested_by) and no key is made for the subject
again: a step of it still in flight is stored already erased.
"""

from __future__ import annotations

import argparse
import json
import sys

from api.auth import cli_admin
from api.bootstrap import open_store
from domain.errors import Invalid
from infra.settings import Settings
from infra.subject_keys import EVERY_TENANT
from projections.reveal import sealed_under_for_record


def cmd_erase(given: Settings, args: argparse.Namespace) -> int:
    settings = given.resolved()
    reason = args.reason.strip()
    if not reason:
        raise Invalid("--reason", "say why the subject is erased: the reason is recorded with the erasure")
    if not args.subject.strip() or args.subject == EVERY_TENANT:
        raise Invalid("subject", f"'{args.subject}' names no subject")
    store = open_store(settings, create=True)  # the key tables may not exist yet: erasing first is allowed
    try:
        by = cli_admin(given, store)
        erasure = store.steps.keyring.erase(args.subject, args.tenant, reason, by)
        # The destroyed secret's old row version must leave the table's pages too.
        store.steps.keyring.vacuum()
        nothing_sealed = not erasure.had_keys and not erasure.erased_before
        # A person's record is often not their runs' subject (a run's is its input unless the
        # publisher names one): under which subjects the runs that touched it are sealed.
        under = (
            sealed_under_for_record(store, settings.database_schema, erasure.subject)
            if nothing_sealed and not args.json
            else {}
        )
    finally:
        store.close()
    tenants = [t for t in erasure.tenants if t != EVERY_TENANT]
    if args.json:
        record = {
            "type": "subject.erased",
            "subject": erasure.subject,
            "tenants": list(erasure.tenants),
            "reason": erasure.reason,
            "requested_by": erasure.requested_by,
            "erased_at": erasure.erased_at.isoformat(),
            "dead_letters_dropped": erasure.dead_letters,
        }
        print(json.dumps(record, indent=2))
        return 0
    scope = f"tenant {args.tenant}" if args.tenant else f"every tenant ({', '.join(tenants) or 'none yet'})"
    print(
        f"subject {erasure.subject} erased in {scope}: its fields read as erased from now on, "
        f"and no key is made for it again (recorded as requested by {erasure.requested_by})"
    )
    if erasure.erased_before and not erasure.had_keys:
        print(f"note: {erasure.subject} was erased before: this erasure is recorded too", file=sys.stderr)
    elif nothing_sealed:
        _nothing_was_sealed_under(erasure.subject, under)
    if erasure.dead_letters:
        print(
            f"{erasure.dead_letters} dead letter(s) not yet in the dead-letter topic named the subject: "
            "their bytes are dropped"
        )
    return 0


def _nothing_was_sealed_under(subject: str, under: dict[str, list[str]]) -> None:
    """Say that no stored field was sealed under `subject`, and, when it names a record some
    runs touched, under which subjects those runs' personal data is sealed (`under`)."""
    print(
        f"note: no key existed for {subject}: no stored field was sealed under it, so nothing reads "
        "differently now (a step naming it from now on is stored erased)",
        file=sys.stderr,
    )
    for sealed_for, runs in under.items():
        shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        print(
            f"  runs that touched {subject} seal their personal data under {sealed_for}: {shown}",
            file=sys.stderr,
        )
    if under:
        print("  erase that subject to erase what they hold of it", file=sys.stderr)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    erase = sub.add_parser(
        "erase",
        help="destroy a subject's key: its personal data reads as erased; needs admin or database access",
    )
    erase.add_argument("subject", help="e.g. hubspot/contact/123 (a run's input or target), or as published")
    erase.add_argument("--reason", required=True, help="why (recorded with the erasure)")
    erase.add_argument("--tenant", default=None, help="only this tenant (default: every tenant)")
    erase.add_argument("--json", action="store_true", help="print the subject.erased record as JSON")
    erase.set_defaults(func=cmd_erase)
