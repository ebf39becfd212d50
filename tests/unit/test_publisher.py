"""The publisher with a fake producer of our own: ids, keys, order, and retries that never duplicate."""

from __future__ import annotations

from typing import Any

import pytest

from domain.steps import ActionExecuted, ActionProposed, RunFinished, RunStarted, content_hash
from infra.publisher import Publisher, PublishError
from schemas import Codec
from tests.fakes import FakeProducer


def _publisher(producer: Any, **kw: Any) -> Publisher:
    return Publisher(producer=producer, topic="agent-steps", encoding="json", **kw)


def _publish_one_run(publisher: Publisher, run_id: str = "r-1") -> None:
    with publisher.run(
        "lead-followup", run_id=run_id, input={"system": "crm", "kind": "lead", "id": "L1"}
    ) as run:
        step = run.propose(
            "send_email", {"system": "crm", "kind": "contact", "id": "c"}, "gmail.send", output="hello"
        )
        step.executed("sent")
        run.finish("sent")


def test_events_are_keyed_by_run_and_in_order() -> None:
    producer = FakeProducer()
    _publish_one_run(_publisher(producer))
    codec = Codec()
    steps = [codec.decode(value) for _, _, value in producer.sent]
    assert [type(s) for s in steps] == [RunStarted, ActionProposed, ActionExecuted, RunFinished]
    assert {key for _, key, _ in producer.sent} == {b"r-1"}
    assert steps[2].data.executed_hash == content_hash("hello")  # type: ignore[union-attr]


def test_the_same_run_published_again_carries_the_same_event_ids() -> None:
    first, second = FakeProducer(), FakeProducer()
    _publish_one_run(_publisher(first))
    _publish_one_run(_publisher(second))
    codec = Codec()
    ids = [[codec.decode(v).event_id for _, _, v in p.sent] for p in (first, second)]
    assert ids[0] == ids[1] and len(set(ids[0])) == 4


def test_refused_sends_are_retried_with_the_same_bytes() -> None:
    producer = FakeProducer(fail_first=2)
    _publish_one_run(_publisher(producer))
    assert len(producer.sent) == 6  # 4 events, 2 of them sent twice
    assert sorted(producer.accepted) == sorted({v for _, _, v in producer.sent})


def test_a_broker_that_never_accepts_is_an_error_not_silence() -> None:
    producer = FakeProducer(fail_first=10_000)
    with pytest.raises(PublishError, match="not accepted after 2 retries"):
        _publish_one_run(_publisher(producer, retries=2))


def test_an_exception_in_the_run_finishes_it_as_failed() -> None:
    producer = FakeProducer()
    with pytest.raises(RuntimeError), _publisher(producer).run("crm-notes", run_id="r-2"):
        raise RuntimeError("the agent crashed")
    last = Codec().decode(producer.sent[-1][2])
    assert isinstance(last, RunFinished) and last.data.final_state == "failed"


def test_a_publisher_needs_somewhere_to_publish() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        Publisher()


def test_an_execution_names_the_approval_it_relied_on_once() -> None:
    producer = FakeProducer()
    maria = {"kind": "human", "id": "maria"}
    with _publisher(producer).run("lead-followup", run_id="r-3") as run:
        step = run.propose("send_email", {"system": "crm", "kind": "contact", "id": "c"}, "gmail")
        step.review("approved", by=maria)  # type: ignore[arg-type]
        step.executed("sent")
        step.executed("sent")  # a second execution: no approval left to rely on
        other = run.propose("send_email", {"system": "crm", "kind": "contact", "id": "d"}, "gmail")
        other.review("rejected", by=maria, comment="no")  # type: ignore[arg-type]
        other.executed("sent")
    steps = [Codec().decode(value) for _, _, value in producer.sent]
    approval = next(s for s in steps if s.type == "action.reviewed")
    refs = [s.data.authorization_ref for s in steps if isinstance(s, ActionExecuted)]
    assert refs == [approval.event_id, None, None]


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_a_run_can_name_whose_personal_data_it_carries(encoding: str) -> None:
    producer = FakeProducer()
    publisher = Publisher(producer=producer, topic="agent-steps", encoding=encoding)
    with publisher.run("lead-followup", run_id="r-1", subject="hubspot/contact/ada") as run:
        run.finish("sent")
    codec = Codec()
    assert [codec.decode(v).subject for _, _, v in producer.sent] == ["hubspot/contact/ada"] * 2
