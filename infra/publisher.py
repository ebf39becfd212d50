"""The publisher agent platforms use to emit steps.

    publisher = Publisher(bootstrap="127.0.0.1:9092")
    with publisher.run(workflow="lead-followup", input=lead_form, agent=..., model=...) as run:
        pricing = run.source(system="cms", kind="page", id="pricing", version="v12")
        step = run.propose(verb="send_email", target=contact, tool="gmail.send",
                           output=draft, sources=[pricing], rollback=RollbackLink(method="none"))
        step.edit(better_draft, by=maria)
        step.review("approved", by=maria)
        step.executed("sent", external_ref="msg-123")
        run.finish("sent")

Given a `signer` (its registered name and private key: `Signer.load(NAME, FILE)`),
the publisher signs each event it sends; the signature travels in Kafka headers
(`receipts-publisher`, `receipts-signature`), never inside the value.

Every event gets its id when it is created, derived from (tenant, run, sequence):
a retried send, or the same run published again after a crash, carries the same
ids, and the service records each id once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import uuid4

from domain.errors import Unavailable
from domain.step_values import Actor, Agent, InputReference, Model
from domain.steps import StepEvent
from infra.decisions import DecisionWaiter
from infra.handles import RunHandle, as_model

# The handles stay importable from here, where platforms and bench/ have always found them.
from infra.handles import StepHandle as StepHandle  # noqa: PLC0414
from infra.kafka import producer as kafka_producer
from infra.publishers import Signer
from infra.retry import Backoff
from schemas import Codec

log = logging.getLogger(__name__)


class StepProducer(Protocol):
    """What the publisher asks of a Kafka producer (kafka-python's KafkaProducer)."""

    def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


class PublishError(Unavailable, RuntimeError):
    """The broker did not accept an event after every retry."""


class Publisher:
    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = "agent-steps",
        encoding: Literal["avro", "json"] = "avro",
        tenant: str = "default",
        producer: StepProducer | None = None,
        retries: int = 5,
        codec: Codec | None = None,
        decisions: DecisionWaiter | None = None,
        signer: Signer | None = None,
    ) -> None:
        if producer is None and bootstrap is None:
            raise ValueError("give the Kafka bootstrap address (host:port) or a producer")
        self.producer = producer or kafka_producer(str(bootstrap))
        # Where the service's decisions come back (`StepHandle.wait_for_decision`).
        self.decisions = decisions or (DecisionWaiter(bootstrap, f"{topic}.decisions") if bootstrap else None)
        self.topic = topic
        self.encoding = encoding
        self.tenant = tenant
        self.retries = retries
        self.codec = codec or Codec()
        self.signer = signer
        self._pending: list[tuple[str, bytes, bytes, Any]] = []
        self.published = 0

    @contextmanager
    def run(
        self,
        workflow: str,
        input: InputReference | dict[str, Any] | None = None,
        agent: Agent | dict[str, Any] | None = None,
        model: Model | dict[str, Any] | None = None,
        actor: Actor | dict[str, Any] | None = None,
        run_id: str | None = None,
        at: datetime | None = None,
        subject: str | None = None,
    ) -> Iterator[RunHandle]:
        """Start a run; an exception inside the block finishes it as `failed`. `subject`: whose
        personal data the run carries (default: its input record, else its action's target)."""
        handle = RunHandle(
            self,
            run_id or f"run-{uuid4().hex[:12]}",
            as_model(Actor, actor) or Actor(kind="agent", id=workflow),
            subject,
        )
        handle.emit(
            "run.started", {"workflow": workflow, "input": input, "agent": agent, "model": model}, at=at
        )
        try:
            yield handle
        except BaseException as error:
            if not handle.finished:
                handle.finish("failed")
            log.warning("run %s failed: %r", handle.run_id, error)
            raise
        finally:
            self.flush()

    def publish(self, step: StepEvent) -> None:
        """Send one event; delivery is confirmed (and retried) by flush()."""
        self.send(self.topic, step.run_id.encode(), self.codec.encode(step, self.encoding))

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send bytes already encoded (e.g. a reverse event to `<topic>.reverse`), confirmed
        and retried by flush() like a step."""
        self._pending.append((topic, key, value, self._send(topic, key, value)))
        self.published += 1

    def _send(self, topic: str, key: bytes, value: bytes) -> Any:
        if self.signer is None:
            return self.producer.send(topic, key=key, value=value)
        return self.producer.send(topic, key=key, value=value, headers=self.signer.headers(value))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker has every event; re-send the same bytes on failure.

        kafka-python retries each request within its delivery timeout; this outer
        retry covers a broker away for longer than that (event ids make a re-sent
        step a duplicate, never a double)."""
        backoff = Backoff(first=0.2)
        for attempt in range(self.retries + 1):
            self.producer.flush(timeout)
            failed = [(t, k, v) for t, k, v, future in self._pending if future.failed()]
            self._pending = []
            if not failed:
                return
            if attempt == self.retries:
                raise PublishError(f"{len(failed)} event(s) not accepted after {attempt} retries")
            backoff.sleep_after_failure()
            for topic, key, value in failed:
                self._pending.append((topic, key, value, self._send(topic, key, value)))

    def close(self) -> None:
        self.flush()
        self.producer.close()
