"""Who is asking: a principal, its tenant and roles, and the token that names it.

Pure: no I/O. The table of principals is infra/principals.py; HTTP and the CLI
both turn a token into a `Principal` through it, then ask the principal which
tenant they may show (`tenant_for`) and whether it holds a role (`require`).

A token is `rcpt_` and 43 URL-safe characters (32 random bytes). Only its
SHA-256 is stored: a database dump names no usable token. Looking a principal up
by that digest leaks nothing through timing (nobody can choose a digest's
preimage), and the digest found is compared again in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pydantic import BaseModel, ConfigDict, Field

from domain.errors import Forbidden, Unauthorized

ADMIN = "admin"  # runs the service: principals, policy publish, the service-wide health report
TOKEN_PREFIX = "rcpt_"
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"  # ids, tenants and roles: printable, no spaces


class Principal(BaseModel):
    """A caller: HTTP or CLI, person or program. It sees its own tenant only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_NAME)
    tenant: str = Field(pattern=_NAME)
    roles: frozenset[str] = frozenset()

    def tenant_for(self, asked: str | None) -> str:
        """The tenant a question is answered in: always the principal's own. Naming
        another is refused the same way whatever it names (no hint that it exists)."""
        if asked is not None and asked != self.tenant:
            raise Forbidden(
                f"principal '{self.id}' sees tenant '{self.tenant}' only; "
                "leave the tenant out (the token decides it)"
            )
        return self.tenant

    def require(self, role: str) -> None:
        if role not in self.roles:
            raise Forbidden(f"principal '{self.id}' does not hold the '{role}' role this needs")


def valid_name(text: str) -> bool:
    return re.fullmatch(_NAME, text) is not None


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def checked_token(token: str) -> str:
    """The token, or Unauthorized when it cannot be one of ours (not worth a lookup)."""
    token = token.strip()
    if not token:
        raise Unauthorized("no token: set RECEIPTS_TOKEN or run `receipts up` first")
    if not _TOKEN.fullmatch(token):
        raise Unauthorized(f"malformed token: a token is {TOKEN_PREFIX} and 43 characters")
    return token


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer TOKEN` header (RFC 6750), or Unauthorized."""
    if authorization is None or not authorization.strip():
        raise Unauthorized("no token: send `Authorization: Bearer TOKEN`")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header: send `Authorization: Bearer TOKEN`")
    return checked_token(token)
