"""Who may write: each arriving step's signature checked against the registered publishers.

A step signed by a registered, live publisher of its tenant (or by the service) is
recorded with that publisher beside it. Any other step — unsigned where the tenant
has a registered publisher, signed badly, by an unknown or revoked publisher, or by
another tenant's — is what the policy's `[publishers]` says: recorded with a finding
on its run, or a dead letter (reason and original bytes kept). A tenant with no
registered publisher expects no signatures: its unsigned steps are recorded as before,
unless its policy dead-letters them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kafka.consumer.fetcher import ConsumerRecord

from domain.policy import Handling, PublisherRules
from domain.step_data import FlagCode
from domain.steps import StepEvent
from domain.vouches import PUBLISHER_HEADER, SIGNATURE_HEADER, Vouch
from infra.publishers import KnownKey

_SIGNATURE_LENGTH = 64  # Ed25519


class KeyLookup(Protocol):
    """What checking asks of the registered keys (infra.publishers.PublisherKeys)."""

    def find(self, name: str) -> KnownKey | None: ...
    def tenant_signs(self, tenant: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Unvouched:
    """Why no publisher vouches for a step: a finding's code and sentence, or a dead letter's."""

    code: FlagCode
    message: str


Checked = Vouch | Unvouched | None  # None: unsigned, in a tenant that asks for no signature


class SignatureCheck:
    def __init__(self, keys: KeyLookup) -> None:
        self.keys = keys

    def check(self, step: StepEvent, record: ConsumerRecord) -> Checked:
        name, signature = _signature(record.headers)
        what = f"{step.type} {step.event_id}"
        if name is None and signature is None:
            if not self.keys.tenant_signs(step.tenant):
                return None
            return Unvouched(
                "unsigned_event",
                f"{what} arrived unsigned, in tenant {step.tenant!r} whose publishers sign what they send: "
                "no registered publisher vouches for it",
            )
        if not name or signature is None:
            return Unvouched(
                "bad_signature", f"{what} arrived with half a signature (publisher or signature missing)"
            )
        known = self.keys.find(name)
        if known is None:
            return Unvouched(
                "bad_signature", f"{what} is signed as publisher {name!r}, which is not registered"
            )
        if known.revoked_at is not None:
            return Unvouched(
                "bad_signature",
                f"{what} is signed by publisher {name!r}, "
                f"whose key was revoked at {known.revoked_at.isoformat()}",
            )
        if len(signature) != _SIGNATURE_LENGTH or not known.verifies(signature, record.value):
            return Unvouched(
                "bad_signature",
                f"{what} carries a signature of publisher {name!r} "
                "that does not match the bytes it arrived as",
            )
        if known.tenant is not None and known.tenant != step.tenant:
            return Unvouched(
                "publisher_not_for_tenant",
                f"{what} is signed by publisher {name!r} of tenant {known.tenant!r}, "
                f"but is for tenant {step.tenant!r}",
            )
        return Vouch(name, signature)


def handling(rules: PublisherRules, tenant: str, problem: Unvouched) -> Handling:
    """What the tenant's policy does with a step no publisher vouches for."""
    for_tenant = rules.for_tenant(tenant)
    return for_tenant.unsigned if problem.code == "unsigned_event" else for_tenant.bad_signature


def unsigned_refused(rules: PublisherRules, tenant: str) -> bool:
    """A tenant that expects no signatures may still refuse unsigned steps outright."""
    return rules.for_tenant(tenant).unsigned == "dead_letter"


def _signature(headers: list[tuple[str, bytes]] | None) -> tuple[str | None, bytes | None]:
    name: str | None = None
    signature: bytes | None = None
    for key, value in headers or ():
        if key == PUBLISHER_HEADER:
            name = value.decode("utf-8", "replace") if value else ""
        elif key == SIGNATURE_HEADER:
            signature = value or b""
    return name, signature
