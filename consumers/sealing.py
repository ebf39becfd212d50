"""A poll batch's personal data: whose each step's is, and every key it needs, in one query.

Before chaining, each step that carries a declared personal field or hash gets its
subject (the envelope's, else the run's, else the record it names, else the run
itself) and the batch asks the key ring once for all of them; a subject erased before
is answered with no key, and its step is stored already erased. Steps without
personal data stay on the cheap path: their received bytes are what is stored and
chained. The chain of a sealed step runs over its sealed form, so it verifies without
the plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from domain.personal import PersonalData, fallback_subject, opens_subject, record_subject
from domain.run import RunHead
from domain.steps import StepEvent
from infra.rows import subject_fields
from infra.sealing import SubjectKey, seal

Subject = tuple[str, str]


class KeySource(Protocol):
    """infra.subject_keys.KeyRing: each subject's key, made if new, one query for a batch."""

    def keys_for(self, subjects: Iterable[Subject]) -> dict[Subject, SubjectKey]: ...


@dataclass
class BatchSeals:
    """Per step of a batch (same order): the subject its personal data is sealed under
    (None: nothing personal, the cheap path) and the run subject it settles (None: none)."""

    spec: PersonalData
    sealed_for: list[str | None] = field(default_factory=list)
    settles: list[str | None] = field(default_factory=list)
    keys: dict[Subject, SubjectKey] = field(default_factory=dict)

    @classmethod
    def plan(
        cls,
        spec: PersonalData,
        steps: Iterable[tuple[UUID, StepEvent]],
        heads: Mapping[UUID, RunHead],
        keys: KeySource,
    ) -> BatchSeals:
        seals = cls(spec)
        runs: dict[UUID, str] = {}
        wanted: set[Subject] = set()
        for run, step in steps:
            head = heads.get(run)
            if head is not None and head.version and not head.sealing:
                # Recorded before sealing began (its first row says nothing of it): as it was.
                seals.sealed_for.append(None)
                seals.settles.append(None)
                continue
            current = runs.get(run, head.subject if head else None)
            subject = step.subject or current or record_subject(step)
            settles = subject if current is None and subject is not None and opens_subject(step) else None
            if settles is not None:
                runs[run] = settles
            sealed_for = None
            if spec.carries(step):
                sealed_for = subject or fallback_subject(step)
                wanted.add((step.tenant, sealed_for))
            seals.sealed_for.append(sealed_for)
            seals.settles.append(settles)
        if wanted:
            seals.keys = keys.keys_for(wanted)
        return seals

    def stored(self, index: int, step: StepEvent, wire: bytes, head: RunHead) -> tuple[bytes, bytes]:
        """What to store and chain for the batch's `index`th step (about to be recorded on
        `head`), and its header's subject fields."""
        sealed_for = self.sealed_for[index]
        settles = self.settles[index]
        opens = head.version == 0
        if opens:
            head.sealing = True
        sealed = None
        if sealed_for is not None:
            sealed = seal(self.spec, step, sealed_for, self.keys[(step.tenant, sealed_for)], wire)
        if sealed is None:
            return wire, subject_fields(None, settles, opens)
        return sealed, subject_fields(sealed_for, settles, opens)

    def key_at(self, index: int, step: StepEvent) -> SubjectKey | None:
        sealed_for = self.sealed_for[index]
        return None if sealed_for is None else self.keys[(step.tenant, sealed_for)]

    def settle_head(self, index: int, head: RunHead) -> None:
        settles = self.settles[index]
        if settles is not None and head.subject is None:
            head.subject = settles
