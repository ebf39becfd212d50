"""The stored log checked against signed checkpoints: one pass in log order.

`LogAudit` is fed the events table's rows (position, run, version, stored bytes)
in position order — every row (`verify --all`) or one run's — and the
checkpoints whose signatures and chain already checked out. It recomputes each
run's hash chain as the rows pass, and at each checkpoint's last position
compares what the store holds with what the service signed then: the range's
Merkle root, event count and leaf sum, the heads of the runs it touched, and the
set hash of every head. At the end it names what differs, run by run:

- `edited_event`: a row's bytes no longer hash to its recorded digest;
- `reordered_events`: a row holds the event the chain puts at another version,
  or a version is stored after a later one; `log_reordered`: the range holds the
  same events as signed, in another order;
- `deleted_event` / `deleted_events`: versions missing inside a run (consecutive
  ones are named as one gap);
- `truncated_tail`: the run's chain verifies but ends before the version signed;
- `rewritten_run`: the chain verifies but its head is not the one signed (every
  hash was recomputed);
- `deleted_run`: a run the checkpoints anchored has no event left;
- `inserted_event`: an event in a signed range that the checkpoint did not count;
- `log_differs` / `heads_differ`: what no single run explains.

Rows past the last checkpoint (or in a range no valid checkpoint covers) are
counted as not yet anchored, never as verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from pydantic import BaseModel

from domain.chain import GENESIS, link
from domain.checkpoint import Checkpoint, Finding, parse_head
from domain.merkle import event_leaf, head_leaf, root, set_add, set_hex, set_remove
from infra.rows import header_digest, read_step_state

StoredRow = tuple[int, UUID, int, bytes]


@dataclass(slots=True)
class _Pending:
    version: int
    before: bytes  # the chain digest before it
    own: bytes  # its stored digest
    event_id: str | None


@dataclass(slots=True)
class _Track:
    """One run's chain as its rows pass."""

    version: int = 0
    prev: bytes = GENESIS
    head: bytes = GENESIS  # the stored digest of its highest version
    # Made only for a run that needs them: `verify --all` holds one track per run.
    missing: dict[int, int] | None = None  # version -> position where the gap showed
    pending: _Pending | None = None
    findings: list[Finding] | None = None

    def note(self, finding: Finding) -> None:
        if self.findings is None:
            self.findings = []
        self.findings.append(finding)

    def gap(self, version: int, position: int) -> None:
        if self.missing is None:
            self.missing = {}
        self.missing[version] = position


@dataclass(slots=True)
class _Mismatch:
    checkpoint: int
    version: int
    digest: bytes
    found: tuple[int, bytes] | None


class AuditReport(BaseModel):
    events: int
    anchored: int
    not_anchored: int
    runs: int
    checkpoints: int
    last_anchored_position: int | None
    findings: list[Finding]

    @property
    def verified(self) -> bool:
        return not self.findings


