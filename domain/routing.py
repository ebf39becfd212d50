"""The policy engine: route a proposed (or edited) step to a lane, and say why.

`Router(policy)` compiles the policy once (regexes compiled, field paths turned
into getters; on the first step of each (workflow, verb) pair, the rules that can
apply to it become one generated function, `domain.matcher`); `Router.evaluate` is
then a pure function of what the service knows when a step is proposed or edited,
and costs a few microseconds. `Router.explain` tries every rule, matched or not, and
says what held and what did not. `decision_step` turns a Decision into the
`policy.decided` step the service records; `decide` does both for ingest: given a
run's recorded steps and a new one, the `policy.decided` to record after it, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, NamedTuple

from domain.conditions import Condition, StepView, compile_when, field_reader, is_missing
from domain.matcher import matcher
from domain.policy import DefaultRule, Policy, Rule
from domain.step_data import PolicyDecidedData
from domain.step_values import InputReference, Lane, Source
from domain.steps import (
    SERVICE,
    ActionEdited,
    ActionProposed,
    PolicyDecided,
    RunStarted,
    SourceUsed,
    StepEvent,
)

NEEDS_A_PERSON: frozenset[str] = frozenset({"review", "escalate"})
_CACHE_LIMIT = 4096  # distinct (workflow, verb) pairs remembered
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the run had recorded when the step was proposed: its workflow, input and sources."""

    workflow: str | None = None
    input: InputReference | None = None
    sources: tuple[Source, ...] = ()
    # The run's own texts a rule looked at (input, sources), lower-cased once per context:
    # ingest keeps one context per open run, so they are built once per run, not per step.
    texts: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def of(cls, steps: Iterable[StepEvent]) -> RunContext:
        started: RunStarted | None = None
        sources: list[Source] = []
        for step in steps:
            if isinstance(step, RunStarted) and started is None:
                started = step
            elif isinstance(step, SourceUsed):
                sources.append(step.data.source)
        data = started.data if started else None
        return cls(data.workflow if data else None, data.input if data else None, tuple(sources))


class Decision(NamedTuple):
    """A lane decision (a NamedTuple: built on every proposed step, a frozen dataclass costs 1 µs more)."""

    decision_id: str
    rule_id: str
    matched_rules: tuple[str, ...]
    policy_version: str
    lane: Lane
    reasons: tuple[str, ...]
    missing_fields: tuple[str, ...]
    required_role: str | None


@dataclass(frozen=True, slots=True)
class Check:
    condition: str
    expected: str
    actual: str
    holds: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    rule_id: str
    lane: Lane
    matched: bool
    routed: bool
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[Verdict, ...]


class _Outcome(NamedTuple):
    """What a rule (or the default) yields, ready to go into a Decision as it is."""

    rule_id: str
    lane: Lane
    reasons: tuple[str, ...]
    role: str | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    outcome: _Outcome
    gate: tuple[Condition, ...]
    rest: tuple[Condition, ...]
    conditions: tuple[Condition, ...]
    missing: tuple[tuple[str, Callable[[StepView], Any]], ...] = field(default=())


class _Bucket(NamedTuple):
    """What routing needs of a (workflow, verb) pair, worked out on its first step: the rules
    whose workflow and verb conditions hold, and what the workflow's contract asks."""

    match: Callable[[StepView], list[_Compiled]]  # the rules of the bucket that match a step
    auto_is_draft: str | None  # the reason auto becomes draft_only without a recovery path
    contract_role: str | None  # the reviewer when a lane needs a person and the rule names none


