"""Rollback tooling: the adapters that undo a reverse event at its target system.

One interface (`Adapter`), three kinds of target (git, webhook, correction),
configured in `RECEIPTS_ROLLBACK=FILE` (TOML keyed by the target system as steps
name it). The rollback consumer (consumers/rollback.py) chooses the adapter by
the reverse event's target system and records what it returns.
"""

from infra.rollback.adapter import Adapter, Corrected, Failed, Outcome, Reverted

__all__ = ["Adapter", "Corrected", "Failed", "Outcome", "Reverted"]
