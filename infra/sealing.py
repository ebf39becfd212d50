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
import hmac
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import to_json

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
from schemas import encode_json

# What a field reads as when its ciphertext does not authenticate (altered in the store).
UNREADABLE = "[unreadable: its ciphertext does not authenticate]"
_NONCE = 12
_SEALED_PREFIX = SEALED_PREFIX.encode()


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

    def seal_json(self, plain: bytes, aad: bytes) -> bytes:
        """The token for a value already written as JSON (`plain`), as ASCII bytes."""
        assert self._aead is not None, "an erased subject's fields are stored erased, not sealed"
        nonce = _nonce()
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, aad))

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
        return KEYED_PREFIX + hmac.digest(self._hash_key, content_hash.encode(), "sha256").hex()


ERASED_KEY = SubjectKey(None)


def _derive(secret: bytes | None, purpose: bytes) -> bytes:
    assert secret is not None
    return hmac.digest(secret, purpose, "sha256")


class _Nonces:
    """Random 96-bit nonces, drawn from the OS in blocks (one syscall per field costs more than
    the encryption); a lock, as the service's API threads seal too."""

    def __init__(self, block: int = 4096) -> None:
        self.block = block
        self.pool = b""
        self.at = 0
        self.lock = threading.Lock()

    def __call__(self) -> bytes:
        with self.lock:
            if self.at + _NONCE > len(self.pool):
                self.pool, self.at = os.urandom(_NONCE * self.block), 0
            nonce = self.pool[self.at : self.at + _NONCE]
            self.at += _NONCE
            return nonce


_nonce = _Nonces()


def associated_data(step: StepEvent, path: str) -> bytes:
    return _aad_prefix(step) + path.encode()


def _aad_prefix(step: StepEvent) -> bytes:
    return "\x1f".join((step.tenant, step.run_id, step.event_id, step.type, "")).encode()


# One field's change: (path, value stored, the sent value's JSON, the stored value's JSON):
# what the swap in place looks for (None: not swappable) and what it writes.
_Update = tuple[str, Any, bytes | None, bytes]


def seal(
    spec: PersonalData, step: StepEvent, subject: str, key: SubjectKey, wire: bytes | None = None
) -> bytes | None:
    """What is stored for `step`: its JSON form naming `subject`, with each declared personal
    field replaced by its ciphertext (or, for an erased subject, by the erased marker) and
    each declared hash keyed. None when it carries none of them: stored as it arrived.

    On the ingest path each value is written as JSON once: that is what is encrypted, what
    is looked for in the received JSON, and the ciphertext's JSON is what replaces it (a
    Python json round trip, or copying the step's models, costs several times more)."""
    readers = spec.readers.get(step.type)
    if readers is None or spec.public(step):
        return None
    fields, hashes = readers
    data = step.data  # type: ignore[attr-defined]
    updates: list[_Update] = []
    aad = None
    for path, get in fields:
        value = get(data)
        if not value:
            continue
        plain = to_json(value)
        if key.erased:
            stored = erased_like(value)
            stored_json = to_json(stored)
        else:
            aad = aad or _aad_prefix(step)
            token = key.seal_json(plain, aad + path.encode())
            stored = in_place_of(value, token.decode())
            stored_json = b'"' + token + b'"' if isinstance(value, str) else to_json(stored)
        # A string, or an object (params): its JSON holds quotes, which a string escapes, so a
        # match cannot fall inside another field's text. A bare list could: written anew.
        swappable = isinstance(value, str) or (isinstance(value, Mapping) and bool(value))
        updates.append((path, stored, plain if swappable else None, stored_json))
    for path, get in hashes:
        value = get(data)
        if isinstance(value, str) and value and not value.startswith(KEYED_PREFIX):
            keyed = key.keyed(value)
            updates.append((path, keyed, to_json(value), b'"' + keyed.encode() + b'"'))
    if not updates:
        return None
    if wire is not None:
        # A step that arrived as Avro is stored as JSON: pydantic writes that form, and the
        # fields are swapped in it as in a JSON wire.
        written = wire if wire[:1] == b"{" else encode_json(step)
        if edited := _edited_in_place(written, updates, subject, step.subject):
            return edited
    doc = step.model_dump(mode="json", exclude_none=True)
    for path, stored, _, _ in updates:
        set_path(doc["data"], path, stored)
    # The stored event names whose key opens it, for every reader of the stored event.
    doc["subject"] = subject
    return to_json(doc)


def _edited_in_place(wire: bytes, updates: list[_Update], subject: str, named: str | None) -> bytes | None:
    """The JSON `wire` with each replaced value swapped in place, or None (the caller then
    writes the step out anew). Most steps take this path: it costs a search per field, not
    a serialisation. Only a value whose encoding occurs exactly once is swapped: as a JSON
    string, quotes and all, it can only be that field. A wire with `\\u` or `\\/` escapes
    may spell one string two ways (a field escaped, another not): it is written anew, so
    no field can be missed. The envelope's `subject` is added in front unless the publisher
    named it (`named`); a wire that may say `"subject": null` is written anew, so the
    stored step never holds the key twice."""
    if b"\\u" in wire or b"\\/" in wire or (named is not None and named != subject):
        return None
    for _, _, found, replacement in updates:
        if found is None:
            return None
        at = wire.find(found)
        # A second occurrence cannot overlap the first: after a JSON string or object's
        # closing character comes ':', ',', '}', ']' or space, never its opening one.
        if at < 0 or wire.find(found, at + len(found)) >= 0:
            return None
        wire = wire[:at] + replacement + wire[at + len(found) :]
    if named is not None:
        return wire
    if b'"subject"' in wire and _NULL_SUBJECT.search(wire):
        return None
    return b'{"subject":' + to_json(subject) + b"," + wire[1:]


_NULL_SUBJECT = re.compile(rb'"subject"\s*:\s*null')


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
