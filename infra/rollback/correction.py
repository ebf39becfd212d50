"""The correction adapter: what cannot be undone (a sent email) is corrected.

It tells the owner through a webhook target (the same Standard Webhooks delivery,
`type` `rollback.corrected`, with the correction text) and answers `Corrected`, so
the rollback consumer records `record.corrected`: the step's state becomes
`corrected`, never `reverted`, and the original stays in the record.
"""

from __future__ import annotations

from domain.rollback import ReverseEvent
from infra.rollback.adapter import Corrected, Failed, Outcome
from infra.rollback.webhook import WebhookAdapter


def correction_text(reverse: ReverseEvent) -> str:
    """What the record and the owner are told: what was done, that it stands, and why it was wrong."""
    done = f"{reverse.verb} to {reverse.target.key}"
    if reverse.external_ref:
        done += f" ({reverse.external_ref})"
    text = f"{done} cannot be undone and is corrected: {reverse.reason}"
    return f"{text}. Follow-up: {reverse.runbook}" if reverse.runbook else text


class CorrectionAdapter:
    def __init__(self, notify: WebhookAdapter) -> None:
        self.notify = notify

    def apply(self, reverse: ReverseEvent) -> Outcome:
        correction = correction_text(reverse)
        told = self.notify.deliver(reverse, "rollback.corrected", {"correction": correction})
        if isinstance(told, Failed):
            return Failed(f"the owner was not told of the correction: {told.error}", told.retryable)
        return Corrected(correction, notified_ref=getattr(told, "reverse_ref", None))
