"""The adapters a rollback file configures, by target system (the composition root's part)."""

from __future__ import annotations

from infra.rollback.adapter import Adapter
from infra.rollback.config import CorrectionTarget, GitTarget, RollbackConfig, WebhookTarget
from infra.rollback.correction import CorrectionAdapter
from infra.rollback.git import GitAdapter
from infra.rollback.webhook import WebhookAdapter


def build_adapters(config: RollbackConfig) -> dict[str, Adapter]:
    webhooks = {
        name: WebhookAdapter(t.url, t.secret, timeout=t.timeout_seconds, attempts=t.attempts)
        for name, t in config.targets.items()
        if isinstance(t, WebhookTarget)
    }
    adapters: dict[str, Adapter] = dict(webhooks)
    for name, target in config.targets.items():
        if isinstance(target, GitTarget):
            adapters[name] = GitAdapter(target.repository, push=target.push, author=target.author)
        elif isinstance(target, CorrectionTarget):
            adapters[name] = CorrectionAdapter(webhooks[target.notify])
    return adapters
