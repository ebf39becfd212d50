"""`receipts policy explain RUN/STEP` and `receipts policy test FILE` over the recorded runs.

`explain` reads one recorded run and shows every rule of the policy the step was
decided by (the version its recorded `policy.decided` names; a step the service
never decided: the policy in force when the step was recorded), matched or not,
and why. `test` without a JSONL file is a dry run of a candidate policy over every
step in the event store, read in recording order (`--since`: only the steps
proposed or edited since then are counted).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from api.auth import cli_admin, cli_principal
from api.incident_cli import add_tenant
from api.policy_admin import given, reader, settings_of
from api.policy_text import explained as explained_text
from api.policy_text import explanation_json
from domain.policy import Policy
from domain.routing import Explanation, Router, RunContext, to_route
from domain.run import Entry
from domain.steps import ActionEdited, ActionProposed, PolicyDecided, StepEvent, decision_source
from domain.trial import Trial, trial
from infra.policies import NoPolicy
from infra.sealing import open_step
from infra.store import RunNotFound, RunStore
from infra.subject_keys import KeyRing
from projections.log import EventLog
from projections.review import StepNotFound, splits

_PAGE = 1000  # log rows read per query by `test`


@dataclass(frozen=True, slots=True)
class Explained:
    """A recorded step explained: by which policy (and where that came from), and what the
    service recorded when it decided it (None: it never did)."""

    step: StepEvent
    explanation: Explanation
    policy_from: str  # "the recorded decision" or "in force at <time>"
    recorded: PolicyDecided | None


def explain_recorded(store: RunStore, tenant: str, reference: str) -> Explained:
    """`reference` is RUN/STEP: STEP is a step id, the event id of a proposal or an edit, or a
    service decision's id. Run ids and step ids may hold '/' themselves (step ids often are
    RUN/step-N): every split is tried, and STEP may also be the whole reference."""
    if "/" not in reference:
        raise StepNotFound(f"'{reference}' is not RUN/STEP (a run id, '/', a step id or event id)")
    for run_id, step in splits(reference):
        try:
            entries = store.run(tenant, run_id).entries
        except RunNotFound:
            continue
        for candidate in (step, reference):
            at = _routed_at(entries, candidate)
            if at is not None:
                return _explain(store, entries, at)
        raise StepNotFound(
            f"run '{run_id}' has no proposed or edited step '{step}' (a step id, or the event id "
            "of its action.proposed, action.edited or the service's policy.decided)"
        )
    raise RunNotFound(tenant, reference.split("/", 1)[0])


def _routed_at(entries: Sequence[Entry], reference: str) -> int | None:
    """Where the step `reference` names was last proposed or edited (an event id names one)."""
    steps = [e.step for e in entries]
    by_event = next((i for i, s in enumerate(steps) if s.event_id == reference), None)
    if by_event is not None:
        step = steps[by_event]
        if isinstance(step, ActionProposed | ActionEdited):
            return by_event
        if not isinstance(step, PolicyDecided) or step.step_id is None:
            return None
        reference, steps = step.step_id, steps[:by_event]  # the step that decision was about
    return next(
        (
            i
            for i in range(len(steps) - 1, -1, -1)
            if steps[i].step_id == reference and isinstance(steps[i], ActionProposed | ActionEdited)
        ),
        None,
    )


def _explain(store: RunStore, entries: Sequence[Entry], at: int) -> Explained:
    steps = [e.step for e in entries]
    step = steps[at]
    routed = to_route(steps[:at], step)
    if routed is None:
        raise StepNotFound(
            f"the edit '{step.event_id}' of step '{step.step_id}' has no action.proposed before it"
        )
    recorded = _decision_about(steps, at)
    policy: Policy | None = store.recorded_policy(recorded.data.policy_version) if recorded else None
    policy_from = "the recorded decision"
    if policy is None:
        recorded_at = entries[at].recorded_at
        try:
            policy = store.policy_in_force(recorded_at).policy()
        except NoPolicy:
            version = f"version {recorded.data.policy_version} is not recorded, and " if recorded else ""
            raise NoPolicy(
                f"no policy to explain '{step.event_id}' by: {version}none was in force when it was "
                f"recorded ({recorded_at.isoformat()})"
            ) from None
        policy_from = f"in force at {recorded_at.isoformat()}"
    explanation = Router(policy).explain(RunContext.of(steps[:at]), *routed)
    return Explained(step, explanation, policy_from, recorded)


def _decision_about(steps: Sequence[StepEvent], at: int) -> PolicyDecided | None:
    """The service's decision about steps[at]: recorded after it, before the step's next version."""
    about = steps[at].step_id
    for step in steps[at + 1 :]:
        if step.step_id != about:
            continue
        if isinstance(step, ActionProposed | ActionEdited):
            return None
        if isinstance(step, PolicyDecided) and decision_source(step) == "service":
            return step
    return None


def explain_lines(explained: Explained) -> list[str]:
    """What `explain` adds above the explanation: where the policy came from, and the recorded
    decision when it is not what the policy says now (a table altered, a bug fixed since)."""
    d, recorded = explained.explanation.decision, explained.recorded
    lines = [f"policy {d.policy_version} ({explained.policy_from})"]
    if recorded is None:
        lines.append("the service recorded no decision about this step")
    elif (recorded.data.lane, recorded.data.rule_id) != (d.lane, d.rule_id):
        lines.append(
            f"NOTE: the recorded decision {recorded.event_id} says {recorded.data.lane} by rule "
            f"{recorded.data.rule_id}; the policy says {d.lane} by rule {d.rule_id}"
        )
    return lines


def trial_recorded(settings: object, candidate: Policy, since: datetime | None, examples: int) -> Trial:
    """The dry run of `candidate` over every recorded step, in recording order. Every
    tenant's steps: administration (the `admin` role, or database access)."""
    resolved = settings_of(settings)
    store = reader(resolved)
    try:
        cli_admin(given(settings), store)
        log = EventLog(resolved.database_schema, store.steps.events_table_name, store.codec)
        with store.steps.datastore.transaction(commit=False) as curs:
            curs.row_factory = tuple_row  # type: ignore[assignment]  # as the projections read the log
            steps = _recorded(log, curs, store.steps.keyring)
            return trial(Router(candidate), steps, examples=examples, since=since)
    finally:
        store.close()


