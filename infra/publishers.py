"""The publishers who may write, kept in PostgreSQL: `receipts_publishers`.

A row is an agent platform's Ed25519 public key, registered for one tenant: the
events it signs are vouched for in that tenant only. Revoking keeps the row (a
receipt still names who vouched for what was recorded before), its name is never
given to another key, and from then on its signature is refused as not holding.
The private key never reaches the service: a platform makes its pair with
`receipts publisher keygen` (or openssl) and registers the public half.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from domain.errors import Conflict, Invalid, NotFound
from domain.principals import valid_name
from domain.vouches import PUBLISHER_HEADER, SERVICE_PUBLISHER, SIGNATURE_HEADER, Vouch, signed_bytes
from infra.signing import BadKey, PublicKey, SigningKey

log = logging.getLogger(__name__)
TABLE = "receipts_publishers"


@dataclass(frozen=True, slots=True)
class PublisherRecord:
    """A registered publisher as the table keeps it."""

    name: str
    tenant: str
    public_key: PublicKey
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class PublisherExists(Conflict):
    title = "Publisher exists"


class NoSuchPublisher(NotFound):
    title = "No such publisher"


class PublisherTable:
    def __init__(self, schema: str) -> None:
        self.table = SQL("{}.{}").format(Identifier(schema), Identifier(TABLE))

    def create_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, tenant text NOT NULL, "
            "public_key bytea NOT NULL, created_at timestamptz NOT NULL, created_by text NOT NULL, "
            "revoked_at timestamptz)"
        ).format(self.table)

    def add(self, curs: psycopg.Cursor[Any], name: str, tenant: str, key: PublicKey, by: str) -> None:
        curs.execute(
            SQL(
                "INSERT INTO {} (name, tenant, public_key, created_at, created_by) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING"
            ).format(self.table),
            (name, tenant, key.raw, datetime.now(UTC), by),
        )
        if curs.rowcount != 1:
            raise PublisherExists(
                f"publisher '{name}' exists (or existed: a revoked name is not given to another key); "
                "choose another name"
            )

    def revoke(self, curs: psycopg.Cursor[Any], name: str) -> bool:
        """Revoke it; False when it was revoked already."""
        curs.execute(
            SQL("UPDATE {} SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL").format(self.table),
            (datetime.now(UTC), name),
        )
        if curs.rowcount == 1:
            return True
        curs.execute(SQL("SELECT 1 FROM {} WHERE name = %s").format(self.table), (name,))
        if curs.fetchone() is None:
            raise NoSuchPublisher(f"no publisher '{name}'")
        return False

    def records(self, curs: psycopg.Cursor[Any]) -> list[PublisherRecord]:
        curs.execute(SQL("SELECT * FROM {} ORDER BY tenant, name").format(self.table))
        return [
            PublisherRecord(
                name=row["name"],
                tenant=row["tenant"],
                public_key=PublicKey(bytes(row["public_key"])),
                created_at=row["created_at"],
                created_by=row["created_by"],
                revoked_at=row["revoked_at"],
            )
            for row in curs.fetchall()
        ]


class Publishers:
    """The table over the store's connection pool: one short transaction a call."""

    def __init__(self, datastore: PostgresDatastore, schema: str) -> None:
        self.datastore = datastore
        self.table = PublisherTable(schema)

    def add(self, name: str, tenant: str, key: PublicKey, by: str) -> None:
        for field, value in (("name", name), ("tenant", tenant)):
            if not valid_name(value):
                raise Invalid(field, f"'{value}' is not a name: letters, digits and ._:@- only, no spaces")
        if name == SERVICE_PUBLISHER:
            raise Invalid("name", f"'{SERVICE_PUBLISHER}' is the service's own name: choose another")
        with self.datastore.transaction(commit=True) as curs:
            self.table.add(curs, name, tenant, key, by)

    def revoke(self, name: str) -> bool:
        with self.datastore.transaction(commit=True) as curs:
            return self.table.revoke(curs, name)

    def records(self) -> list[PublisherRecord]:
        with self.datastore.transaction(commit=False) as curs:
            return self.table.records(curs)


