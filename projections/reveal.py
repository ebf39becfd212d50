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
from typing import Any, TypeVar

from pydantic import BaseModel

from domain.personal import SEALED_PREFIX, erased_like, get_path, sealed_fields, sealed_token
from infra.sealing import open_step
from infra.store import RunNotFound, RunStore, RunUnreadable

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
