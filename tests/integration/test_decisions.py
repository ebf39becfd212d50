"""Decisions back to the platform, on a real broker and PostgreSQL: each lane and review
decision on `<topic>.decisions` once, across SIGKILLs of the relay, and a platform that
waits for one."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from api.bootstrap import build_decision_relay, build_publisher
from domain.notices import DecisionNotice
from domain.steps import SERVICE, StepEvent
from infra.decisions import POSITION_HEADER, NoDecisionYet
from infra.kafka import producer
from infra.settings import Settings
from infra.store import RunStore
from schemas.codec import encode_json
from tests.integration.helpers import read_topic, running_store
from tests.integration.processes import IngestProcess
from tests.unit import factories as f

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        yield store


def decided_run(n: int) -> tuple[list[StepEvent], set[str]]:
    """A run with a service lane decision, a platform's own, an agent's edit and a rejection:
    the ids of the decisions the platform must be told of."""
    run_id, step = f"run-{n}", f"run-{n}/step-1"
    lane = f.policy(step, "review", run_id=run_id, source="service", by=SERVICE, decision_id=f"d-{n}")
    rejected = f.reviewed(step, "rejected", comment="wrong price", run_id=run_id)
    steps = [
        f.started(run_id=run_id),
        f.proposed(step, run_id=run_id),
        f.policy(step, "auto", run_id=run_id),  # the platform's: it knows it already
        lane,
        f.edited(step, run_id=run_id, by=f.AGENT),  # not a person's decision
        rejected,
    ]
    return steps, {lane.event_id, rejected.event_id}


def record(store: RunStore, steps: list[StepEvent]) -> None:
    store.record([(step, encode_json(step)) for step in steps])


def notices_on_topic(settings: Settings, expected: int) -> list[DecisionNotice]:
    assert settings.kafka_bootstrap
    records = read_topic(settings.kafka_bootstrap, settings.decisions_topic, expected, timeout=30)
    for record in records:
        assert record.key == DecisionNotice.model_validate_json(record.value).run_id.encode()
        assert dict(record.headers)[POSITION_HEADER].isdigit()
    return [DecisionNotice.model_validate_json(r.value) for r in records]


def test_each_decision_the_platform_needs_is_published_once(store: RunStore, settings: Settings) -> None:
    expected: set[str] = set()
    for n in range(5):
        steps, ids = decided_run(n)
        record(store, steps)
        expected |= ids
    relay = build_decision_relay(settings, store)
    relay.start()
    while relay.relay_once():
        pass
    notices = notices_on_topic(settings, len(expected))
    assert Counter(n.decision_id for n in notices) == Counter(expected)
    lanes = [n for n in notices if n.kind == "lane"]
    assert {(n.outcome, n.final, n.required_role) for n in lanes} == {("pending", False, "sales-lead")}
    # A relay started again over the same log publishes nothing more.
    again = build_decision_relay(settings, store)
    again.start()
    while again.relay_once():
        pass
    assert again.sent == 0 and len(notices_on_topic(settings, len(expected))) == len(expected)


def test_a_relay_killed_again_and_again_publishes_each_decision_once(
    store: RunStore, settings: Settings
) -> None:
    expected: set[str] = set()
    for n in range(60):
        steps, ids = decided_run(n)
        record(store, steps)
        expected |= ids
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        relay = IngestProcess(settings, command="relay", projection_page=3)
        relay.wait_for("decisions relay from log position")
        time.sleep(rng.uniform(0.05, 0.4))
        if relay.process.poll() is None:
            relay.process.kill()
            kills += 1
        relay.process.wait(10)
    last = IngestProcess(settings, command="relay", projection_page=3)
    try:
        notices = notices_on_topic(settings, len(expected))
    finally:
        last.stop(signal.SIGTERM)
    assert kills >= 3
    assert Counter(n.decision_id for n in notices) == Counter(expected)


class FlushFailsOnce:
    """A producer whose first flush delivers the page and then reports a failure: the relay
    does not know which notices arrived."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.failed = inner, False

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.send(*args, **kwargs)

    def partitions_for(self, topic: str) -> Any:
        return self.inner.partitions_for(topic)

    def flush(self, timeout: float | None = None) -> None:
        self.inner.flush(timeout)
        if not self.failed:
            self.failed = True
            raise KafkaTimeoutError("flush timed out (as the test says)")


def test_a_failed_flush_is_retried_without_publishing_twice(store: RunStore, settings: Settings) -> None:
    expected: set[str] = set()
    for n in range(8):
        steps, ids = decided_run(n)
        record(store, steps)
        expected |= ids
    assert settings.kafka_bootstrap
    flaky = FlushFailsOnce(producer(settings.kafka_bootstrap, enable_idempotence=True, linger_ms=0))
    relay = build_decision_relay(settings, store, producer_=flaky)
    stop = threading.Event()
    relaying = threading.Thread(target=relay.run, args=(stop.is_set,))
    relaying.start()
    try:
        notices = notices_on_topic(settings, len(expected))
    finally:
        stop.set()
        relaying.join(10)
    assert flaky.failed and relay.position > 0
    assert Counter(n.decision_id for n in notices) == Counter(expected)


def test_a_platform_waits_for_the_decision_on_its_step(store: RunStore, settings: Settings) -> None:
    publisher = build_publisher(settings)
    with publisher.run("lead-followup", run_id="waits") as run:
        step = run.propose("send_email", f.TARGET, "gmail.send", output=f.DRAFT)
        answers: list[DecisionNotice | BaseException] = []

        def wait() -> None:
            try:
                answers.append(step.wait_for_decision(timeout=30))
            except BaseException as error:
                answers.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        relay = build_decision_relay(settings, store)
        stop = threading.Event()
        relaying = threading.Thread(target=relay.run, args=(stop.is_set,))
        relaying.start()
        try:
            for event in (
                f.started(run_id="waits"),
                f.proposed(step.step_id, run_id="waits"),
                f.policy(step.step_id, "review", run_id="waits", source="service", by=SERVICE),
            ):
                record(store, [event])
            time.sleep(0.5)
            assert not answers, "a pending lane is not an answer"
            record(store, [f.reviewed(step.step_id, run_id="waits")])
            waiter.join(30)
        finally:
            stop.set()
            relaying.join(10)
    (answer,) = answers
    assert isinstance(answer, DecisionNotice), answer
    assert (answer.outcome, answer.final, answer.decided_by) == ("approved", True, f.REVIEWER)
    assert answer.version_hash == step.current_hash
    publisher.close()


def test_waiting_gives_up_after_the_timeout(settings: Settings, store: RunStore) -> None:
    build_decision_relay(settings, store)  # the topics exist
    publisher = build_publisher(settings)
    with publisher.run("lead-followup", run_id="nobody-decides") as run:
        step = run.propose("send_email", f.TARGET, "gmail.send", output=f.DRAFT)
        started = time.monotonic()
        with pytest.raises(NoDecisionYet, match="nobody-decides"):
            step.wait_for_decision(timeout=0.5)
        assert time.monotonic() - started < 10
    publisher.close()