@dataclass(frozen=True, slots=True)
class KnownKey:
    """A publisher's keys as ingest checks signatures with them: one for a platform; for the
    service, each key it has signed with since ingest started (a rotation replaces the key
    file while steps signed by the old key are still on the topic)."""

    name: str
    tenant: str | None  # None: every tenant (the service)
    keys: tuple[Ed25519PublicKey, ...]
    revoked_at: datetime | None

    def verifies(self, signature: bytes, value: bytes) -> bool:
        message = signed_bytes(value)
        for key in self.keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False


class PublisherKeys:
    """The registered keys, cached: ingest checks tens of thousands of signatures a second
    and must not ask the database for each. Reloaded every `refresh_every` seconds, and at
    once (at most every `miss_every`) when a signature names a publisher it does not know,
    so a platform registered a moment ago is recognised without waiting; a revocation takes
    effect within `refresh_every`. The service's key (`service`: read from its file at each
    reload) is kept with every one seen before it."""

    def __init__(
        self,
        load: Callable[[], list[PublisherRecord]],
        service: Callable[[], PublicKey | None] = lambda: None,
        refresh_every: float = 5.0,
        miss_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self.refresh_every, self.miss_every, self._clock = load, refresh_every, miss_every, clock
        self._service_key = service
        self._service: dict[bytes, Ed25519PublicKey] = {}
        self._keys: dict[str, KnownKey] = {}
        self._signing: frozenset[str] = frozenset()
        self._loaded_at: float | None = None

    def refresh(self) -> None:
        records = self._load()
        service = self._service_key()
        self._loaded_at = self._clock()
        keys = {
            r.name: KnownKey(
                r.name, r.tenant, (Ed25519PublicKey.from_public_bytes(r.public_key.raw),), r.revoked_at
            )
            for r in records
        }
        if service is not None and service.raw not in self._service:
            self._service[service.raw] = Ed25519PublicKey.from_public_bytes(service.raw)
        if self._service:
            # The newest first: it signs nearly everything the service sends from now on.
            keys[SERVICE_PUBLISHER] = KnownKey(
                SERVICE_PUBLISHER, None, tuple(reversed(self._service.values())), None
            )
        self._keys = keys
        self._signing = frozenset(r.tenant for r in records if r.revoked_at is None)

    def _fresh(self, within: float) -> None:
        if self._loaded_at is None or self._clock() - self._loaded_at >= within:
            self.refresh()

    def find(self, name: str) -> KnownKey | None:
        self._fresh(self.refresh_every)
        found = self._keys.get(name)
        if found is None:
            self._fresh(self.miss_every)
            found = self._keys.get(name)
        return found

    def tenant_signs(self, tenant: str) -> bool:
        """Whether the tenant has a live registered publisher: then it expects signed events."""
        self._fresh(self.refresh_every)
        return tenant in self._signing


@dataclass(frozen=True, slots=True)
class Signer:
    """A publisher's name and private key: what the publisher library signs each event with.
    The signature goes in Kafka headers beside the value, never inside it."""

    name: str
    key: SigningKey

    def sign(self, value: bytes) -> bytes:
        return self.key.sign(signed_bytes(value))

    def vouch(self, value: bytes) -> Vouch:
        return Vouch(self.name, self.sign(value))

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        return [(PUBLISHER_HEADER, self.name.encode()), (SIGNATURE_HEADER, self.sign(value))]

    @classmethod
    def load(cls, name: str, path: Path) -> Signer:
        return cls(name, SigningKey.load(path))


def service_public_key(key_file: Path) -> PublicKey | None:
    """The public half of the service's key file as it is now (None without a readable one:
    the keys seen before still verify, and ingest goes on)."""
    signer = service_signer(key_file)
    return signer.key.public if signer else None


def service_signer(key_file: Path) -> Signer | None:
    """The service as a publisher, with its key from where `receipts up` (or RECEIPTS_SIGNING_KEY)
    put it; None without a readable one: the service's own steps then go unsigned, as before
    keys existed, and a reader's command never fails for a key it does not need."""
    if not key_file.exists():
        return None
    try:
        return Signer(SERVICE_PUBLISHER, SigningKey.load(key_file))
    except (BadKey, OSError) as error:
        log.error("the service's key file %s cannot be read (%s): its steps are not signed", key_file, error)
        return None
