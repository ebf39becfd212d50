"""The history of the service's signing keys: public halves only, in their own table.

Each key is a record (its key id, public key, the key it replaces, when, by whom,
why) signed by the key itself and, from the second on, by the key it replaces:
so a verifier that trusts any one key of the history can walk to every other,
and checkpoints signed by an old key stay verifiable after a rotation. The
private key is only ever in the key file (infra/signing.py).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier
from pydantic import BaseModel

from domain.checkpoint import canonical
from infra.signing import BadKey, PublicKey, SigningKey

KEY_FORMAT = "agent-receipts/signing-key/v1"


class KeyRecord(BaseModel):
    """One key of the history, as signed."""

    record: dict[str, Any]
    signatures: dict[str, str]  # key id -> base64 signature over canonical(record)

    @property
    def key_id(self) -> str:
        return str(self.record["key_id"])

    @property
    def public(self) -> PublicKey:
        return PublicKey.parse(str(self.record["public_key"]))

    @property
    def previous(self) -> str | None:
        previous = self.record.get("previous")
        return str(previous) if previous else None


def key_record(
    key: SigningKey, previous: SigningKey | None, by: str, reason: str, from_checkpoint: int = 1
) -> KeyRecord:
    record = {
        "format": KEY_FORMAT,
        "key_id": key.key_id,
        "public_key": key.public.text,
        "previous": previous.key_id if previous else None,
        # The first checkpoint it signs: from there on the previous key is retired.
        "from_checkpoint": from_checkpoint,
        "at": datetime.now(UTC).isoformat(),
        "by": by,
        "reason": reason,
    }
    signers = [key, *([previous] if previous else [])]
    body = canonical(record)
    return KeyRecord(
        record=record, signatures={s.key_id: base64.b64encode(s.sign(body)).decode() for s in signers}
    )


def trusted_keys(
    history: list[KeyRecord], anchors: list[PublicKey]
) -> tuple[dict[str, PublicKey], list[str]]:
    """The keys a verifier may accept: each anchor, and every key of the history linked to
    one by a record both sides signed. Without anchors the first key of the history is
    taken on trust (the caller says so). Returns the keys by id, and what did not check."""
    problems: list[str] = []
    valid: list[KeyRecord] = []
    for entry in history:
        body = canonical(entry.record)
        try:
            public = entry.public
        except BadKey as error:
            problems.append(f"key record {entry.record.get('key_id')}: {error.detail}")
            continue
        if public.key_id != entry.key_id or not _signed(public, entry, body):
            problems.append(f"key record {entry.key_id}: not signed by the key it names")
            continue
        valid.append(entry)
    by_id = {e.key_id: e for e in valid}
    links = []
    for entry in valid:
        previous = entry.previous
        if previous is None or previous not in by_id:
            continue
        if _signed(by_id[previous].public, entry, canonical(entry.record)):
            links.append((previous, entry.key_id))
        else:
            problems.append(f"key record {entry.key_id}: not endorsed by the key it replaces")
    trusted = {a.key_id: a for a in anchors} or ({valid[0].key_id: valid[0].public} if valid else {})
    changed = True
    while changed:  # walk the links both ways until nothing new is trusted
        changed = False
        for older, newer in links:
            for a, b in ((older, newer), (newer, older)):
                if a in trusted and b not in trusted:
                    trusted[b] = by_id[b].public
                    changed = True
    return trusted, problems


def _signed(public: PublicKey, entry: KeyRecord, body: bytes) -> bool:
    signature = entry.signatures.get(public.key_id)
    if signature is None:
        return False
    try:
        return public.verifies(base64.b64decode(signature), body)
    except ValueError:
        return False


class Keyring:
    """The keys table, `receipts_signing_keys`."""

    def __init__(self, schema: str) -> None:
        self.table: Composed = SQL("{}.{}").format(Identifier(schema), Identifier("receipts_signing_keys"))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (key_id text PRIMARY KEY, seq bigserial UNIQUE, "
            "entry text NOT NULL, published boolean NOT NULL DEFAULT false)"
        ).format(self.table)

    def history(self, curs: psycopg.Cursor[Any]) -> list[KeyRecord]:
        curs.execute(SQL("SELECT entry FROM {} ORDER BY seq").format(self.table))
        return [KeyRecord.model_validate_json(_column(row, "entry")) for row in curs.fetchall()]

    def add(self, curs: psycopg.Cursor[Any], entry: KeyRecord) -> None:
        curs.execute(
            SQL("INSERT INTO {} (key_id, entry) VALUES (%s, %s)").format(self.table),
            (entry.key_id, entry.model_dump_json()),
        )

    def ensure(self, curs: psycopg.Cursor[Any], key: SigningKey, by: str) -> None:
        """The key that is about to sign must be in the history: the first one is added;
        any other must have come through `receipts signing-key rotate`."""
        history = self.history(curs)
        if any(e.key_id == key.key_id for e in history):
            return
        if history:
            raise BadKey(
                f"the signing key {key.key_id} is not in the key history (latest: {history[-1].key_id}): "
                "a replaced key file is refused; rotate keys with `receipts signing-key rotate`"
            )
        self.add(curs, key_record(key, None, by, "first signing key"))

    def unpublished(self, curs: psycopg.Cursor[Any]) -> list[KeyRecord]:
        curs.execute(SQL("SELECT entry FROM {} WHERE NOT published ORDER BY seq").format(self.table))
        return [KeyRecord.model_validate_json(_column(row, "entry")) for row in curs.fetchall()]

    def mark_published(self, curs: psycopg.Cursor[Any], key_ids: list[str]) -> None:
        curs.execute(
            SQL("UPDATE {} SET published = true WHERE key_id = ANY(%s)").format(self.table), (key_ids,)
        )


def _column(row: Any, name: str) -> str:
    return str(row[name] if isinstance(row, dict) else row[0])


def rotate(
    curs: psycopg.Cursor[Any], keyring: Keyring, path: Path, by: str, reason: str, from_checkpoint: int
) -> KeyRecord:
    """A new key replaces the one in `path` from checkpoint `from_checkpoint` on: recorded
    (signed by both) in the caller's transaction, the new key staged beside the file. A
    crash before `install_rotated` leaves it staged: the checkpointer installs it."""
    old = SigningKey.load(path)
    keyring.ensure(curs, old, by)
    new = SigningKey.generate()
    entry = key_record(new, old, by, reason, from_checkpoint)
    keyring.add(curs, entry)
    new.write(staged_path(path))
    return entry


def staged_path(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def install_rotated(path: Path) -> None:
    """After the rotation committed: the staged key becomes the key file."""
    staged_path(path).replace(path)


def retired_from(history: list[KeyRecord]) -> dict[str, tuple[str, int]]:
    """Each replaced key id -> (its successor, the first checkpoint the successor signs)."""
    return {e.previous: (e.key_id, int(e.record.get("from_checkpoint") or 1)) for e in history if e.previous}


def history_document(history: list[KeyRecord]) -> str:
    return json.dumps(
        {"format": "agent-receipts/keys/v1", "keys": [e.model_dump() for e in history]}, indent=1
    )


def parse_history(text: str) -> list[KeyRecord]:
    data = json.loads(text)
    return [KeyRecord.model_validate(e) for e in data.get("keys", [])]
