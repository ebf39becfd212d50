"""A portable, signed receipt: one file a third party verifies offline.

`export_signed` writes the run's receipt, its events exactly as stored (bytes and
chain digests), for each anchored event its RFC 6962 inclusion proof in the
checkpoint that covers it, those checkpoints with their signatures, the key
history, and per executed step the policy decision and the approval that
authorised it. `verify_file` checks all of it with nothing but the file and a
public key: the chain from the first event, each proof against its checkpoint's
root, each checkpoint's signature, the run's head as each checkpoint signed it,
and that the receipt and the authorisations cite only events that verified.
Events newer than the last checkpoint are carried and chained, and reported as
not yet anchored.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from psycopg.sql import SQL, Identifier
from pydantic import BaseModel

from domain.chain import GENESIS, link
from domain.checkpoint import Checkpoint, Finding, canonical, parse_head
from domain.merkle import event_leaf, included, inclusion_path
from domain.personal import KEYED_PREFIX, SEALED_PREFIX, sealed_token
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.run import Entry, run_uuid
from infra.checkpoints import Checkpointer
from infra.keyring import KeyRecord, trusted_keys
from infra.rows import read_step_state
from infra.signing import PublicKey
from infra.store import RunNotFound, RunStore
from schemas import Codec

FORMAT = "agent-receipts/signed-receipt/v1"


def export_signed(store: RunStore, checkpointer: Checkpointer, receipt: Receipt) -> dict[str, Any]:
    tenant, run_id = receipt.tenant, receipt.run_id
    run = run_uuid(tenant, run_id)
    recorder = store.steps
    tables = recorder.checkpoint_tables
    with recorder.datastore.transaction(commit=False) as curs:
        curs.execute(
            SQL(
                "SELECT notification_id, originator_version, state FROM {}.{} "
                "WHERE originator_id = %s ORDER BY originator_version"
            ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)),
            (run,),
        )
        rows = [(int(r["notification_id"]), int(r["originator_version"]), bytes(r["state"])) for r in curs]
        if not rows:
            raise RunNotFound(tenant, run_id)
        checkpoints = tables.all(curs)
        history = tables.keyring.history(curs)
        events, proofs, used = [], [], {}
        for position, version, state in rows:
            header = read_step_state(state)
            events.append(
                {
                    "version": version,
                    "position": position,
                    "digest": header.digest.hex(),
                    "wire": base64.b64encode(header.wire).decode(),
                    # when the service recorded it: the receipt shows it; no chain covers it
                    "recorded_at": header.recorded_at.isoformat(),
                }
            )
            covering = next(
                (c for c in checkpoints if c.checkpoint.first <= position <= c.checkpoint.last), None
            )
            if covering is None:
                continue
            c = covering.checkpoint
            if c.seq not in used:
                used[c.seq] = (covering, _range_leaves(checkpointer, curs, c))
            positions, leaves = used[c.seq][1]
            index = positions.index(position)
            proofs.append(
                {
                    "version": version,
                    "checkpoint": c.seq,
                    "index": index,
                    "path": [p.hex() for p in inclusion_path(leaves, index)],
                }
            )
    return {
        "format": FORMAT,
        "tenant": tenant,
        "run_id": run_id,
        "receipt": receipt.model_dump(mode="json"),
        "authorizations": authorizations(receipt),
        "events": events,
        "proofs": proofs,
        "checkpoints": [signed.document() for signed, _ in used.values()],
        "keys": [e.model_dump() for e in history],
    }


def _range_leaves(checkpointer: Checkpointer, curs: Any, c: Checkpoint) -> tuple[list[int], list[bytes]]:
    rows = checkpointer.rows(curs, c.first - 1, c.last)
    return [r[0] for r in rows], [r[4] for r in rows]


def authorizations(receipt: Receipt) -> list[dict[str, Any]]:
    """Per executed step: the policy decision that routed it and the approval it stood on."""
    found = []
    for step in receipt.steps:
        if step.execution is None:
            continue
        approval = step.approval
        found.append(
            {
                "step_id": step.step_id,
                "executed_event_id": step.execution.event_id,
                "authorization_ref": step.execution.authorization_ref,
                "policy_decision": {
                    "decision_id": step.policy.decision_id,
                    "rule_id": step.policy.rule_id,
                    "lane": step.policy.lane,
                    "policy_version": step.policy.policy_version,
                    "event_id": step.policy.event_id,
                }
                if step.policy
                else None,
                "approval": {
                    "event_id": approval.event_id,
                    "reviewer": approval.reviewer.id,
                    "role": approval.reviewer.role,
                    "reviewed_hash": approval.reviewed_hash,
                }
                if approval
                else None,
            }
        )
    return found


class FileVerdict(BaseModel):
    run: str
    events: int
    anchored: int
    not_anchored: list[int]
    checkpoints: list[int]
    trusted_keys: list[str]
    findings: list[Finding]
    # Personal fields the receipt shows as the service opened them: the events hold them
    # sealed under their subject's key, so nothing in the file proves their text.
    opened: int = 0
    # Events the receipt names a publisher for: signatures are over the bytes as sent, which a
    # sealed event no longer is, so who vouched is the service's word here.
    vouched: int = 0

    @property
    def verified(self) -> bool:
        return not self.findings


def verify_file(
    document: dict[str, Any], anchors: list[PublicKey], codec: Codec | None = None
) -> FileVerdict:
    findings: list[Finding] = []
    tenant, run_id = str(document.get("tenant")), str(document.get("run_id"))
    history = [KeyRecord.model_validate(k) for k in document.get("keys", [])]
    trusted, problems = trusted_keys(history, anchors)
    findings += [Finding(kind="key_history", detail=p) for p in problems]
    checkpoints = _checked_checkpoints(document, trusted, findings)
    run = run_uuid(tenant, run_id)
    digests: dict[int, bytes] = {}
    wires: dict[int, bytes] = {}
    previous = GENESIS
    for expected, event in enumerate(document.get("events", []), start=1):
        version, digest, wire = (
            int(event["version"]),
            bytes.fromhex(event["digest"]),
            base64.b64decode(event["wire"]),
        )
        if version != expected:
            findings.append(
                Finding(kind="deleted_event", version=expected, detail=f"version {expected} is missing")
            )
            break
        if link(previous, wire) != digest:
            findings.append(
                Finding(kind="edited_event", version=version, detail="its bytes do not hash to its digest")
            )
        digests[version], wires[version], previous = digest, wire, digest
    anchored = set()
    for proof in document.get("proofs", []):
        version, seq = int(proof["version"]), int(proof["checkpoint"])
        c = checkpoints.get(seq)
        if c is None or version not in digests:
            continue  # its checkpoint did not verify (named above) or the event is absent
        path = [bytes.fromhex(p) for p in proof["path"]]
        if included(
            event_leaf(run, version, digests[version]),
            int(proof["index"]),
            c.events,
            path,
            bytes.fromhex(c.root),
        ):
            anchored.add(version)
        else:
            findings.append(
                Finding(
                    kind="not_included",
                    version=version,
                    checkpoint=seq,
                    detail=f"its inclusion proof does not lead to checkpoint {seq}'s root",
                )
            )
    for c in checkpoints.values():
        for text in c.runs:
            run_hex, version, digest = parse_head(text)
            if run_hex == run.hex and digests.get(version) != digest:
                findings.append(
                    Finding(
                        kind="truncated_tail" if version not in digests else "rewritten_run",
                        version=version,
                        checkpoint=c.seq,
                        detail=f"checkpoint {c.seq} signed the run's head at version {version}; the file "
                        + ("ends before it" if version not in digests else "holds another event there"),
                    )
                )
    cited, opened = _citations(document, wires, codec or Codec())
    findings += cited
    vouched = sum(1 for v in (document.get("receipt") or {}).get("vouched", []) if v.get("publisher"))
    return FileVerdict(
        run=f"{tenant}/{run_id}",
        events=len(digests),
        anchored=len(anchored),
        not_anchored=sorted(set(digests) - anchored),
        checkpoints=sorted(checkpoints),
        trusted_keys=sorted(trusted),
        findings=findings,
        opened=opened,
        vouched=vouched,
    )


def _checked_checkpoints(
    document: dict[str, Any], trusted: dict[str, PublicKey], findings: list[Finding]
) -> dict[int, Checkpoint]:
    good = {}
    for raw in document.get("checkpoints", []):
        c = Checkpoint.model_validate(raw["checkpoint"])
        key = trusted.get(c.key_id)
        if key is None:
            findings.append(
                Finding(
                    kind="foreign_key",
                    checkpoint=c.seq,
                    detail=f"signed by key {c.key_id}, not a trusted one",
                )
            )
        elif not key.verifies(base64.b64decode(raw["signature"]), canonical(raw["checkpoint"])):
            findings.append(
                Finding(kind="forged_checkpoint", checkpoint=c.seq, detail="its signature does not verify")
            )
        else:
            good[c.seq] = c
    return good


def _citations(document: dict[str, Any], wires: dict[int, bytes], codec: Codec) -> tuple[list[Finding], int]:
    """The receipt must be what the verified events fold to, and the authorisations may cite
    only those events; with how many personal fields the receipt shows opened."""
    try:
        steps = [codec.decode(w) for _, w in sorted(wires.items())]
    except Exception as error:  # bytes that verify but do not decode: a step nobody can read
        return [Finding(kind="edited_event", detail=f"an event does not decode: {error}")], 0
    findings, opened = _receipt_differences(document, steps, wires)
    by_id = {s.event_id: s for s in steps}
    for auth in document.get("authorizations", []):
        cited = [auth.get("executed_event_id")]
        cited += [(auth.get(part) or {}).get("event_id") for part in ("policy_decision", "approval")]
        if auth.get("authorization_ref") != (auth.get("policy_decision") or {}).get("decision_id"):
            cited.append(auth.get("authorization_ref"))  # else it names the decision cited above
        missing = [c for c in cited if c and c not in by_id]
        if missing:
            findings.append(
                Finding(
                    kind="authorization_unproven",
                    detail=f"step {auth.get('step_id')}: cites {', '.join(missing)}, "
                    "not among the verified events",
                )
            )
    return findings, opened


# Parts of a receipt that are not a function of the events alone: findings may come from the
# lane contract of a policy the file does not carry, and from the reader's clock; the
# integrity verdict says when it was checked.
_NOT_FOLDED = ("findings", "integrity")


def _receipt_differences(
    document: dict[str, Any], steps: list[Any], wires: dict[int, bytes]
) -> tuple[list[Finding], int]:
    """Where the receipt says other than its verified events fold to (with how many personal
    fields it shows opened). A field the events hold sealed (or a content hash keyed) is the
    service's reading of a ciphertext only its subject's key opens: any value stands there,
    and is counted. Who vouched for each event is compared by event, not by publisher (see
    `FileVerdict.vouched`)."""
    events = {int(e["version"]): e for e in document.get("events", [])}
    try:
        entries = [
            Entry(
                v,
                step,
                wires[v],
                bytes.fromhex(events[v]["digest"]),
                datetime.fromisoformat(events[v]["recorded_at"]),
            )
            for v, step in zip(sorted(wires), steps, strict=True)
        ]
        folded = render(entries).model_dump(mode="json")
    except (KeyError, ValueError) as error:
        return [Finding(kind="receipt_differs", detail=f"the events do not fold to a receipt: {error}")], 0
    given = dict(document.get("receipt") or {})
    given["vouched"] = [{k: v for k, v in e.items() if k != "publisher"} for e in given.get("vouched", [])]
    folded["vouched"] = [{k: v for k, v in e.items() if k != "publisher"} for e in folded.get("vouched", [])]
    opened = [0]
    differing = sorted(
        k
        for k in set(folded) | set(given)
        if k not in _NOT_FOLDED and _differs(folded.get(k), given.get(k), opened)
    )
    if not differing:
        return [], opened[0]
    return [
        Finding(
            kind="receipt_differs",
            detail=f"the receipt's {', '.join(differing)} differ from what its verified events say",
        )
    ], opened[0]


def _differs(folded: Any, given: Any, opened: list[int]) -> bool:
    # A token, a keyed hash, or text made from sealed fields (the diff of a draft and its edit).
    if sealed_token(folded) is not None or (
        isinstance(folded, str) and (folded.startswith(KEYED_PREFIX) or SEALED_PREFIX in folded)
    ):
        opened[0] += 1
        return False
    if isinstance(folded, dict) and isinstance(given, dict):
        return folded.keys() != given.keys() or any(_differs(folded[k], given[k], opened) for k in folded)
    if isinstance(folded, list) and isinstance(given, list):
        return len(folded) != len(given) or any(
            _differs(a, b, opened) for a, b in zip(folded, given, strict=True)
        )
    return bool(folded != given)


def file_text(v: FileVerdict) -> list[str]:
    if v.verified:
        lines = [
            f"OK: run {v.run}: {v.events} events chain; {v.anchored} proven in signed checkpoints "
            f"{', '.join(map(str, v.checkpoints)) or '(none)'}"
        ]
    else:
        lines = [f"BROKEN: run {v.run}: {len(v.findings)} finding(s)"]
        lines += [
            f"  {f.kind}: {f'version {f.version}: ' if f.version else ''}{f.detail}" for f in v.findings
        ]
    if v.opened:
        lines.append(
            f"  {v.opened} personal field(s) read as the service opened them: the events hold them sealed "
            "under their subject's key, so this file proves where they stand, not their text"
        )
    if v.vouched:
        lines.append(
            f"  {v.vouched} event(s) named as vouched for by a publisher: the service's word here (a "
            "signature covers the bytes as sent, which a sealed event no longer is)"
        )
    if v.not_anchored:
        lines.append(f"  not yet anchored (not verified against a checkpoint): versions {v.not_anchored}")
    lines.append(f"  trusted keys: {', '.join(v.trusted_keys) or 'none'}")
    return lines


def load(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    if data.get("format") != FORMAT:
        raise ValueError(f"not a signed receipt ({FORMAT})")
    return data
