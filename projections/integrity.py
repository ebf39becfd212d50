"""Views never vouch for what they did not check.

A view's receipt was folded when its events were applied; the events table can
change afterwards (an altered row, a deleted tail) and so can the view row
itself. So:

- a receipt served from a view carries the integrity of the event store's
  chain recomputed at read time (`checked_at`), hashing only, and says
  `view_current: false` when the view's head or event count is not the store's;
- `verify` also folds the run's events afresh and compares the result with the
  view's document, naming what differs, and reports a tail the view remembers
  but the store no longer holds.

What no check inside the database can see: a deleted tail of a run no view
has applied, a deleted whole run, or a run rewritten with its hashes
recomputed. Signed checkpoints kept outside the database are the reference
for those: `verify --checkpoints` (projections/anchored.py); without it, `verify` says so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from domain.chain import Integrity
from domain.receipt import render_checked
from domain.receipt_model import Receipt
from infra.store import RunNotFound, RunStore, RunUnreadable
from projections.queries import Queries

CANNOT_DETECT = (
    "a deleted tail or a deleted whole run is not detectable without signed checkpoints "
    "(nor a run rewritten with its hashes recomputed); this check sees only what the "
    "event store and the receipts view still hold: add --checkpoints DIR|topic for those"
)
# Parts of a receipt that depend on the reader's clock or on when it was checked.
_CLOCK_FINDINGS = {"final_state_unclear"}


def served(document: str, verification: Integrity | None, now: datetime | None = None) -> str:
    """A view's receipt document with its integrity recomputed from the store's
    chain (`verification`; None: the store holds no event of the run)."""
    data = json.loads(document)
    remembered = data.get("integrity") or {}
    integrity = chain_integrity(verification, remembered.get("events", 0), now)
    current = remembered.get("head") == integrity.head and remembered.get("events") == integrity.events
    data["integrity"] = integrity.model_copy(update={"view_current": current}).model_dump(mode="json")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def chain_integrity(verification: Integrity | None, view_events: int, now: datetime | None) -> Integrity:
    checked_at = now or datetime.now(UTC)
    if verification is None:
        return Integrity(
            head=None,
            events=0,
            verified=False,
            reason=f"the event store holds no event of this run; the receipts view remembers {view_events}",
            checked_at=checked_at,
        )
    return verification.model_copy(update={"checked_at": checked_at})


def stored_chain(store: RunStore, tenant: str, run_id: str) -> Integrity | None:
    try:
        return store.verify(tenant, run_id)
    except RunNotFound:
        return None


class Verified(Integrity):
    """The chain verdict (`verified` here also asks that the receipts view agrees
    with the events; `chain_verified` is the chain's alone), and the view compared."""

    run_id: str
    tenant: str
    chain_verified: bool
    # same: the view's receipt is what the events fold to; behind: it has applied
    # fewer events (and agrees with those); absent: the view has not applied the run.
    view: Literal["same", "behind", "absent", "differs", "not compared"]
    view_events: int | None = None
    view_differences: list[str] = []
    # Event ids the view remembers after the store's last event of the run.
    deleted_tail: list[str] = []
    # Events of the run no view could apply: the views leave them out, so they differ.
    quarantined: list[str] = []
    cannot_detect: str = CANNOT_DETECT


def verify_run(store: RunStore, queries: Queries, tenant: str, run_id: str) -> Verified:
    """The stored chain, and the receipts view compared with a fresh fold of the events."""
    now = datetime.now(UTC)
    document = queries.stored_receipt(tenant, run_id)
    chain = stored_chain(store, tenant, run_id)
    if chain is None and document is None:
        raise RunNotFound(tenant, run_id)
    view = json.loads(document) if document else None
    integrity = chain_integrity(chain, len(view["event_ids"]) if view else 0, now)
    result: dict[str, Any] = {"view": "absent"}
    if view is not None:
        result = _compare(store, tenant, run_id, view, chain)
    differs = result["view"] == "differs" or bool(result.get("deleted_tail"))
    return Verified(
        **integrity.model_dump(exclude={"verified"}),
        run_id=run_id,
        tenant=tenant,
        verified=integrity.verified and not differs,
        chain_verified=integrity.verified,
        view_events=len(view["event_ids"]) if view else None,
        quarantined=queries.quarantined(tenant, run_id),
        **result,
    )


def _compare(
    store: RunStore, tenant: str, run_id: str, view: dict[str, Any], chain: Integrity | None
) -> dict[str, Any]:
    view_ids: list[str] = view["event_ids"]
    if chain is None:
        return {
            "view": "differs",
            "deleted_tail": view_ids,
            "view_differences": ["the event store holds no event of the run"],
        }
    try:
        entries = store.stored_entries(tenant, run_id)
    except RunUnreadable as error:  # the chain names the damaged event
        return {"view": "not compared", "view_differences": [f"the events no longer fold: {error}"]}
    store_ids = [e.step.event_id for e in entries]
    deleted = view_ids[len(store_ids) :] if view_ids[: len(store_ids)] == store_ids else []
    behind = len(view_ids) < len(store_ids) and store_ids[: len(view_ids)] == view_ids
    fresh = render_checked(entries[: len(view_ids)] if behind else entries, store.contract)
    differences = differences_between(view, fresh)
    state = "differs" if differences else ("behind" if behind else "same")
    return {"view": state, "view_differences": differences, "deleted_tail": deleted}


def differences_between(view: dict[str, Any], fresh: Receipt) -> list[str]:
    """What the view's document says that a fold of the events does not."""
    mine, theirs = _comparable(view), _comparable(fresh.model_dump(mode="json"))
    found = []
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            found.append(
                f"{key}: the view says {_short(mine.get(key))}, the events {_short(theirs.get(key))}"
            )
    return found


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = dict(document)
    document["findings"] = [f for f in document.get("findings", []) if f.get("code") not in _CLOCK_FINDINGS]
    integrity = dict(document.get("integrity") or {})
    integrity.pop("checked_at", None)
    integrity.pop("view_current", None)
    document["integrity"] = integrity
    return document


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verified_text(v: Verified) -> list[str]:
    """`receipts verify` output: the chain first (as before), then the view, then the limits."""
    if not v.chain_verified:
        where = f"event #{v.first_bad_version} (event_id {v.first_bad_event_id or 'unreadable'})"
        lines = [f"BROKEN: run {v.run_id}: {where if v.first_bad_version else 'the store'}: {v.reason}"]
    elif v.verified:
        lines = [f"OK: run {v.run_id}: {v.events} events, hash chain verifies (head {v.head or ''})"]
    else:
        lines = [f"BROKEN: run {v.run_id}: the hash chain of its {v.events} stored events verifies, but:"]
    if v.deleted_tail:
        lines.append(
            f"  the receipts view remembers {v.view_events} events, the store holds {v.events}: the last "
            f"{len(v.deleted_tail)} ({', '.join(v.deleted_tail)}) were deleted from the store"
        )
    if v.quarantined:
        lines.append(f"  {len(v.quarantined)} event(s) of this run are quarantined; no view includes them:")
        lines += [f"    {q}" for q in v.quarantined]
    if v.view == "differs":
        lines.append("  the receipts view differs from the events:")
        lines += [f"    {d}" for d in v.view_differences]
    else:
        lines.append(
            {
                "same": "  the receipts view agrees with the events",
                "behind": f"  the receipts view has applied {v.view_events} of {v.events} events; "
                "it agrees with those",
                "absent": "  the receipts view has not applied this run yet",
                "not compared": "  the receipts view was not compared: " + "; ".join(v.view_differences),
            }[v.view]
        )
    lines.append(f"  note: {v.cannot_detect}")
    return lines