class LogAudit:
    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        only: UUID | None = None,
        names: dict[UUID, str] | None = None,
    ) -> None:
        self.checkpoints = sorted(checkpoints, key=lambda c: c.seq)
        self.only = only  # one run: only its chain and heads are checked
        # tenant/run_id by store id, for findings; a run unnamed here is named by its id
        self.names = names or {}
        self.tracks: dict[UUID, _Track] = {}
        self.findings: list[Finding] = []
        self._next = 0
        self._leaves: list[bytes] = []
        self._sum = 0
        self._touched: set[UUID] = set()
        self._closed_heads: dict[UUID, tuple[int, bytes]] = {}
        self._heads_sum = 0
        self._heads_reported = False
        self._anchored: dict[UUID, tuple[int, bytes, int]] = {}
        self._mismatches: dict[UUID, list[_Mismatch]] = {}
        self.events = 0
        self.not_anchored = 0

    # --- the pass ----------------------------------------------------------------------

    def feed(self, rows: Iterable[StoredRow]) -> None:
        checkpoints = self.checkpoints
        for position, run, version, state in rows:
            while self._next < len(checkpoints) and position > checkpoints[self._next].last:
                self._close(checkpoints[self._next])
                self._next += 1
            self.events += 1
            covered = self._next < len(checkpoints) and checkpoints[self._next].first <= position
            if not covered:
                self.not_anchored += 1
            digest = header_digest(state)
            if self.only is None:
                leaf = event_leaf(run, version, digest or hashlib.sha256(state).digest())
                if covered:
                    self._leaves.append(leaf)
                    self._sum = set_add(self._sum, leaf)
                self._touched.add(run)
            self._follow(position, run, version, state, digest)

    def _follow(self, position: int, run: UUID, version: int, state: bytes, digest: bytes | None) -> None:
        track = self.tracks.get(run)
        if track is None:
            track = self.tracks[run] = _Track()
        if digest is None:
            track.note(Finding(kind="edited_event", version=version, detail="the stored row no longer reads"))
            digest = hashlib.sha256(state).digest()
        elif version == track.version + 1:
            wire = state[state.index(b"\n") + 1 :]
            if link(track.prev, wire) != digest:
                digest = self._broken(track, version, wire, digest, state)
        elif version > track.version + 1:  # the chain cannot be checked across a gap
            for gone in range(track.version + 1, version):
                track.gap(gone, position)
        elif track.missing and version in track.missing:
            del track.missing[version]
            track.note(
                Finding(
                    kind="reordered_events",
                    version=version,
                    detail=f"version {version} is stored after version {track.version} in the log",
                )
            )
            return
        else:
            track.note(
                Finding(
                    kind="inserted_event",
                    version=version,
                    detail=f"version {version} is stored twice (again at log position {position})",
                )
            )
            return
        track.version, track.prev, track.head = version, digest, digest

    def _broken(self, track: _Track, version: int, wire: bytes, digest: bytes, state: bytes) -> bytes:
        """Name a link that does not match; returns the digest the chain goes on from."""
        pending = track.pending
        if pending is not None and link(pending.before, wire) == digest:
            track.note(
                Finding(
                    kind="reordered_events",
                    version=pending.version,
                    detail=f"version {version} holds the event the chain puts at version "
                    f"{pending.version}, and version {pending.version} another: events were reordered",
                )
            )
            track.pending = None
            # two neighbours swapped: the later one's digest, stored in its partner, goes on
            return pending.own if version == pending.version + 1 else digest
        if pending is not None:
            track.note(_edited(pending))
        track.pending = _Pending(version, track.prev, digest, _event_id(state))
        return digest

    def _close(self, checkpoint: Checkpoint) -> None:
        seq = checkpoint.seq
        for text in checkpoint.runs:
            run_hex, version, digest = parse_head(text)
            run = UUID(hex=run_hex)
            if self.only is not None and run != self.only:
                continue
            self._anchored[run] = (version, digest, seq)
            track = self.tracks.get(run)
            found = (track.version, track.head) if track else None
            if found != (version, digest):
                self._mismatches.setdefault(run, []).append(_Mismatch(seq, version, digest, found))
        if self.only is None:
            self._compare_range(checkpoint)
        self._leaves, self._sum = [], 0

    def _compare_range(self, checkpoint: Checkpoint) -> None:
        where = f"positions {checkpoint.first}..{checkpoint.last}"
        counted = len(self._leaves)
        if set_hex(self._sum) != checkpoint.events_sum or counted != checkpoint.events:
            self.findings.append(
                Finding(
                    kind="log_differs",
                    checkpoint=checkpoint.seq,
                    detail=f"{where}: checkpoint {checkpoint.seq} signed {checkpoint.events} events, "
                    f"the store holds {counted}, and not the same ones",
                )
            )
        elif root(self._leaves).hex() != checkpoint.root:
            self.findings.append(
                Finding(
                    kind="log_reordered",
                    checkpoint=checkpoint.seq,
                    detail=f"{where}: the store holds the {counted} events checkpoint {checkpoint.seq} "
                    "signed, in another order: events were reordered in the log",
                )
            )
        for run in self._touched:
            track = self.tracks[run]
            old = self._closed_heads.get(run)
            if old is not None:
                self._heads_sum = set_remove(self._heads_sum, head_leaf(run, *old))
            self._closed_heads[run] = (track.version, track.head)
            self._heads_sum = set_add(self._heads_sum, head_leaf(run, track.version, track.head))
        self._touched = set()
        same = (
            set_hex(self._heads_sum) == checkpoint.heads_sum and len(self._closed_heads) == checkpoint.heads
        )
        if not same and not self._heads_reported:
            self._heads_reported = True  # every later checkpoint differs too: name the first
            self.findings.append(
                Finding(
                    kind="heads_differ",
                    checkpoint=checkpoint.seq,
                    detail=f"the heads of all runs at checkpoint {checkpoint.seq} ({checkpoint.heads} "
                    f"signed, {len(self._closed_heads)} in the store) are not the ones signed",
                )
            )

    # --- the verdict -------------------------------------------------------------------

    def finish(self) -> AuditReport:
        for checkpoint in self.checkpoints[self._next :]:
            self._close(checkpoint)
        self._next = len(self.checkpoints)
        per_run: list[Finding] = []
        for run, track in self.tracks.items():
            found = self._chain_findings(track)
            if not found:
                found = self._anchor_findings(run, track)
            per_run += [f.model_copy(update={"run": self._name(run)}) for f in found]
        for run, (version, _, seq) in self._anchored.items():
            if run not in self.tracks:
                per_run.append(
                    Finding(
                        kind="deleted_run",
                        run=self._name(run),
                        checkpoint=seq,
                        version=version,
                        detail=f"checkpoint {seq} signed its {version} events; the store holds none",
                    )
                )
        last = self.checkpoints[-1].last if self.checkpoints else None
        return AuditReport(
            events=self.events,
            anchored=self.events - self.not_anchored,
            not_anchored=self.not_anchored,
            runs=len(self.tracks),
            checkpoints=len(self.checkpoints),
            last_anchored_position=last,
            findings=per_run + self.findings,
        )

    def _chain_findings(self, track: _Track) -> list[Finding]:
        found = list(track.findings or ())
        if track.pending is not None:
            found.append(_edited(track.pending))
        gaps = sorted(track.missing or ())
        while gaps:
            start = end = gaps.pop(0)
            while gaps and gaps[0] == end + 1:
                end = gaps.pop(0)
            if start == end:
                found.append(
                    Finding(kind="deleted_event", version=start, detail=f"version {start} is missing")
                )
            else:
                found.append(
                    Finding(
                        kind="deleted_events",
                        version=start,
                        detail=f"versions {start}..{end} are missing ({end - start + 1} consecutive events)",
                    )
                )
        return sorted(found, key=lambda f: f.version or 0)

    def _anchor_findings(self, run: UUID, track: _Track) -> list[Finding]:
        mismatches = self._mismatches.get(run)
        if not mismatches:
            return []
        first = mismatches[0]
        seq, signed = first.checkpoint, f"checkpoint {first.checkpoint} signed version {first.version}"
        if track.version < first.version:
            return [
                Finding(
                    kind="truncated_tail",
                    checkpoint=seq,
                    version=track.version + 1,
                    detail=f"{signed}; the store's chain verifies but ends at version {track.version}: "
                    f"versions {track.version + 1}..{first.version} were cut",
                )
            ]
        if first.found is not None and first.found[0] > first.version:
            return [
                Finding(
                    kind="inserted_event",
                    checkpoint=seq,
                    version=first.version + 1,
                    detail=f"{signed} as the head; the store holds version {first.found[0]} by then",
                )
            ]
        return [
            Finding(
                kind="rewritten_run",
                checkpoint=seq,
                version=first.version,
                detail=f"{signed} with digest {first.digest.hex()[:16]}…; the store's chain verifies but "
                "reaches another digest: the run was rewritten and its hashes recomputed",
            )
        ]

    def _name(self, run: UUID) -> str:
        return self.names.get(run, str(run))


def _edited(pending: _Pending) -> Finding:
    return Finding(
        kind="edited_event",
        version=pending.version,
        detail=f"version {pending.version} (event_id {pending.event_id or 'unreadable'}) no longer hashes "
        "to its recorded digest: the event was edited",
    )


def _event_id(state: bytes) -> str | None:
    try:
        return read_step_state(state).event_id
    except (ValueError, KeyError):
        return None
