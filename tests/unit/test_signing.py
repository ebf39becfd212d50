"""The service's signing key: created once (0600), loaded, signing and verifying."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.signing import BadKey, PublicKey, SigningKey, ensure_signing_key, key_id_of


def test_created_once_with_mode_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "data" / "signing.key"
    key, created = ensure_signing_key(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_signing_key(path)
    assert not created_again
    assert again.public == key.public and again.key_id == key.key_id


def test_signature_verifies_with_the_public_text_and_not_after_one_byte(tmp_path: Path) -> None:
    key = SigningKey.generate()
    signature = key.sign(b"checkpoint 7")
    public = PublicKey.parse(key.public.text)
    assert public.key_id == key.key_id == key_id_of(public.raw)
    assert public.verifies(signature, b"checkpoint 7")
    assert not public.verifies(signature, b"checkpoint 8")
    assert not SigningKey.generate().public.verifies(signature, b"checkpoint 7")


def test_a_pem_public_key_parses_to_the_same_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = SigningKey.generate()
    pem = Ed25519PublicKey.from_public_bytes(key.public.raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert PublicKey.parse(pem.decode()).key_id == key.key_id


@pytest.mark.parametrize(
    ("text", "says"),
    [("ed25519:!!", "is not"), ("ed25519:AAAA", "32 bytes"), ("-----BEGIN PUBLIC KEY-----\nx", "PEM")],
)
def test_bad_public_key_text_is_named(text: str, says: str) -> None:
    with pytest.raises(BadKey, match=says):
        PublicKey.parse(text)


def test_missing_or_foreign_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadKey, match="RECEIPTS_SIGNING_KEY"):
        SigningKey.load(tmp_path / "absent.key")
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(BadKey, match="not an unencrypted PEM"):
        SigningKey.load(junk)


def test_up_creates_the_embedded_key_once_and_prints_its_public_half(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.up import _signing_key
    from infra.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    _signing_key(settings)
    key = SigningKey.load(tmp_path / "data" / "signing.key")
    first = capsys.readouterr().out
    assert f"Signing key {key.key_id} (created " in first and key.public.text in first
    _signing_key(settings)
    assert "created" not in capsys.readouterr().out
    with pytest.raises(BadKey, match="no signing key"):  # a configured key must exist: none is made
        _signing_key(Settings(data_dir=tmp_path, signing_key=tmp_path / "absent.key"))
