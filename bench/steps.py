"""Realistic agent steps for the benchmarks: runs of 5-30 steps across the four
lanes, interleaved, built once as models and encoded once per encoding."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid5

from bench.support import EVENT_NAMESPACE, TENANT
from domain.steps import StepEvent, content_hash, step_adapter
from schemas import Codec

# --- realistic steps -----------------------------------------------------------

_VOCABULARY = (
    "the customer asked about annual pricing for a team of forty and whether single sign-on is "
    "included we can offer the business plan billed yearly with a discount if they sign before the "
    "end of the quarter please confirm the number of seats and the renewal date invoice export "
    "failed twice last week support ticket escalated to billing owner account manager follow up "
    "meeting on thursday draft reply attached policy requires review for outbound email with prices "
    "refund requested within thirty days onboarding checklist integration with salesforce and "
    "hubspot sync contact record updated note from call prospect may be ready next week not an "
    "approved rollout page headline changed hero image alt text updated legal footer copyright year "
    "webhook retried after timeout rate limit exceeded retry scheduled deployment preview link "
    "staging environment approved by web owner revert commit available rollback runbook linked"
)
WORDS = tuple(_VOCABULARY.split())
FIRST_NAMES = ("Dana", "Ana", "Sam", "Lee", "Priya", "Jonas", "Mei", "Omar", "Lucia", "Tom")
COMPANIES = ("bigco", "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark")
REVIEWERS = (
    ("maria@acme.example", "sales-lead"),
    ("sam@acme.example", "support-lead"),
    ("dev@acme.example", "web-owner"),
    ("kim@acme.example", "account-manager"),
)
MODEL = {"provider": "anthropic", "name": "claude-sonnet", "version": "4.5"}


@dataclass(frozen=True)
class Lane:
    workflow: str
    bot: str
    input_system: str
    input_kind: str
    verb: str
    tool: str
    target_system: str
    target_kind: str
    executed_state: str
    rule: str


LANES = (
    Lane(
        "lead-followup",
        "lead-bot",
        "hubspot",
        "form_submission",
        "send_email",
        "gmail.send",
        "hubspot",
        "contact",
        "sent",
        "outbound-email-review",
    ),
    Lane(
        "support-triage",
        "triage-bot",
        "zendesk",
        "ticket",
        "route_ticket",
        "zendesk.update",
        "zendesk",
        "ticket",
        "routed",
        "cancellation-escalates",
    ),
    Lane(
        "pricing-update",
        "web-bot",
        "jira",
        "issue",
        "update_page",
        "cms.publish",
        "cms",
        "page",
        "published",
        "public-page-review",
    ),
    Lane(
        "crm-note",
        "notes-bot",
        "gong",
        "call",
        "write_note",
        "salesforce.update",
        "salesforce",
        "account",
        "written",
        "crm-claims-review",
    ),
)

# One proposed action and what followed it; weights are how often each happens.
CYCLES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("approved", ("action.proposed", "policy.decided", "action.reviewed", "action.executed"), 22),
    (
        "edited",
        ("action.proposed", "policy.decided", "action.edited", "action.reviewed", "action.executed"),
        40,
    ),
    ("held", ("action.proposed", "policy.decided", "action.held"), 8),
    ("auto", ("action.proposed", "policy.decided", "action.executed"), 10),
    (
        "reverted",
        (
            "action.proposed",
            "policy.decided",
            "action.reviewed",
            "action.executed",
            "rollback.requested",
            "action.reverted",
        ),
        8,
    ),
    ("rejected", ("action.proposed", "policy.decided", "action.reviewed"), 8),
    ("failed", ("action.proposed", "policy.decided", "action.reviewed", "action.failed"), 6),
)
FINAL_STATE = {
    "approved": "sent",
    "edited": "edited",
    "held": "held",
    "auto": "sent",
    "reverted": "reverted",
    "rejected": "rejected",
    "failed": "failed",
}


class StepFactory:
    """Runs of 5-30 steps, as the four lanes publish them, interleaved like concurrent agents.

    Deterministic for a seed. Each step is a domain model (`StepEvent`)."""

    def __init__(self, seed: int, prefix: str, open_runs: int, output_bytes: int = 600) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.open_runs = open_runs
        self.output_bytes = output_bytes
        self.t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self.runs: dict[str, int] = {}  # run_id -> number of steps

    def text(self, size: int) -> str:
        words: list[str] = []
        length = 0
        while length < size:
            chunk = self.rng.choices(WORDS, k=12)
            words.extend(chunk)
            length += sum(len(w) + 1 for w in chunk)
        out = " ".join(words)[:size]
        return out[0].upper() + out[1:] + "."

    def lengths(self, events: int) -> list[int]:
        """Run lengths in 5..30 (more short runs than long ones) summing to exactly `events`."""
        lengths: list[int] = []
        left = events
        while left > 0:
            n = min(left, 5 + int(25 * self.rng.random() ** 1.6))
            if 0 < left - n < 5:  # no runs shorter than 5 at the end
                n = left - 5 if left - 5 >= 5 else left
            lengths.append(n)
            left -= n
        return lengths

    def steps(self, events: int) -> Iterator[StepEvent]:
        """`events` steps in publish order: up to `open_runs` runs in progress at once."""
        pending = iter(enumerate(self.lengths(events)))
        active: list[Iterator[StepEvent]] = []
        clock = itertools.count()
        for _ in range(self.open_runs):
            nxt = next(pending, None)
            if nxt is None:
                break
            active.append(self._run(nxt[0], nxt[1], clock))
        while active:
            i = self.rng.randrange(len(active))
            step = next(active[i], None)
            if step is not None:
                yield step
                continue
            nxt = next(pending, None)
            if nxt is None:
                active[i] = active[-1]
                active.pop()
            else:
                active[i] = self._run(nxt[0], nxt[1], clock)

    def _plan(self, length: int) -> list[tuple[str, str]]:
        if length < 5:  # only when fewer than 5 events are asked for
            return [("run.started", "")] + [("source.used", "")] * (length - 1)
        sources = self.rng.randint(1, min(4, length - 3))
        plan = [("run.started", "")] + [("source.used", "")] * sources
        body = length - 2 - sources
        names = [c[0] for c in CYCLES]
        weights = [c[2] for c in CYCLES]
        kinds = {c[0]: c[1] for c in CYCLES}
        last = "approved"
        while body > 0:
            last = self.rng.choices(names, weights)[0]
            cycle = kinds[last][:body]
            plan.extend((kind, last) for kind in cycle)
            body -= len(cycle)
        plan.append(("run.finished", last))
        return plan

    def _run(self, number: int, length: int, clock: Iterator[int]) -> Iterator[StepEvent]:
        rng = self.rng
        lane = LANES[number % len(LANES)]
        run_id = f"{self.prefix}-{number:07d}-{lane.workflow}"
        self.runs[run_id] = length
        bot = {"kind": "agent", "id": lane.bot, "role": "drafter"}
        reviewer_id, role = rng.choice(REVIEWERS)
        reviewer = {"kind": "human", "id": reviewer_id, "role": role}
        policy = {"kind": "system", "id": "policy-engine"}
        state: dict[str, Any] = {"step": 0, "hash": "", "output": "", "sources": []}
        for sequence, (kind, variant) in enumerate(self._plan(length), start=1):
            data, actor = self._data(kind, variant, lane, run_id, state, bot, reviewer, policy)
            at = self.t0 + timedelta(milliseconds=10 * next(clock))
            yield step_adapter.validate_python(
                {
                    "event_id": str(uuid5(EVENT_NAMESPACE, f"{TENANT}/{run_id}/{sequence}")),
                    "run_id": run_id,
                    "tenant": TENANT,
                    "type": kind,
                    "occurred_at": at,
                    "actor": actor,
                    "step_id": None
                    if kind in ("run.started", "source.used", "run.finished")
                    else f"{run_id}/step-{state['step']}",
                    "data": data,
                }
            )

    def _data(
        self,
        kind: str,
        variant: str,
        lane: Lane,
        run_id: str,
        state: dict[str, Any],
        bot: dict[str, Any],
        reviewer: dict[str, Any],
        policy: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = self.rng
        name = rng.choice(FIRST_NAMES)
        company = rng.choice(COMPANIES)
        ref = f"{lane.input_kind[:3]}-{rng.randrange(10**6):06d}"
        if kind == "run.started":
            return {
                "workflow": lane.workflow,
                "input": {
                    "system": lane.input_system,
                    "kind": lane.input_kind,
                    "id": ref,
                    "uri": f"https://{lane.input_system}.example/{lane.input_kind}/{ref}",
                    "hash": content_hash(ref),
                },
                "agent": {"name": lane.bot, "version": f"2.{rng.randrange(9)}.{rng.randrange(20)}"},
                "model": MODEL,
            }, bot
        if kind == "source.used":
            source_id = f"src-{rng.randrange(10**6):06d}"
            state["sources"].append(source_id)
            excerpt = self.text(rng.randint(500, 1400))
            return {
                "source": {
                    "system": rng.choice(("cms", "stripe", "zendesk", "hubspot", "gdrive")),
                    "kind": rng.choice(("page", "customer", "ticket", "doc")),
                    "id": source_id,
                    "version": f"v{rng.randrange(1, 40)}",
                    "uri": f"https://docs.example/{source_id}",
                    "retrieved_at": self.t0.isoformat(),
                    "excerpt": excerpt,
                    "hash": content_hash(excerpt),
                }
            }, bot
        if kind == "action.proposed":
            state["step"] += 1
            body = self.text(rng.randint(self.output_bytes * 3 // 4, self.output_bytes * 5 // 4))
            output = f"Hi {name},\n\n{body}\n\nBest,\nAcme"
            state["output"], state["hash"] = output, content_hash(output)
            target_id = f"{name.lower()}-{company}-{rng.randrange(10**4):04d}"
            return {
                "action": {
                    "verb": lane.verb,
                    "tool": lane.tool,
                    "target": {
                        "system": lane.target_system,
                        "kind": lane.target_kind,
                        "id": target_id,
                        "uri": f"https://{lane.target_system}.example/{target_id}",
                    },
                    "params": {
                        "to": f"{name.lower()}@{company}.example",
                        "subject": self.text(40),
                        "cc": [f"owner@{company}.example"],
                        "template": f"{lane.workflow}-v3",
                        "locale": rng.choice(("en-US", "en-GB", "de-DE")),
                        "priority": "normal",
                    },
                    "output": output,
                    "output_hash": state["hash"],
                },
                "signal": {
                    "confidence": round(rng.uniform(0.4, 0.99), 2),
                    "reason_code": f"{lane.workflow}.qualified",
                    "flags": ["cancellation_keyword"] if rng.random() < 0.1 else [],
                },
                "source_ids": state["sources"][-2:],
                "rollback": {
                    "method": rng.choice(("none", "revert", "correct")),
                    "runbook": f"https://wiki.example/undo/{lane.verb}",
                },
            }, bot
        if kind == "policy.decided":
            lane_name = {"auto": "auto", "held": "draft_only"}.get(variant, "review")
            return {
                "rule_id": lane.rule,
                "policy_version": "2026-11-01",
                "lane": lane_name,
                "reasons": [self.text(rng.randint(40, 120)) for _ in range(rng.randint(1, 4))],
                "missing_fields": [],
                "required_role": None if lane_name == "auto" else reviewer["role"],
            }, policy
        if kind == "action.edited":
            cut = len(state["output"]) // 2
            output = state["output"][:cut] + " " + self.text(len(state["output"]) - cut)
            base, state["output"], state["hash"] = state["hash"], output, content_hash(output)
            return {"output": output, "output_hash": state["hash"], "base_hash": base}, reviewer
        if kind == "action.reviewed":
            decision = "rejected" if variant == "rejected" else "approved"
            return {
                "decision": decision,
                "reviewed_hash": state["hash"],
                "comment": self.text(rng.randint(60, 400)),
            }, reviewer
        if kind == "action.held":
            return {"reason": self.text(60), "missing_fields": ["contact.consent"]}, policy
        if kind == "action.executed":
            return {
                "executed_hash": state["hash"],
                "state": lane.executed_state,
                "external_ref": f"{lane.tool}-{rng.randrange(16**8):08x}",
                "url": f"https://{lane.target_system}.example/r/{rng.randrange(10**6)}",
            }, bot
        if kind == "action.failed":
            return {"error": f"{lane.tool}: 503 Service Unavailable; {self.text(80)}"}, bot
        if kind == "rollback.requested":
            return {"reason": self.text(80), "scope": "step"}, reviewer
        if kind == "action.reverted":
            return {
                "method": "revert",
                "reverse_ref": f"commit {rng.randrange(16**7):07x}",
                "note": self.text(60),
            }, bot
        if kind == "run.finished":
            return {"final_state": FINAL_STATE.get(variant, "sent")}, bot
        raise ValueError(kind)


@dataclass
class Dataset:
    keys: list[bytes]
    values: dict[str, list[bytes]]
    runs: dict[str, int]
    seconds: float

    def sizes(self, encoding: str) -> tuple[float, int, int]:
        values = self.values[encoding]
        lengths = [len(v) for v in values]
        return sum(lengths) / len(lengths), min(lengths), max(lengths)


def build_dataset(events: int, seed: int, open_runs: int, encodings: Sequence[str]) -> Dataset:
    """Build every step once as a model and encode it once per encoding (outside any timing)."""
    factory = StepFactory(seed, f"bench-{seed}", open_runs)
    codec = Codec()
    keys: list[bytes] = []
    values: dict[str, list[bytes]] = {e: [] for e in encodings}
    start = time.perf_counter()
    for step in factory.steps(events):
        keys.append(step.run_id.encode())
        for encoding in encodings:
            values[encoding].append(codec.encode(step, encoding))
    return Dataset(keys, values, factory.runs, time.perf_counter() - start)
