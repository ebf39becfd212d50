"""A dry run of a candidate policy over recorded steps, before it is published.

For every proposed step in the record, what the candidate would decide (on the
step's last version: proposal, then each edit in order) against the decision
recorded for it (the service's when there is one, else the platform's): how many
would change lane, which way, with examples. `since`: only steps proposed or edited
at or after it count (their runs' earlier steps still give them their context).
Pure: the caller reads the events (a JSONL file, or the event store) and passes
them in recording order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from domain.routing import Decision, Router, RunContext
from domain.step_values import InputReference, Lane, Source
from domain.steps import (
    ActionEdited,
    ActionProposed,
    PolicyDecided,
    RunStarted,
    SourceUsed,
    StepEvent,
    decision_source,
)


@dataclass(frozen=True, slots=True)
class LaneChange:
    tenant: str
    run_id: str
    step_id: str
    recorded_lane: Lane
    recorded_rule: str
    recorded_by: str  # service or platform
    lane: Lane
    rule_id: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Trial:
    policy_version: str
    runs: int
    proposed: int  # proposed steps in the record
    compared: int  # of them, with a recorded decision to compare with
    changed: int  # of those, a different lane under the candidate
    undecided: int  # proposed steps with no recorded decision
    transitions: tuple[tuple[Lane, Lane, int], ...]  # (recorded lane, candidate lane, steps), most first
    examples: tuple[LaneChange, ...]
    since: datetime | None = None

    @property
    def unchanged(self) -> int:
        return self.compared - self.changed


@dataclass(slots=True)
class _Run:
    workflow: str | None = None
    input: InputReference | None = None
    sources: list[Source] = field(default_factory=list)
    proposals: dict[str, ActionProposed] = field(default_factory=dict)
    candidate: dict[str, Decision] = field(default_factory=dict)
    service: dict[str, PolicyDecided] = field(default_factory=dict)
    platform: dict[str, PolicyDecided] = field(default_factory=dict)
    recent: set[str] = field(default_factory=set)  # steps proposed or edited since `since`

    def context(self) -> RunContext:
        return RunContext(self.workflow, self.input, tuple(self.sources))


def trial(
    router: Router, events: Iterable[StepEvent], examples: int = 5, since: datetime | None = None
) -> Trial:
    runs: dict[tuple[str, str], _Run] = {}
    for event in events:
        run = runs.setdefault((event.tenant, event.run_id), _Run())
        _follow(router, run, event)
        step_id = event.step_id
        if (
            step_id is not None
            and event.type in _ROUTED
            and step_id in run.candidate
            and (since is None or event.occurred_at >= since)
        ):
            run.recent.add(step_id)
    transitions: Counter[tuple[Lane, Lane]] = Counter()
    shown: list[LaneChange] = []
    proposed = compared = undecided = 0
    for (tenant, run_id), run in runs.items():
        for step_id, decision in run.candidate.items():
            if step_id not in run.recent:
                continue
            proposed += 1
            recorded = run.service.get(step_id) or run.platform.get(step_id)
            if recorded is None:
                undecided += 1
                continue
            compared += 1
            if recorded.data.lane == decision.lane:
                continue
            transitions[(recorded.data.lane, decision.lane)] += 1
            if len(shown) < examples:
                shown.append(
                    LaneChange(
                        tenant,
                        run_id,
                        step_id,
                        recorded.data.lane,
                        recorded.data.rule_id,
                        decision_source(recorded),
                        decision.lane,
                        decision.rule_id,
                        decision.reasons,
                    )
                )
    return Trial(
        policy_version=router.version,
        runs=len(runs) if since is None else sum(1 for run in runs.values() if run.recent),
        proposed=proposed,
        compared=compared,
        changed=sum(transitions.values()),
        undecided=undecided,
        transitions=tuple((a, b, n) for (a, b), n in transitions.most_common()),
        examples=tuple(shown),
        since=since,
    )


_ROUTED = frozenset({"action.proposed", "action.edited"})


def _follow(router: Router, run: _Run, event: StepEvent) -> None:
    match event:
        case RunStarted(data=d) if run.workflow is None:
            run.workflow, run.input = d.workflow, d.input
        case SourceUsed(data=d):
            run.sources.append(d.source)
        case ActionProposed(step_id=str(step_id)) if step_id not in run.proposals:
            run.proposals[step_id] = event
            run.candidate[step_id] = router.evaluate(run.context(), event)
        case ActionEdited(step_id=str(step_id)) if step_id in run.proposals:
            run.candidate[step_id] = router.evaluate(run.context(), run.proposals[step_id], event)
        case PolicyDecided(step_id=str(step_id)):
            side = run.service if decision_source(event) == "service" else run.platform
            side[step_id] = event
        case _:
            pass
