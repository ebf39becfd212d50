"""Personal-data fields sealed under their subject's key, and opened (or shown erased) on read.

Each (tenant, subject) has one random 32-byte secret (infra/subject_keys.py keeps them,
outside the event store). From it: an AES-GCM key for the fields and an HMAC key for
the content hashes. A field's ciphertext is bound, as associated data, to the event's
envelope (tenant, run, event id, type) and the field's path, so it cannot be moved to
another event or field and still open. Destroying the secret erases every field and
makes every keyed hash unguessable, while the stored bytes, and so the chain, stay
as they were.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.personal import (
    ERASED,
    KEYED_PREFIX,
    SEALED_PREFIX,
    PersonalData,
    erased_like,
    get_path,
    in_place_of,
    sealed_fields,
    set_path,
)
from domain.steps import StepEvent, step_adapter

# What a field reads as when its ciphertext does not authenticate (altered in the store).
UNREADABLE = "[unreadable: its ciphertext does not authenticate]"
_NONCE = 12


class SubjectKey:
    """One subject's secret and the two keys derived from it; `secret` None: erased."""

    __slots__ = ("_aead", "_hash_key", "secret")

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret
        self._aead = AESGCM(_derive(secret, b"receipts/fields")) if secret else None
        self._hash_key = _derive(secret, b"receipts/hashes") if secret else b""

    @property
    def erased(self) -> bool:
        return self.secret is None

    def seal(self, value: Any, aad: bytes) -> str:
        assert self._aead is not None, "an erased subject's fields are stored erased, not sealed"
        nonce = os.urandom(_NONCE)
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plain, aad)
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, aad: bytes) -> Any:
        """The value a token seals; raises InvalidTag (or ValueError) when it does not authenticate."""
        assert self._aead is not None
        raw = base64.urlsafe_b64decode(token[len(SEALED_PREFIX) :])
        return json.loads(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad))

    def keyed(self, content_hash: str) -> str:
        """The publisher's content hash keyed by the subject: equal hashes stay equal within
        a subject, and a short output can no longer be guessed from its hash."""
        if not self._hash_key:
            return ERASED
        return KEYED_PREFIX + hmac.new(self._hash_key, content_hash.encode(), hashlib.sha256).hexdigest()


ERASED_KEY = SubjectKey(None)


def _derive(secret: bytes | None, purpose: bytes) -> bytes:
    assert secret is not None
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def associated_data(step: StepEvent, path: str) -> bytes:
    return "\x1f".join((step.tenant, step.run_id, step.event_id, step.type, path)).encode()


def seal(spec: PersonalData, step: StepEvent, subject: str, key: SubjectKey) -> bytes | None:
    """What is stored for `step`: its JSON form naming `subject`, with each declared personal
    field replaced by its ciphertext (or, for an erased subject, by the erased marker) and
    each declared hash keyed. None when it carries none of them: stored as it arrived."""
    if not spec.holds_any(step.type):
        return None
    doc = step.model_dump(mode="json", exclude_none=True)
    data = doc["data"]
    changed = False
    for path in spec.fields.get(step.type, ()):
        value = get_path(data, path)
        if value in (None, "", {}, []):
            continue
        if key.erased:
            set_path(data, path, erased_like(value))
        else:
            set_path(data, path, in_place_of(value, key.seal(value, associated_data(step, path))))
        changed = True
    for path in spec.hashes.get(step.type, ()):
        value = get_path(data, path)
        if isinstance(value, str) and value and not value.startswith(KEYED_PREFIX):
            set_path(data, path, key.keyed(value))
            changed = True
    if not changed:
        return None
    doc["subject"] = subject  # whose key opens it, for every reader of the stored event
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def open_step(step: StepEvent, key: SubjectKey | None) -> StepEvent:
    """`step` as stored, with each sealed field opened, or shown erased when its subject's key
    is gone (None or erased), or shown unreadable when its ciphertext does not authenticate."""
    doc = step.model_dump(mode="json", exclude_none=True)
    data = doc["data"]
    found = list(sealed_fields(data))
    if not found:
        return step
    for path, token in found:
        stored = get_path(data, path)
        if key is None or key.erased:
            value = erased_like(stored)
        else:
            try:
                value = key.open(token, associated_data(step, path))
            except (InvalidTag, ValueError):
                value = _unreadable_like(stored)
        set_path(data, path, value)
    opened: StepEvent = step_adapter.validate_python(doc)
    return opened


def _unreadable_like(stored: Any) -> Any:
    if isinstance(stored, dict):
        return {"unreadable": UNREADABLE}
    if isinstance(stored, list):
        return [UNREADABLE]
    return UNREADABLE
