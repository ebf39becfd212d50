"""The webhook adapter: the reverse action POSTed to a target's API, Standard Webhooks style.

Headers: `webhook-id` (the reverse event id: the same on every retry and every
redelivery, so the receiver dedupes), `webhook-timestamp` (seconds, when sent) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by
the base64-decoded `whsec_` secret. A 5xx, a 429 or no answer in time is retried
with backoff; any other 4xx is a failure carrying the response body. An amend-style
target (a CRM note) finds the version to restore in `data.prior_version`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from domain.rollback import ReverseEvent
from infra.retry import Backoff
from infra.rollback.adapter import Failed, Outcome, Reverted
from infra.rollback.config import key_of

log = logging.getLogger(__name__)
MAX_BODY_SHOWN = 500


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def payload(reverse: ReverseEvent, kind: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """The body: the same bytes on every retry of one reverse event."""
    data = {**reverse.model_dump(mode="json"), **(extra or {})}
    document = {"type": kind, "timestamp": reverse.requested_at.isoformat(), "data": data}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class WebhookAdapter:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        first_delay: float = 0.2,
        max_delay: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key_of(secret)  # a bad secret fails here, not at the first delivery
        self.url, self.secret, self.timeout, self.attempts = url, secret, timeout, attempts
        self.first_delay, self.max_delay = first_delay, max_delay
        self.clock, self.sleep = clock, sleep

    def apply(self, reverse: ReverseEvent) -> Outcome:
        return self.deliver(reverse, f"rollback.{reverse.method}")

    def deliver(self, reverse: ReverseEvent, kind: str, extra: Mapping[str, Any] | None = None) -> Outcome:
        """POST one reverse action, retrying what may pass; the webhook id is the reverse id."""
        body = payload(reverse, kind, extra)
        backoff = Backoff(first=self.first_delay, cap=self.max_delay)
        last = ""
        for attempt in range(1, self.attempts + 1):
            answer = self._post(reverse.reverse_id, body)
            if isinstance(answer, Reverted) or not answer.retryable:
                return answer
            last = answer.error
            if attempt < self.attempts:
                wait = backoff.failed()
                log.warning("webhook for %s: %s; again in %.1fs", reverse.reverse_id, last, wait)
                self.sleep(wait)
        return Failed(f"{last} (after {self.attempts} attempts)", True)

    def _post(self, webhook_id: str, body: bytes) -> Reverted | Failed:
        timestamp = int(self.clock())
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(self.secret, webhook_id, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return Reverted(_reference(response.read()) or webhook_id, verified=True)
        except urllib.error.HTTPError as error:
            text = _shown(error.read())
            retryable = error.code >= 500 or error.code == 429
            return Failed(f"{self.url} answered {error.code}: {text}", retryable)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            return Failed(f"{self.url} did not answer: {reason}", True)


def _reference(body: bytes) -> str | None:
    """A target may name what it did (`{"ref": "note-7@v5"}`); the delivery id otherwise."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    ref = document.get("ref") if isinstance(document, dict) else None
    return ref if isinstance(ref, str) and ref and len(ref) <= 512 and "\x00" not in ref else None


def _shown(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip() or "(empty body)"
    return text if len(text) <= MAX_BODY_SHOWN else text[:MAX_BODY_SHOWN] + "…"
