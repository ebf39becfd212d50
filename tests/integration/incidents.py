"""Test data for the incident questions: the demo, plus generated runs whose
every attribute follows from their number, so a test can compute the expected
answer to any query without asking the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.demo import publish_demo
from infra.publisher import Publisher
from infra.store import RunStore
from tests.fakes import FakeProducer

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WORKFLOWS = ("lead-followup", "support-triage", "crm-notes")
REVIEWERS = ("ana", "ben", "chi")


@dataclass(frozen=True)
class Generated:
    """Run number n of the generated set."""

    n: int

    @property
    def run_id(self) -> str:
        return f"gen-{self.n:03d}"

    @property
    def workflow(self) -> str:
        return WORKFLOWS[self.n % 3]

    @property
    def started_at(self) -> datetime:
        return T0 + timedelta(minutes=self.n)

    @property
    def contact(self) -> str:
        return f"c-{self.n % 7}"

    @property
    def page_version(self) -> str:
        return f"v{self.n % 4}"

    @property
    def reviewer(self) -> str | None:
        return None if self.n % 5 == 4 else REVIEWERS[self.n % 3]

    @property
    def agent(self) -> str:
        return f"agent-{self.n % 2}"

    @property
    def model(self) -> str:
        return ("claude", "gpt", "gemini")[self.n % 3]

    @property
    def finished(self) -> bool:
        return self.n % 6 != 5

    @property
    def executed(self) -> bool:
        return self.n % 4 != 3

    def publish(self, publisher: Publisher) -> None:
        at = self.started_at
        model = {"provider": "acme", "name": self.model, "version": "1"}
        with publisher.run(
            self.workflow,
            run_id=self.run_id,
            at=at,
            input={"system": "hubspot", "kind": "form", "id": f"lead-{self.n:03d}"},
            agent={"name": self.agent, "version": "1"},
            model=model,
        ) as run:
            page = run.source(
                "cms",
                "page",
                "pricing",
                version=self.page_version,
                at=at,
                retrieved_at=at - timedelta(minutes=1),
            )
            step = run.propose(
                "send_email",
                {"system": "hubspot", "kind": "contact", "id": self.contact},
                "gmail.send",
                output=f"Hello {self.n}",
                confidence=0.9,
                sources=[page],
                rollback={"method": "none", "runbook": "send a correction"},
                at=at + timedelta(seconds=1),
            )
            step.policy("outbound-email", "p1", "review", at=at + timedelta(seconds=2))
            if self.reviewer:
                by = {"kind": "human", "id": self.reviewer}
                step.review("approved", by=by, at=at + timedelta(seconds=3))  # type: ignore[arg-type]
            if self.executed:
                step.executed("sent", at=at + timedelta(seconds=4))
            if self.finished:
                run.finish("sent" if self.executed else "held", at=at + timedelta(seconds=5))


GENERATED = [Generated(n) for n in range(36)]


def record(
    store: RunStore, publish: Callable[[Publisher], object], encoding: str = "avro", tenant: str = "default"
) -> int:
    """Publish through the real publisher into a fake producer, and record what it sent."""
    producer = FakeProducer()
    publisher = Publisher(producer=producer, encoding=encoding, tenant=tenant)  # type: ignore[arg-type]
    publish(publisher)
    publisher.flush()
    return store.record((store.codec.decode(value), value) for value in producer.accepted)


def record_incidents(store: RunStore) -> int:
    """The demo and every generated run; returns how many events were recorded."""
    recorded = record(store, lambda p: publish_demo(p, now=T0 + timedelta(days=2)))
    return recorded + record(store, lambda p: [g.publish(p) for g in GENERATED], encoding="json")
