"""Tokens and principals without a database: parsing, hashing, tenants, roles."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from domain.errors import Forbidden, Unauthorized
from domain.principals import (
    ADMIN,
    Principal,
    bearer_token,
    checked_token,
    same_digest,
    token_digest,
    valid_name,
)
from infra.principals import new_token, write_token_file

TOKEN = "rcpt_" + "A" * 43
ALICE = Principal(id="alice", tenant="acme", roles=frozenset({"sales-lead"}))


def test_a_new_token_is_one_of_ours_and_never_repeats() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(checked_token(t) == t for t in tokens)


def test_only_the_sha256_of_a_token_is_stored() -> None:
    token = new_token()
    digest = token_digest(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() and token not in digest
    assert same_digest(digest, token_digest(token)) and not same_digest(digest, token_digest(new_token()))


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "no token"),
        ("", "no token"),
        ("   ", "no token"),
        (f"Basic {TOKEN}", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer   ", "malformed Authorization header"),
        (f"Token {TOKEN}", "malformed Authorization header"),
        ("Bearer rcpt_short", "malformed token"),
        (f"Bearer {TOKEN}x", "malformed token"),
        (f"Bearer {TOKEN[:-1]}!", "malformed token"),
        (f"Bearer {TOKEN} {TOKEN}", "malformed token"),
        (f"Bearer {'B' * 48}", "malformed token"),
    ],
)
def test_a_header_without_a_well_formed_bearer_token_is_refused(header: str | None, says: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        bearer_token(header)
    assert says in refused.value.detail
    assert refused.value.status == 401 and refused.value.exit_code == 3
    assert refused.value.headers()["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  BEARER   {TOKEN}  "])
def test_the_scheme_is_case_insensitive_and_spaces_are_forgiven(header: str) -> None:
    assert bearer_token(header) == TOKEN


def test_a_token_file_with_a_trailing_newline_is_read_as_the_token() -> None:
    assert checked_token(TOKEN + "\n") == TOKEN
    with pytest.raises(Unauthorized, match="set RECEIPTS_TOKEN or run `receipts up` first"):
        checked_token("\n")


def test_a_principal_answers_in_its_own_tenant_and_refuses_to_name_another() -> None:
    assert ALICE.tenant_for(None) == "acme" and ALICE.tenant_for("acme") == "acme"
    refusals = []
    for other in ("default", "globex", "no-such-tenant"):
        with pytest.raises(Forbidden) as refused:
            ALICE.tenant_for(other)
        refusals.append(refused.value.detail)
    # The same sentence whatever is named: no hint which tenants exist.
    assert len(set(refusals)) == 1 and "acme" in refusals[0] and "globex" not in refusals[0]


def test_roles_are_required_by_name() -> None:
    ALICE.require("sales-lead")
    with pytest.raises(Forbidden, match="'admin' role"):
        ALICE.require(ADMIN)


@pytest.mark.parametrize(
    ("name", "ok"), [("alice@acme", True), ("ci-bot.1", True), ("a b", False), ("", False)]
)
def test_names_are_printable_without_spaces(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


def test_the_token_file_is_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "data" / "token"
    write_token_file(path, TOKEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == TOKEN + "\n"
    path.chmod(0o644)  # an older, wider file is replaced, not reused
    write_token_file(path, "rcpt_" + "B" * 43)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().startswith("rcpt_B")