class Router:
    """A policy compiled for evaluation. Build once per policy version; share freely."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.version = policy.version
        self._key_suffix = f"\x1f{self.version}"
        self._rules = tuple(self._compile(rule) for rule in policy.rules)
        self._default = _outcome(policy.default)
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _compile(self, rule: Rule) -> _Compiled:
        gate, rest = compile_when(rule.when, self.policy)
        missing = tuple((p, field_reader(p)) for p in rule.when.missing)
        return _Compiled(rule, _outcome(rule), tuple(gate), tuple(rest), (*gate, *rest), missing)

    def _bucket(self, step: StepView) -> _Bucket:
        key = (step.workflow, step.verb)
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets.clear()
            contract = self.policy.contracts.get(step.workflow)
            draft = None
            if contract and contract.needs_recovery(step.verb):
                draft = (
                    f"draft only, not auto: the {step.workflow} contract asks for a recovery "
                    f"path for '{step.verb}' and this step has no rollback method"
                )
            found = self._buckets[key] = _Bucket(
                matcher([r for r in self._rules if all(c.test(step) for c in r.gate)]),
                draft,
                contract.reviewer_role if contract else None,
            )
        return found

    def evaluate(
        self, context: RunContext, proposal: ActionProposed, edit: ActionEdited | None = None
    ) -> Decision:
        """The lane for `proposal` (as `edit` left its output, if given). Pure and idempotent:
        the decision id derives from the evaluated event's id and the policy version."""
        step = StepView(context, proposal, edit.data.output if edit else None)
        bucket = self._buckets.get((step.workflow, step.verb)) or self._bucket(step)
        return self._decide(step, edit or proposal, bucket.match(step), bucket)

    def _decide(
        self, step: StepView, about: StepEvent, matched: list[_Compiled], bucket: _Bucket
    ) -> Decision:
        rule_id, lane, reasons, role = matched[0].outcome if matched else self._default
        if lane == "auto" and bucket.auto_is_draft and step.no_recovery:
            lane = "draft_only"
            reasons = (*reasons, bucket.auto_is_draft)
        if role is None and lane in NEEDS_A_PERSON:
            role = bucket.contract_role
        missing: dict[str, None] = {}
        for compiled in matched:
            if compiled.missing:  # most rules ask for no field
                for path, get in compiled.missing:
                    if is_missing(get(step)):
                        missing[path] = None
        key = f"{about.tenant}\x1f{about.run_id}\x1f{about.event_id}{self._key_suffix}"
        # tuple.__new__: a NamedTuple's own __new__ (keywords or not) costs ~0.15 µs more, and
        # this runs on every proposed step. Positional, in field order.
        return _new_tuple(
            Decision,
            (
                "dec-" + sha256(key.encode()).hexdigest()[:32],
                rule_id,
                tuple([r.outcome.rule_id for r in matched]),
                self.version,
                lane,
                reasons,
                tuple(missing),
                role,
            ),
        )

    def explain(
        self, context: RunContext, proposal: ActionProposed, edit: ActionEdited | None = None
    ) -> Explanation:
        """Every rule, matched or not, with each condition: what it asks, what the step has."""
        step = StepView(context, proposal, edit.data.output if edit else None)
        verdicts: list[Verdict] = []
        matched: list[_Compiled] = []
        for compiled in self._rules:
            checks = tuple(
                Check(c.name, c.expected, c.actual(step), c.test(step)) for c in compiled.conditions
            )
            ok = all(c.holds for c in checks)
            if ok:
                matched.append(compiled)
            verdicts.append(
                Verdict(compiled.rule.id, compiled.rule.lane, ok, ok and len(matched) == 1, checks)
            )
        default = self.policy.default
        # The default is no rule that matches: it routes exactly when none does.
        verdicts.append(Verdict(default.id, default.lane, not matched, not matched, ()))
        return Explanation(self._decide(step, edit or proposal, matched, self._bucket(step)), tuple(verdicts))


def _outcome(rule: Rule | DefaultRule) -> _Outcome:
    return _Outcome(rule.id, rule.lane, (rule.reason,), rule.role)


def decision_step(decision: Decision, about: StepEvent) -> PolicyDecided:
    """The `policy.decided` step recording `decision` about `about` (a proposal or an edit).

    Its event id is the decision id, so recording the same decision twice is one event."""
    return PolicyDecided(
        type="policy.decided",
        event_id=decision.decision_id,
        run_id=about.run_id,
        tenant=about.tenant,
        occurred_at=about.occurred_at,
        actor=SERVICE,
        step_id=about.step_id,
        data=PolicyDecidedData(
            rule_id=decision.rule_id,
            policy_version=decision.policy_version,
            lane=decision.lane,
            reasons=decision.reasons,
            missing_fields=decision.missing_fields,
            required_role=decision.required_role,
            decision_id=decision.decision_id,
            matched_rules=decision.matched_rules,
            source="service",
        ),
    )


def to_route(
    recorded: Sequence[StepEvent], step: StepEvent
) -> tuple[ActionProposed, ActionEdited | None] | None:
    """What `step` asks the policy about, given the run's steps recorded before it: a proposal,
    or an edit with the proposal it edits; None for any other step or an edit of a step never proposed."""
    if isinstance(step, ActionProposed):
        return step, None
    if isinstance(step, ActionEdited):
        for earlier in recorded:
            if isinstance(earlier, ActionProposed) and earlier.step_id == step.step_id:
                return earlier, step
    return None


