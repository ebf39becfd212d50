"""The service's Ed25519 signing key: what signs its checkpoints (and anything else
the service vouches for).

The private key lives in a file (RECEIPTS_SIGNING_KEY; embedded default: `signing.key`
in the data dir), never in the database, PEM PKCS#8 so `openssl pkey` reads it. Its
public half travels as text, `ed25519:` + base64 of the 32 raw bytes, and is named by
a key id: the first 16 hex digits of SHA-256 over those bytes, so a verifier can pick
the right public key from a key history without trusting any label.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.errors import ReceiptsError

PUBLIC_PREFIX = "ed25519:"


class BadKey(ReceiptsError, ValueError):
    """A key file or public key text that is not an Ed25519 key."""

    status = 422
    title = "Bad signing key"


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key and its key id (a fingerprint of it)."""

    raw: bytes

    @property
    def text(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """`ed25519:BASE64` (or the bare base64, or a PEM public key, as openssl writes it)."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            try:
                loaded = serialization.load_pem_public_key(text.encode())
            except ValueError as error:
                raise BadKey(f"not a PEM public key: {error}") from None
            if not isinstance(loaded, Ed25519PublicKey):
                raise BadKey("the PEM public key is not an Ed25519 key")
            return cls(loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        body = text.removeprefix(PUBLIC_PREFIX)
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise BadKey(f"public key {text[:40]!r} is not {PUBLIC_PREFIX}BASE64") from None
        if len(raw) != 32:
            raise BadKey(f"an Ed25519 public key is 32 bytes; {text[:40]!r} holds {len(raw)}")
        return cls(raw)


def key_id_of(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


class SigningKey:
    """The private key: signs bytes; names its public half."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = PublicKey(
            private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadKey(
                f"no signing key at {path}: set RECEIPTS_SIGNING_KEY to an Ed25519 key file "
                "(PEM PKCS#8, e.g. `openssl genpkey -algorithm ed25519`), or let `receipts up` create one"
            ) from None
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise BadKey(f"{path} is not an unencrypted PEM private key: {error}") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise BadKey(f"{path} holds a {type(loaded).__name__}, not an Ed25519 key")
        return cls(loaded)

    def write(self, path: Path) -> None:
        """Write the key to `path` (mode 0600), replacing it atomically: a reader sees
        the old key or the new one, never half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".new")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.pem())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)


def ensure_signing_key(path: Path) -> tuple[SigningKey, bool]:
    """The key in `path`, created (0600) when there is none; and whether it was created."""
    if path.exists():
        return SigningKey.load(path), False
    key = SigningKey.generate()
    key.write(path)
    return key, True
