"""`receipts checkpoints …`, `receipts signing-key …`, and `verify … --checkpoints`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.bootstrap import open_store, require_tables
from domain.errors import Invalid
from infra.checkpoint_files import write_dir
from infra.checkpoints import Checkpointer, CheckpointSchedule, rotate_key
from infra.kafka import ensure_topics, producer
from infra.progress import Progress
from infra.settings import Settings
from infra.signing import PublicKey, SigningKey
from infra.store import RunStore
from projections.anchored import anchored_text, collect, verify_anchored


def build_checkpointer(settings: Settings, store: RunStore, by: str = "receipts relay") -> Checkpointer:
    return Checkpointer(
        store.steps.datastore,
        store.steps.checkpoint_tables,
        settings.signing_key_file,
        store.codec,
        max_events=settings.checkpoint_events,
        by=by,
    )


def build_schedule(settings: Settings, store: RunStore) -> CheckpointSchedule:
    """What `receipts relay` runs between its turns: close on time or on volume, then publish."""
    assert settings.kafka_bootstrap
    topic = settings.checkpoints_topic
    # One partition: the chain is read back in order.
    ensure_topics(settings.kafka_bootstrap, [topic], 1)
    checkpointer = build_checkpointer(settings, store)
    # gzip: a checkpoint lists the head of every run its range touched (hex digests halve);
    # a broker's default 1 MB message limit then holds ~15k runs a checkpoint.
    sender = producer(
        settings.kafka_bootstrap,
        enable_idempotence=True,
        compression_type="gzip",
        max_request_size=32 * 1024 * 1024,
    )
    return CheckpointSchedule(
        checkpointer,
        lambda: checkpointer.publish(sender, topic),
        settings.checkpoint_seconds,
        settings.checkpoint_events,
    )


def cmd_close(settings: Settings, args: argparse.Namespace) -> int:
    from api.supervise import Stop
    from infra.retry import pause

    settings = settings.resolved()
    stop = Stop()
    stop.install()
    store = open_store(settings)
    try:
        checkpointer = build_checkpointer(settings, store, by="receipts checkpoints close")
        while True:
            closed = checkpointer.close()
            if closed is None:
                print("nothing to checkpoint: no event after the last checkpoint", flush=True)
            else:
                c = closed.checkpoint
                print(
                    f"checkpoint {c.seq}: positions {c.first}..{c.last}, {c.events} events, key {c.key_id}",
                    flush=True,
                )
            if args.every is None:
                return 0
            pause(args.every, stop.requested)
            if stop.requested():
                return 0
    finally:
        store.close()


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    try:
        tables = store.steps.checkpoint_tables
        with store.steps.datastore.transaction(commit=False) as curs:
            checkpoints = tables.all(curs)
            history = tables.keyring.history(curs)
    finally:
        store.close()
    written, differing = write_dir(args.dir, checkpoints, history)
    print(f"{written} new checkpoint file(s) in {args.dir} ({len(checkpoints)} in all), keys.json updated")
    if differing:
        print(
            f"receipts: checkpoint file(s) {', '.join(map(str, differing))} in {args.dir} differ from the "
            "store's and were kept: the store's checkpoints table was changed, or the files were; "
            f"`receipts verify --all --checkpoints {args.dir}` says which",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_key_show(settings: Settings, _args: argparse.Namespace) -> int:
    key = SigningKey.load(settings.signing_key_file)
    print(f"key id {key.key_id}\npublic key {key.public.text}\nfile {settings.signing_key_file.resolve()}")
    return 0


def cmd_key_rotate(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.resolved()
    store = open_store(settings)
    path = settings.signing_key_file
    try:
        entry = rotate_key(store.steps.datastore, store.steps.checkpoint_tables, path, args.by, args.reason)
    finally:
        store.close()
    print(
        f"signing key rotated: {entry.previous} -> {entry.key_id}; public key {entry.record['public_key']}\n"
        "checkpoints from now on are signed with it; older ones stay verifiable with the key history "
        "(`receipts checkpoints export DIR` writes it)"
    )
    return 0


def cmd_verify_anchored(settings: Settings, args: argparse.Namespace, tenant: str | None) -> int:
    """`verify RUN --checkpoints SRC` (tenant given) or `verify --all --checkpoints SRC`."""
    anchors = [PublicKey.parse(_key_text(k)) for k in args.public_key or ()]
    store = open_store(settings)
    try:
        require_tables(settings, store)
        collected = collect(settings, args.checkpoints)
        run = (tenant, args.run_id) if tenant is not None else None
        progress = Progress("verify", _log_size(store)) if run is None else None
        seen = [0]

        def advance(events: int) -> None:
            if progress is not None:
                progress.advance(done=events - seen[0], count=events - seen[0])
            seen[0] = events

        verdict = verify_anchored(store, collected, anchors, run, advance)
        if progress is not None:
            progress.finish()
    finally:
        store.close()
    print(verdict.model_dump_json(indent=2) if args.json else "\n".join(anchored_text(verdict)))
    return 0 if verdict.verified else 1


def _key_text(value: str) -> str:
    """A public key given as text, or as a file holding it."""
    path = Path(value)
    return path.read_text() if not value.startswith("ed25519:") and path.is_file() else value


def _log_size(store: RunStore) -> int:
    """Rows in the events table (the progress line's total), estimated: a count(*) would
    read the whole table once more before the pass does."""
    with store.steps.datastore.transaction(commit=False) as curs:
        curs.execute(
            "SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = %s::regclass",
            (f'"{store.steps.datastore.schema}"."{store.steps.events_table_name}"',),
        )
        row: Any = curs.fetchone()
    return int(row["n"]) if row else 0


def add_verify_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--checkpoints",
        metavar="DIR|topic",
        help="verify against signed checkpoints: a directory (`checkpoints export`), `topic` (this "
        "service's <topic>.checkpoints) or topic:NAME; names deleted, cut, rewritten and reordered events",
    )
    cmd.add_argument(
        "--all", action="store_true", help="every run in the store, streaming (needs --checkpoints)"
    )
    cmd.add_argument(
        "--public-key",
        action="append",
        metavar="KEY",
        help="a trusted public key (ed25519:BASE64, or a file holding it); repeat for several. "
        "Unset: the key history found with the checkpoints is trusted",
    )
    cmd.add_argument("--json", action="store_true", help="the verdict as JSON (with --checkpoints)")


def add_commands(sub: Any) -> None:
    checkpoints = sub.add_parser("checkpoints", help="signed checkpoints over the event log")
    csub = checkpoints.add_subparsers(dest="checkpoints_command", required=True, metavar="ACTION")
    export = csub.add_parser(
        "export", help="write every checkpoint (checkpoint-SEQ.json) and the key history (keys.json) to DIR"
    )
    export.add_argument("dir", type=Path, metavar="DIR")
    export.set_defaults(func=cmd_export)
    close = csub.add_parser(
        "close", help="close a checkpoint over the events after the last one now (`relay` does it on time)"
    )
    close.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep closing one this often until stopped (no publishing)",
    )
    close.set_defaults(func=cmd_close)
    key = sub.add_parser("signing-key", help="the service's Ed25519 signing key")
    ksub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    ksub.add_parser("show", help="its key id and public key").set_defaults(func=cmd_key_show)
    rotate_ = ksub.add_parser(
        "rotate", help="replace it with a new key; the change is recorded, signed by both keys"
    )
    rotate_.add_argument("--reason", default="scheduled rotation", help="why (kept in the key history)")
    rotate_.add_argument(
        "--by", default="receipts signing-key rotate", help="who asked (kept in the history)"
    )
    rotate_.set_defaults(func=cmd_key_rotate)
    add_portable_commands(sub)


def cmd_export_signed(settings: Settings, args: argparse.Namespace) -> int:
    from api.auth import cli_principal
    from projections.portable import export_signed

    if not args.signed:
        raise Invalid("--signed", "the only export there is is the signed one: add --signed")
    settings = settings.resolved()
    store = open_store(settings)
    try:
        tenant = cli_principal(settings, store).tenant_for(args.tenant)
        receipt = store.receipt(tenant, args.run_id, settings.unfinished_after)
        document = export_signed(store, build_checkpointer(settings, store), receipt)
    finally:
        store.close()
    target = args.output or Path(f"{args.run_id.replace('/', '_')}.receipt.json")
    target.write_text(json.dumps(document, indent=1))
    anchored = len(document["proofs"])
    print(
        f"wrote {target}: {len(document['events'])} events, {anchored} anchored in "
        f"{len(document['checkpoints'])} checkpoint(s); verify with "
        f"`receipts verify-file {target} --public-key KEY`"
    )
    return 0


def cmd_verify_file(_settings: Settings, args: argparse.Namespace) -> int:
    from projections.portable import file_text, load, verify_file

    try:
        document = load(args.file.read_text())
    except (OSError, ValueError) as error:
        raise Invalid("FILE", f"{args.file} does not read as a signed receipt: {error}") from None
    verdict = verify_file(document, [PublicKey.parse(_key_text(k)) for k in args.public_key])
    print(verdict.model_dump_json(indent=2) if args.json else "\n".join(file_text(verdict)))
    return 0 if verdict.verified else 1


def add_portable_commands(sub: Any) -> None:
    from api.incident_cli import add_tenant

    export = sub.add_parser(
        "export", help="write one run as a signed, portable receipt file (events, proofs, checkpoints)"
    )
    export.add_argument("run_id", metavar="RUN")
    export.add_argument("--signed", action="store_true", help="the receipt with what proves it (required)")
    export.add_argument("-o", "--output", type=Path, help="the file (default RUN.receipt.json)")
    add_tenant(export)
    export.set_defaults(func=cmd_export_signed)
    check = sub.add_parser(
        "verify-file", help="verify a signed receipt file offline, with the service's public key"
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="KEY",
        help="ed25519:BASE64, or a file holding it",
    )
    check.add_argument("--json", action="store_true", help="the verdict as JSON")
    check.set_defaults(func=cmd_verify_file)
