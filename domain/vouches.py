"""Who vouched for a recorded event: the publisher whose key signed the bytes it arrived as.

A signature travels beside a step (Kafka headers), never inside the value the chain
hashes, and is kept beside the stored step the same way (the row's header, not its
hashed bytes): adding or checking it changes no event's hash.
"""

from __future__ import annotations

from dataclasses import dataclass

# The service's own name as a publisher: decisions made through its API, its policy
# engine's decisions and its flags are signed by the service's key (infra/signing.py).
SERVICE_PUBLISHER = "service"
# Kafka header names a signed step carries.
PUBLISHER_HEADER = "receipts-publisher"
SIGNATURE_HEADER = "receipts-signature"
# What a signature covers is this prefix and the value: a step's signature can never be
# passed off as the signature of anything else the same key signs (a checkpoint). The value
# names its run and tenant already, so the Kafka key adds nothing to bind.
_CONTEXT = b"agent-receipts step v1\x00"


def signed_bytes(value: bytes) -> bytes:
    """The bytes a publisher signs for a step sent as `value`."""
    return _CONTEXT + value


@dataclass(frozen=True, slots=True)
class Vouch:
    """A publisher's good signature over the bytes an event arrived as; or, with no signature,
    the service itself as the writer of a step that never arrived (ingest's policy decisions
    and flags, written in the transaction that records the step they follow)."""

    publisher: str
    signature: bytes | None


# What ingest's own steps are vouched for by. They never travel, so there is nothing for a
# signature to hold against on the way; the signed checkpoint that covers them is what holds
# them outside the database, as it holds every event. Signing each one cost a quarter of the
# policy's share of ingest (Ed25519, ~38 µs a decision on this machine class).
WRITTEN_BY_SERVICE = Vouch(SERVICE_PUBLISHER, None)
