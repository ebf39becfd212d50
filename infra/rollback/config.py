"""`RECEIPTS_ROLLBACK=FILE`: which adapter undoes steps on which target system.

    [targets.github]          # website updates: a clone the service may commit to
    adapter = "git"
    repository = "/srv/site"
    [targets.hubspot]         # CRM notes and fields
    adapter = "webhook"
    url = "https://crm.internal/agent-undo"
    secret = "whsec_..."
    [targets.gmail]           # sent email cannot be unsent
    adapter = "correction"
    notify = "hubspot"        # the webhook target that tells the owner

A file that cannot be used is refused whole, with the line and field to fix
(as a policy is: domain.policy.locate finds the line).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.errors import ReceiptsError
from domain.policy import DocumentError, locate, parse_toml

SECRET_PREFIX = "whsec_"


class _Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GitTarget(_Target):
    adapter: Literal["git"]
    # A clone the service may commit to; reverts are committed on its checked-out branch.
    repository: Path
    # A remote to push the revert to (never forced); none: the commit stays local.
    push: str | None = None
    author: str = "Agent Receipts <receipts@localhost>"

    @field_validator("repository")
    @classmethod
    def _a_repository(cls, path: Path) -> Path:
        if not (path / ".git").exists():
            raise ValueError(f"{path} is not a git repository (no .git in it)")
        return path

    @field_validator("author")
    @classmethod
    def _an_author(cls, author: str) -> str:
        if not re.fullmatch(r"[^<>]+ <[^<>]+>", author):
            raise ValueError("author must read 'Name <email>'")
        return author


class WebhookTarget(_Target):
    adapter: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    # Standard Webhooks: "whsec_" and the base64 of the key.
    secret: str
    timeout_seconds: float = Field(default=10.0, gt=0)
    attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("secret")
    @classmethod
    def _a_secret(cls, secret: str) -> str:
        key_of(secret)
        return secret


class CorrectionTarget(_Target):
    adapter: Literal["correction"]
    # The webhook target (its name in this file) that tells the owner.
    notify: str


Target = Annotated[GitTarget | WebhookTarget | CorrectionTarget, Field(discriminator="adapter")]


class RollbackConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    targets: dict[str, Target] = {}

    @model_validator(mode="after")
    def _notify_names_a_webhook(self) -> RollbackConfig:
        for name, target in self.targets.items():
            if isinstance(target, CorrectionTarget) and not isinstance(
                self.targets.get(target.notify), WebhookTarget
            ):
                raise NotifyNotAWebhook(name, target.notify)
        return self


class NotifyNotAWebhook(ValueError):
    def __init__(self, target: str, notify: str) -> None:
        self.target = target
        super().__init__(f"notify names {notify!r}, which is not a webhook target in this file")


def key_of(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts {SECRET_PREFIX!r} (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"after {SECRET_PREFIX!r} a webhook secret is base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret's key is at least 16 bytes (24 recommended)")
    return key


class RollbackConfigError(ReceiptsError, DocumentError):
    """A rollback file that cannot be used, with the line (None: not known) and field to fix."""

    title = "Invalid rollback configuration"


def load_rollback_config(text: str) -> RollbackConfig:
    """The validated configuration in `text` (TOML), or a RollbackConfigError."""
    raw = parse_toml(text, RollbackConfigError)
    try:
        return RollbackConfig.model_validate(raw)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        loc: tuple[str | int, ...] = tuple(problem["loc"])
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, NotifyNotAWebhook):
            loc = ("targets", cause.target, "notify")
        elif len(loc) > 3 and loc[0] == "targets":
            loc = (*loc[:2], *loc[3:])  # drop the union branch pydantic names (targets.x.git.repository)
        message = str(cause if cause is not None else problem["msg"])
        field = ".".join(str(p) for p in loc) or "(document)"
        raise RollbackConfigError(locate(text, loc), field, message) from None


def read_rollback_config(path: Path) -> RollbackConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RollbackConfigError(None, "", f"cannot read {path}: {error.strerror}") from None
    try:
        return load_rollback_config(text)
    except RollbackConfigError as error:
        raise RollbackConfigError(error.line, error.field, f"{error.message} (in {path})") from None
