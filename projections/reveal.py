"""A view's answer with its sealed personal fields opened for the reader, or shown erased.

Views are folded from what is stored, so they hold personal fields as ciphertext tokens
and keep no plaintext that could outlive a subject's key. Before an answer is served, each
token in it is replaced by the value it seals: the run's stored events are opened with
their own envelopes as associated data (infra.sealing.open_step), and every token is
random, so a token stands for exactly one field of one event. A token no event of the run
holds, or whose key is gone, reads as erased.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import PersistenceError
from psycopg.sql import SQL
from pydantic import BaseModel

from domain.personal import (
    ERASED,
    KEYED_PREFIX,
    SEALED_PREFIX,
    erased_like,
    get_path,
    record_named,
    sealed_fields,
    sealed_token,
)
from domain.run import Entry
from domain.steps import ActionEdited, ActionProposed, content_hash
from infra.sealing import open_step
from infra.store import RunNotFound, RunStore, RunUnreadable
from infra.subject_keys import KeyRing
from projections.reference_views import Touches

Answer = TypeVar("Answer", bound=BaseModel)


def opened_tokens(store: RunStore, tenant: str, run_ids: Iterable[str]) -> dict[str, Any]:
    """Each token the runs' stored events hold -> the value it seals (or the erased marker)."""
    found: dict[str, Any] = {}
    for run_id in set(run_ids):
        try:
            entries = store.stored_entries(tenant, run_id)
        except (RunNotFound, RunUnreadable):
            continue  # a view ahead of a damaged or missing run: its tokens read as erased
        for entry in entries:
            step = entry.step
            data = step.model_dump(mode="json")["data"]
            tokens = list(sealed_fields(data))
            if not tokens or step.subject is None:
                continue
            opened = open_step(step, store.steps.keyring.key_of(tenant, step.subject))
            opened_data = opened.model_dump(mode="json")["data"]
            for path, token in tokens:
                found[token] = get_path(opened_data, path)
    return found


def revealed(value: Any, tokens: dict[str, Any]) -> Any:
    token = sealed_token(value)
    if token is not None:
        return tokens.get(token, erased_like(value))
    if isinstance(value, dict):
        return {k: revealed(v, tokens) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v, tokens) for v in value]
    return value


def reveal(store: RunStore, tenant: str, answer: Answer, run_ids: Iterable[str]) -> Answer:
    """`answer` (a view's, about `run_ids` of `tenant`) with its tokens opened."""
    if SEALED_PREFIX not in answer.model_dump_json():
        return answer
    document = answer.model_dump(mode="json")
    return type(answer).model_validate(revealed(document, opened_tokens(store, tenant, run_ids)))


def opened_histories(keys: KeyRing, runs: dict[UUID, list[Entry]]) -> dict[UUID, list[Entry]]:
    """The runs' entries as their publisher said them: sealed fields opened (or shown erased),
    and keyed version hashes back in the platform's own terms where the version's text opened.
    For a reader that talks to the platform, as the decisions relay does: a notice must name
    the version a platform can match with what it proposed."""
    sealed = SEALED_PREFIX.encode()
    subjects = {
        (e.step.tenant, e.step.subject)
        for entries in runs.values()
        for e in entries
        if e.step.subject is not None and sealed in e.wire
    }
    if not subjects:
        return runs
    found = keys.keys_of(subjects)

    def opened(entry: Entry) -> Entry:
        subject = entry.step.subject
        if subject is None or sealed not in entry.wire:
            return entry
        return replace(entry, step=open_step(entry.step, found[(entry.step.tenant, subject)]))

    result = {}
    for run, entries in runs.items():
        opened_entries = [opened(e) for e in entries]
        plain = _plain_versions(opened_entries)
        result[run] = [_in_plain_terms(e, plain) if plain else e for e in opened_entries]
    return result


def _plain_versions(entries: list[Entry]) -> dict[str, str]:
    """Each keyed version hash of the run -> the plain hash of the text it names."""
    found: dict[str, str] = {}
    for entry in entries:
        step = entry.step
        if isinstance(step, ActionProposed):
            keyed, text = step.data.action.output_hash, step.data.action.output
        elif isinstance(step, ActionEdited):
            keyed, text = step.data.output_hash, step.data.output
        else:
            continue
        if text != ERASED and keyed.startswith(KEYED_PREFIX):
            found[keyed] = content_hash(text)
    return found


def _in_plain_terms(entry: Entry, plain: dict[str, str]) -> Entry:
    if KEYED_PREFIX.encode() not in entry.wire:
        return entry
    document = entry.step.model_dump(mode="json")
    document["data"] = _translated(document["data"], plain)
    return replace(entry, step=type(entry.step).model_validate(document))


def _translated(value: Any, plain: dict[str, str]) -> Any:
    if isinstance(value, str):
        return plain.get(value, value)
    if isinstance(value, dict):
        return {k: _translated(v, plain) for k, v in value.items()}
    if isinstance(value, list):
        return [_translated(v, plain) for v in value]
    return value


def sealed_under_for_record(
    store: RunStore, schema: str, record: str, limit: int = 20
) -> dict[str, list[str]]:
    """For a record (`system/kind/id`): the subjects under which the runs that touched it hold
    their personal data -> those runs (`run_id (tenant)`, at most `limit` runs looked at). A
    person's record is often not their runs' subject: a run's is its input unless the
    publisher names one."""
    parts = record_named(record)
    if parts is None:
        return {}
    statement = SQL(
        "SELECT DISTINCT tenant, run_id FROM {} WHERE system = %s AND kind = %s AND entity_id = %s LIMIT %s"
    ).format(Touches(schema).identifier)
    try:
        with store.steps.datastore.transaction(commit=False) as curs:
            curs.execute(statement, (*parts, limit))
            runs = [(row["tenant"], row["run_id"]) for row in curs.fetchall()]
    except PersistenceError:  # no views yet (`receipts project` never ran): nothing to say
        return {}
    found: dict[str, list[str]] = {}
    for tenant, run_id in runs:
        try:
            subjects = {e.step.subject for e in store.stored_entries(tenant, run_id) if e.step.subject}
        except (RunNotFound, RunUnreadable):
            continue
        for subject in sorted(subjects):
            found.setdefault(subject, []).append(f"{run_id} ({tenant})")
    return found
