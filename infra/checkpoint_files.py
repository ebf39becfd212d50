"""Checkpoints outside the database: files in a directory, messages on `<topic>.checkpoints`,
and the check of what was found there — signatures, the chain, nothing missing.

A directory holds `checkpoint-<seq>.json` (one signed checkpoint each) and
`keys.json` (the key history). The topic holds the same documents, keyed
`checkpoint/<seq>` and `key/<key id>`. Whatever the source, a checkpoint counts
only if a trusted key signed exactly its bytes and it links to the one before it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from domain.checkpoint import GENESIS, Checkpoint, Finding, canonical
from domain.errors import ReceiptsError
from infra.checkpoints import SignedCheckpoint
from infra.keyring import KeyRecord, history_document, parse_history, retired_from, trusted_keys
from infra.signing import PublicKey

KEYS_FILE = "keys.json"


class NoCheckpoints(ReceiptsError):
    status = 404
    title = "No checkpoints"


def file_name(seq: int) -> str:
    return f"checkpoint-{seq:012d}.json"


@dataclass
class Collected:
    """Raw documents from one source, before anything about them is believed."""

    where: str
    documents: list[tuple[str, bytes]] = field(default_factory=list)
    keys: list[KeyRecord] = field(default_factory=list)


def write_dir(
    path: Path, checkpoints: list[SignedCheckpoint], history: list[KeyRecord]
) -> tuple[int, list[int]]:
    """Write each checkpoint not yet there, and the key history. Returns how many were new,
    and the numbers of those already there that differ from the store's: the files are the
    reference, so they are never overwritten (the store's copy is what to doubt)."""
    path.mkdir(parents=True, exist_ok=True)
    written, differing = 0, []
    for signed in checkpoints:
        target = path / file_name(signed.checkpoint.seq)
        if not target.exists():
            target.write_text(signed.text())
            written += 1
        elif target.read_text() != signed.text():
            differing.append(signed.checkpoint.seq)
    (path / KEYS_FILE).write_text(history_document(history))
    return written, differing


def from_dir(path: Path) -> Collected:
    if not path.is_dir():
        raise NoCheckpoints(f"no checkpoint directory {path}")
    found = Collected(str(path))
    for file in sorted(path.glob("checkpoint-*.json")):
        found.documents.append((file.name, file.read_bytes()))
    keys = path / KEYS_FILE
    if keys.exists():
        found.keys = parse_history(keys.read_text())
    return found


def from_topic(bootstrap: str, topic: str, timeout: float = 15.0) -> Collected:
    """Every message of the (one-partition) checkpoints topic, from its beginning to its end."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        if not partitions:
            raise NoCheckpoints(f"no topic {topic} on {bootstrap}")
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        ends = reader.end_offsets(partitions)
        found = Collected(f"topic {topic}")
        seen: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout
        quiet = False
        # Past the end offsets, until a poll brings nothing: some brokers (Tansu) report the
        # base offset of a partition's last batch as its end, not the offset after it.
        while not quiet or any(reader.position(p) < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise NoCheckpoints(f"could not read {topic} to its end within {timeout:.0f}s")
            polled = reader.poll(200)
            quiet = not any(polled.values())
            for batch in polled.values():
                for record in batch:
                    key, value = bytes(record.key or b""), bytes(record.value or b"")
                    if seen.get(key) == value:
                        continue  # sent again after a crash: the same bytes
                    seen[key] = value
                    if key.startswith(b"key/"):
                        found.keys.append(KeyRecord.model_validate(json.loads(value)["key"]))
                    else:
                        found.documents.append((f"{topic}@{record.offset}", value))
        return found
    finally:
        reader.close()


@dataclass
class ChainVerdict:
    checkpoints: list[Checkpoint]
    findings: list[Finding]
    trusted: dict[str, PublicKey]
    notes: list[str] = field(default_factory=list)


def check_chain(
    collected: Collected, anchors: list[PublicKey], store_latest: int | None = None
) -> ChainVerdict:
    """The checkpoints that hold (signed by a trusted key, in an unbroken chain), and what
    does not: unreadable, forged, signed by another key, missing, a gap in the chain.

    Checkpoints the store closed after the source's newest are a note, not a finding: an
    export is behind the store between two exports. What they cover is not yet anchored."""
    trusted, problems = trusted_keys(collected.keys, anchors)
    findings = [Finding(kind="key_history", detail=p) for p in problems]
    retired = retired_from([k for k in collected.keys if k.key_id in trusted])
    good: dict[int, Checkpoint] = {}
    named: set[int] = set()
    for where, raw in collected.documents:
        checkpoint, finding = _checked(where, raw, trusted)
        if finding is not None:
            findings.append(finding)
            if finding.checkpoint is not None:
                named.add(finding.checkpoint)
            continue
        assert checkpoint is not None
        successor = retired.get(checkpoint.key_id)
        if successor is not None and checkpoint.seq >= successor[1]:
            findings.append(
                _finding(
                    "retired_key",
                    checkpoint.seq,
                    f"{where}: checkpoint {checkpoint.seq} is signed by key {checkpoint.key_id}, which key "
                    f"{successor[0]} replaced from checkpoint {successor[1]} on: a retired key signed it",
                )
            )
            named.add(checkpoint.seq)
            continue
        other = good.get(checkpoint.seq)
        if other is not None and other.hash != checkpoint.hash:
            findings.append(
                _finding("forged_checkpoint", checkpoint.seq, f"{where}: two different checkpoints")
            )
            continue
        good[checkpoint.seq] = checkpoint
    findings += _chain_findings(good, named, collected.where)
    notes = []
    newest = max([*good, *named], default=0)
    if store_latest is not None and store_latest > newest:
        span = f"{newest + 1}..{store_latest}" if store_latest > newest + 1 else str(store_latest)
        notes.append(
            f"checkpoint(s) {span} are in the store but not in {collected.where}: it is behind (export "
            "again); the events they cover are counted as not yet anchored"
        )
    return ChainVerdict([good[s] for s in sorted(good)], findings, trusted, notes)


def _checked(
    where: str, raw: bytes, trusted: dict[str, PublicKey]
) -> tuple[Checkpoint | None, Finding | None]:
    try:
        document: dict[str, Any] = json.loads(raw)
        checkpoint = Checkpoint.model_validate(document["checkpoint"])
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, ValidationError) as error:
        reason = str(error).splitlines()[0]
        return None, Finding(
            kind="forged_checkpoint",
            detail=f"{where} does not read as a checkpoint ({reason}): forged or damaged",
        )
    key = trusted.get(checkpoint.key_id)
    if key is None:
        return None, _finding(
            "foreign_key",
            checkpoint.seq,
            f"{where}: checkpoint {checkpoint.seq} is signed by key {checkpoint.key_id}, "
            "which is not one of the trusted keys: another key signed it",
        )
    if not key.verifies(signature, canonical(document["checkpoint"])):
        return None, _finding(
            "forged_checkpoint",
            checkpoint.seq,
            f"{where}: the signature of checkpoint {checkpoint.seq} does not verify with key "
            f"{checkpoint.key_id}: it was forged or edited",
        )
    return checkpoint, None


def _chain_findings(good: dict[int, Checkpoint], named: set[int], where: str) -> list[Finding]:
    findings = []
    expected = 1
    previous: Checkpoint | None = None
    for seq in sorted(good):
        checkpoint = good[seq]
        gone = [s for s in range(expected, seq) if s not in named]
        if gone:
            findings.append(_missing(gone, where))
        if seq == expected and previous is not None:
            if checkpoint.previous != previous.hash:
                findings.append(
                    _finding(
                        "checkpoint_chain_gap",
                        seq,
                        f"checkpoint {seq} names previous {checkpoint.previous[:16]}…, but checkpoint "
                        f"{seq - 1} hashes to {previous.hash[:16]}…: the chain is broken",
                    )
                )
            elif checkpoint.first != previous.last + 1:
                findings.append(
                    _finding(
                        "checkpoint_chain_gap",
                        seq,
                        f"checkpoint {seq} starts at position {checkpoint.first}, checkpoint {seq - 1} "
                        f"ended at {previous.last}: the chain leaves positions out",
                    )
                )
        elif seq == 1 and (checkpoint.previous != GENESIS or checkpoint.first != 1):
            findings.append(_finding("checkpoint_chain_gap", 1, "checkpoint 1 does not start the chain"))
        previous, expected = checkpoint, seq + 1
    return findings


def _missing(seqs: list[int], where: str) -> Finding:
    span = f"checkpoint {seqs[0]}" if len(seqs) == 1 else f"checkpoints {seqs[0]}..{seqs[-1]}"
    return _finding("missing_checkpoint", seqs[0], f"{span} missing from {where}")


def _finding(kind: str, seq: int, detail: str) -> Finding:
    return Finding(kind=kind, checkpoint=seq, detail=detail)