def _recorded(log: EventLog, curs: psycopg.Cursor[Any], keys: KeyRing) -> Iterator[StepEvent]:
    """The recorded steps with their personal fields opened (rules match words in outputs);
    an erased subject's read as erased, as a receipt shows them."""
    position = 0
    while True:
        page = log.after(curs, position, _PAGE)
        for recorded in page.steps:
            step = recorded.entry.step
            yield open_step(step, keys.key_of(step.tenant, step.subject)) if step.subject else step
        if page.end == position:
            return
        position = page.end


def cmd_explain(settings: object, args: argparse.Namespace) -> int:
    resolved = settings_of(settings)
    store = reader(resolved)
    try:
        # The caller's own tenant: a run of another is unknown to it.
        tenant = cli_principal(resolved, store).tenant_for(args.tenant)
        explained = explain_recorded(store, tenant, args.step)
    finally:
        store.close()
    if args.json:
        document = explanation_json(explained.explanation, explained.step)
        document["policy_from"] = explained.policy_from
        document["recorded"] = explained.recorded.data.model_dump(mode="json") if explained.recorded else None
        print(json.dumps(document, indent=2))
    else:
        print("\n".join([*explain_lines(explained), *explained_text(explained.explanation, explained.step)]))
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = commands.add_parser(
        "explain",
        help="a recorded step: every rule of the policy it was decided by, matched or not, and why",
        description="RUN/STEP: a run id, then a step id or the event id of its action.proposed, "
        "action.edited or policy.decided. The policy is the version the service's recorded "
        "decision names; for a step the service never decided, the one in force when it was recorded.",
    )
    explain.add_argument("step", metavar="RUN/STEP")
    add_tenant(explain)
    explain.add_argument("--json", action="store_true", help="the step, the decision and every rule as JSON")
    explain.set_defaults(func=cmd_explain)
