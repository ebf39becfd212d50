"""What the incident-review questions take and give back: the run filters, the pages of
runs, findings, touches and related runs, and the error for an event not applied yet.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from domain.errors import Unavailable
from domain.evidence import Finding
from projections.bounds import Answer, Cursor, Instant, Text

FindingCode = Text


class NotYetApplied(Unavailable, TimeoutError):
    title = "Event not applied yet"
    retry_after = 1

    def __init__(self, event_id: str, run_id: str, waited: float) -> None:
        super().__init__(
            f"event '{event_id}' is not in the receipt of run '{run_id}' after "
            f"{waited:.1f} s; the projections have not applied it yet (or it was "
            "never recorded: a dead-lettered or unpublished event never arrives)"
        )


class RunQuery(Answer):
    """What `GET /runs` asks. The tenant is the caller's: naming another is refused."""

    tenant: Text | None = Field(
        default=None, description="optional: the caller's own tenant (the token decides it)"
    )
    workflow: Text | None = None
    final_state: Text | None = None
    finding: FindingCode | None = None
    reviewer: Text | None = None
    agent: Text | None = None
    model: Text | None = None
    since: Instant | None = Field(None, description="runs started at or after (RFC 3339)")
    until: Instant | None = Field(None, description="runs started before (RFC 3339)")
    text: Text | None = Field(None, description="text in the input reference (system/kind/id)")
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


class RunFilter(RunQuery):
    """A `RunQuery` in a tenant, decided."""

    tenant: Text = "default"


class RunSummary(Answer):
    run_id: str
    tenant: str
    workflow: str | None
    input_ref: str | None
    input_uri: str | None
    agent: str | None
    agent_version: str | None
    model: str | None
    model_provider: str | None
    model_version: str | None
    started_at: datetime
    finished_at: datetime | None
    last_recorded: datetime
    final_state: str | None
    steps: int
    events: int
    findings: int
    finding_codes: list[str]
    reviewers: list[str]
    integrity_head: str | None
    verified: bool


class RunsPage(Answer):
    runs: list[RunSummary]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class Touch(Answer):
    step_id: str
    verb: str
    state: str
    at: datetime
    event_id: str


class Use(Answer):
    step_id: str | None
    version: str | None
    retrieved_at: datetime | None
    used_at: datetime
    event_id: str


class RelatedRun(Answer):
    run_id: str
    workflow: str | None
    final_state: str | None
    started_at: datetime | None
    touches: list[Touch] = []
    uses: list[Use] = []


class RelatedRuns(Answer):
    tenant: str
    system: str
    kind: str
    id: str
    version: str | None = None
    runs: list[RelatedRun]


class RunFinding(Answer):
    run_id: str
    workflow: str | None
    started_at: datetime
    finding: Finding


class FindingsPage(Answer):
    findings: list[RunFinding]
    next_cursor: str | None = None