def decide(router: Router, recorded: Sequence[StepEvent], step: StepEvent) -> PolicyDecided | None:
    """The `policy.decided` the service records after `step`, given the run's steps recorded
    before it: one for an `action.proposed`, and one for each `action.edited` (an edit can add
    a pricing claim); None for any other step, or an edit of a step never proposed."""
    routed = to_route(recorded, step)
    if routed is None:
        return None
    return decision_step(router.evaluate(RunContext.of(recorded), *routed), step)


# What a stored row of a run is, by the type its header names (None: a row written before
# headers named types), for rebuilding a run's routing from its rows without decoding them all.
_CONTEXT_TYPES = frozenset({"run.started", "source.used", None})
Decode = Callable[[bytes], StepEvent | None]


@dataclass(slots=True)
class RoutingSoFar:
    """What routing needs of one open run, kept beside its head on the ingest path so a
    step is routed without re-reading the run: its first run.started, the sources it
    recorded, and each proposal by step id (an edit is routed as an edit of its proposal).

    Fed by each recorded step as it passes (`follow`). A run read back from the store
    starts with its stored rows undecoded (`stored`): the ones routing can need are
    decoded the first time a step of the run is routed, proposals only when an edit
    asks for one. What it decides matches `decide` over the same steps."""

    started: RunStarted | None = None
    sources: list[Source] = field(default_factory=list)
    proposals: dict[str | None, ActionProposed] = field(default_factory=dict)
    unread: list[bytes] = field(default_factory=list)  # stored run.started/source.used rows
    unread_proposals: list[bytes] = field(default_factory=list)
    _context: RunContext | None = None

    def stored(self, step_type: str | None, wire: bytes) -> None:
        """A row read back from the store (in version order), kept undecoded for now."""
        if step_type in _CONTEXT_TYPES:
            self.unread.append(wire)
        elif step_type == "action.proposed":
            self.unread_proposals.append(wire)

    def follow(self, step: StepEvent) -> None:
        """A step just recorded on the run."""
        if isinstance(step, ActionProposed):
            self.proposals.setdefault(step.step_id, step)
        elif isinstance(step, SourceUsed):
            self.sources.append(step.data.source)
            self._context = None
        elif isinstance(step, RunStarted) and self.started is None:
            self.started = step
            self._context = None

    def decide(self, router: Router, step: StepEvent, decode: Decode) -> PolicyDecided | None:
        """The `policy.decided` to record right after `step` (already followed), if any."""
        if isinstance(step, ActionProposed):
            proposal, edit = step, None
        elif isinstance(step, ActionEdited):
            found = self._proposal(step.step_id, decode)
            if found is None:
                return None
            proposal, edit = found, step
        else:
            return None
        return decision_step(router.evaluate(self.context(decode), proposal, edit), step)

    def context(self, decode: Decode) -> RunContext:
        if self.unread:
            self._read_stored(decode)
        if self._context is None:
            data = self.started.data if self.started else None
            self._context = RunContext(
                data.workflow if data else None, data.input if data else None, tuple(self.sources)
            )
        return self._context

    def _read_stored(self, decode: Decode) -> None:
        """Put the stored run.started and sources before those followed since."""
        unread, self.unread = self.unread, []
        earlier = RoutingSoFar()
        for wire in unread:
            step = decode(wire)
            if step is not None:
                earlier.follow(step)  # a row of unknown type may be a proposal too
        self.started = earlier.started or self.started
        self.sources[:0] = earlier.sources
        self._merge_earlier(earlier.proposals)
        self._context = None

    def _proposal(self, step_id: str | None, decode: Decode) -> ActionProposed | None:
        if self.unread:
            self._read_stored(decode)
        if self.unread_proposals:
            unread, self.unread_proposals = self.unread_proposals, []
            earlier: dict[str | None, ActionProposed] = {}
            for wire in unread:
                step = decode(wire)
                if isinstance(step, ActionProposed):
                    earlier.setdefault(step.step_id, step)
            self._merge_earlier(earlier)
        return self.proposals.get(step_id)

    def _merge_earlier(self, earlier: dict[str | None, ActionProposed]) -> None:
        # The first proposal of a step id is the one an edit edits (as in `to_route`).
        if earlier:
            for step_id, proposal in self.proposals.items():
                earlier.setdefault(step_id, proposal)
            self.proposals = earlier
