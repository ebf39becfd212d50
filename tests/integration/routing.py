"""Shared by the integration tests that route steps by a policy of their own: the policy
whose order-support contract accepts a customer's consent and whose crm-notes contract
does not, and settings that route by a policy's text."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings

CONSENT_POLICY = """
[contracts.order-support]
accepts_consent = true

[contracts.crm-notes]

[default]
lane = "review"
role = "support-lead"
reason = "a person reviews every write"
"""


def routed_by(settings: Settings, tmp_path: Path, policy: str) -> Settings:
    """`settings` whose ingest routes by `policy` (TOML), kept in the test's own directory."""
    path = tmp_path / "policy.toml"
    path.write_text(policy, encoding="utf-8")
    return settings.model_copy(update={"policy": path})
