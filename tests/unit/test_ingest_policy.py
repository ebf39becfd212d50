"""The service's policy decision at ingest: recorded right after each proposed or edited
step, chained like any event, once however often the step is delivered."""

from __future__ import annotations

from uuid import UUID

from consumers.ingest import Ingest, Plan
from domain.chain import link
from domain.policy import sample_policy
from domain.routing import Router, decide
from domain.run import RunHead, run_uuid
from domain.steps import SERVICE, StepEvent
from infra.rows import Row, read_step_state, stored_heads
from schemas import Codec, encode_json
from tests.unit import factories as f
from tests.unit.test_ingest_plan import NOW, QueuedPolls, StoredHeads, _batch

ROUTER = Router(sample_policy())
RUN = run_uuid("default", f.RUN)


class CountingCodec(Codec):
    """Counts what it decodes once `counting` is set: the stored rows routing reads."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.decoded: list[str] = []

    def decode(self, raw: bytes) -> StepEvent:
        step = super().decode(raw)
        if self.counting:
            self.decoded.append(step.type)
        return step


def _ingest(store: StoredHeads, codec: Codec | None = None) -> Ingest:
    return Ingest(QueuedPolls(), store, None, codec=codec, clock=lambda: NOW, router=ROUTER)


def _steps(rows: list[Row]) -> list[StepEvent]:
    return [Codec().decode(read_step_state(row[3]).wire) for row in rows]


def _chain(plan: Plan) -> list[Row]:
    plan.chain()
    return plan.rows()


def test_a_proposal_gets_one_service_decision_right_after_it_chained_like_any_event() -> None:
    run = [f.started(), f.source(), f.proposed(), f.finished()]
    plan = _ingest(StoredHeads()).plan(_batch(*map(encode_json, run)))
    rows = _chain(plan)
    steps = _steps(rows)
    assert [s.type for s in steps] == [
        "run.started",
        "source.used",
        "action.proposed",
        "policy.decided",
        "run.finished",
    ]
    assert steps[3] == decide(ROUTER, run[:3], run[2])  # the engine's own decision, as recorded
    data = steps[3].data
    assert steps[3].actor == SERVICE and data.source == "service" and steps[3].step_id == run[2].step_id
    assert steps[3].event_id == data.decision_id and data.policy_version == ROUTER.version
    headers = [read_step_state(r[3]) for r in rows]
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    assert headers[3].digest == link(headers[2].digest, encode_json(steps[3]))
    assert headers[4].digest == link(headers[3].digest, encode_json(run[3]))
    assert (plan.recorded, plan.decided) == (4, 1)


def test_an_edit_is_routed_again_as_an_edit_of_its_proposal() -> None:
    edit = f.edited(output=f.DRAFT + "We can offer a 20% discount.\n")
    run = [f.started(workflow="crm-notes"), f.proposed(verb="write_note"), edit]
    steps = _steps(_chain(_ingest(StoredHeads()).plan(_batch(*map(encode_json, run)))))
    assert [s.type for s in steps] == [
        "run.started",
        "action.proposed",
        "policy.decided",
        "action.edited",
        "policy.decided",
    ]
    assert steps[4] == decide(ROUTER, run[:2], edit)
    assert steps[4].data.rule_id == "pricing-claims-review"
    assert steps[2].data.rule_id != "pricing-claims-review"  # type: ignore[attr-defined]
    assert steps[4].event_id != steps[2].event_id


def test_a_redelivered_proposal_adds_nothing() -> None:
    store = StoredHeads()
    ingest = _ingest(store)
    wires = [encode_json(s) for s in (f.started(), f.proposed())]
    first = ingest.prepare(_batch(*wires))
    assert len(first.rows()) == 3
    again = ingest.prepare(_batch(*wires, start=2))
    assert again.rows() == [] and (again.duplicates, again.decided) == (2, 0)


def test_a_decision_claiming_to_be_the_service_s_is_a_dead_letter() -> None:
    forged = [
        f.policy(source="service"),
        f.policy(by=SERVICE),
    ]
    plan = _ingest(StoredHeads()).plan(_batch(*map(encode_json, forged)))
    assert _chain(plan) == [] and [d.reason for d in plan.dead] == ["reserved_type", "reserved_type"]
    # A platform's own decision is still recorded, beside the service's.
    platform = _ingest(StoredHeads()).plan(_batch(encode_json(f.policy())))
    assert len(_chain(platform)) == 1 and platform.dead == []


def _stored(steps: list[StepEvent]) -> dict[UUID, RunHead]:
    """The heads the store would return for these recorded steps (its own row reader)."""
    rows = _chain(_ingest(StoredHeads()).plan(_batch(*map(encode_json, steps))))
    return stored_heads((run, version, state) for run, version, _, state in rows)


def test_a_cache_miss_builds_the_context_from_stored_rows_decoding_only_what_routing_needs() -> None:
    earlier = [f.started(), f.source("form"), f.source(), f.finished()]
    codec = CountingCodec()
    proposal = f.proposed(step_id="run-1/step-2")
    plan = _ingest(StoredHeads(_stored(earlier)), codec).plan(_batch(encode_json(proposal)))
    codec.counting = True
    steps = _steps(_chain(plan))
    assert [s.type for s in steps] == ["action.proposed", "policy.decided"]
    stored = _steps(_chain(_ingest(StoredHeads()).plan(_batch(*map(encode_json, earlier)))))
    assert steps[1] == decide(ROUTER, stored, proposal)
    assert sorted(codec.decoded) == ["run.started", "source.used", "source.used"]


def test_an_edit_after_a_cache_miss_finds_its_stored_proposal() -> None:
    earlier = [f.started(), f.source(), f.proposed(), f.reviewed()]
    recorded = _steps(_chain(_ingest(StoredHeads()).plan(_batch(*map(encode_json, earlier)))))
    codec = CountingCodec()
    edit = f.edited()
    plan = _ingest(StoredHeads(_stored(earlier)), codec).plan(_batch(encode_json(edit)))
    codec.counting = True
    steps = _steps(_chain(plan))
    assert steps[1] == decide(ROUTER, recorded, edit)
    assert sorted(codec.decoded) == ["action.proposed", "run.started", "source.used"]
    assert [r[1] for r in plan.rows()] == [len(recorded) + 1, len(recorded) + 2]


def test_without_a_policy_nothing_is_decided() -> None:
    ingest = Ingest(QueuedPolls(), StoredHeads(), None, clock=lambda: NOW)
    plan = ingest.plan(_batch(encode_json(f.started()), encode_json(f.proposed())))
    assert len(_chain(plan)) == 2 and plan.decided == 0
