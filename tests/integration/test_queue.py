"""The approval queue view on real PostgreSQL: what waits, what leaves, filters, pages, tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.bootstrap import build_projections, build_queries
from domain.steps import StepEvent, content_hash
from infra.settings import Settings
from infra.store import RunStore
from projections.queue import QueueFilter
from schemas.codec import encode_json
from tests.integration.helpers import running_store
from tests.unit import factories as f

pytestmark = pytest.mark.integration
EDIT = f.DRAFT + "Best, Maria\n"


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


def record(store: RunStore, settings: Settings, *steps: StepEvent) -> None:
    store.record([(step, encode_json(step)) for step in steps])
    build_projections(settings, store).catch_up()


def waiting_run(
    run_id: str, lane: str = "review", *, workflow: str = "lead-followup", **kw: object
) -> list[StepEvent]:
    step = f"{run_id}/step-1"
    return [
        f.started(run_id=run_id, workflow=workflow, at=f.at(0), **kw),  # type: ignore[arg-type]
        f.source("pricing", run_id=run_id, retrieved_at=f.at(-60), at=f.at(1), **kw),  # type: ignore[arg-type]
        f.proposed(step, run_id=run_id, confidence=0.7, at=f.at(2), **kw),  # type: ignore[arg-type]
        f.policy(step, lane, run_id=run_id, at=f.at(3), **kw),  # type: ignore[arg-type]
    ]


def test_a_waiting_step_is_in_the_queue_with_everything_a_reviewer_needs(
    store: RunStore, settings: Settings
) -> None:
    record(store, settings, *waiting_run("r-1"), *waiting_run("r-auto", "auto"))
    page = build_queries(settings, store).queue("default", QueueFilter())
    assert [(i.run_id, i.step_id) for i in page.items] == [("r-1", "r-1/step-1")]
    item = page.items[0]
    assert (item.lane, item.required_role, item.rule_id, item.policy_version) == (
        "review",
        "sales-lead",
        "R-lead-email",
        "2025.03",
    )
    assert item.action.output == f.DRAFT and item.version_hash == content_hash(f.DRAFT)
    assert item.signal is not None and item.signal.confidence == 0.7
    assert [(s.id, s.version) for s in item.sources] == [("pricing", "v12")]
    assert item.rollback is not None and item.rollback.method == "correct"
    assert item.proposed_at == f.at(2) == item.waiting_since and item.event_ids


def test_a_decision_takes_it_out_and_an_edit_after_approval_brings_it_back(
    store: RunStore, settings: Settings
) -> None:
    queries = build_queries(settings, store)
    record(store, settings, *waiting_run("r-1"))
    record(store, settings, f.reviewed("r-1/step-1", run_id="r-1", at=f.at(5)))
    assert queries.queue("default", QueueFilter()).items == []
    record(store, settings, f.edited("r-1/step-1", EDIT, run_id="r-1", at=f.at(6)))
    (item,) = queries.queue("default", QueueFilter()).items
    assert item.version_hash == content_hash(EDIT) and item.edits == 1 and item.waiting_since == f.at(6)
    record(
        store,
        settings,
        f.reviewed("r-1/step-1", "rejected", output=EDIT, comment="no", run_id="r-1", at=f.at(7)),
    )
    assert queries.queue("default", QueueFilter()).items == []


def test_filters_pages_and_tenants(store: RunStore, settings: Settings) -> None:
    runs = [waiting_run(f"r-{n}", workflow="support" if n % 3 == 0 else "lead-followup") for n in range(12)]
    other = waiting_run("theirs", tenant="acme")
    escalated = waiting_run("r-esc", "escalate")
    record(store, settings, *(s for run in runs for s in run), *other, *escalated)
    queries = build_queries(settings, store)
    seen, cursor = [], None
    while True:
        page = queries.queue("default", QueueFilter(limit=5, cursor=cursor))
        seen += [i.run_id for i in page.items]
        if not (cursor := page.next_cursor):
            break
    assert sorted(seen) == sorted([f"r-{n}" for n in range(12)] + ["r-esc"]) and len(seen) == len(set(seen))
    support = queries.queue("default", QueueFilter(workflow="support")).items
    assert sorted(i.run_id for i in support) == ["r-0", "r-3", "r-6", "r-9"]
    assert [i.run_id for i in queries.queue("default", QueueFilter(lane="escalate")).items] == ["r-esc"]
    assert queries.queue("default", QueueFilter(role="support-lead")).items == []
    assert len(queries.queue("default", QueueFilter(role="sales-lead", limit=500)).items) == 13
    assert [i.run_id for i in queries.queue("acme", QueueFilter()).items] == ["theirs"]
