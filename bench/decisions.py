"""Decision latency: a review recorded in the store → the platform's `wait_for_decision` returns.

    .venv/bin/python -m bench.decisions                 # 50 decisions
    .venv/bin/python -m bench.decisions --decisions 200

On one fresh stack (embedded PostgreSQL and Tansu unless RECEIPTS_DATABASE_URL /
RECEIPTS_KAFKA_BOOTSTRAP are set), with `receipts relay`'s loop in a thread: for
each decision a platform thread waits on its step (`StepHandle.wait_for_decision`),
then the review is recorded, and the time from the record's commit to the wait's
return is measured. The baseline, measured in the same run, is the floor any relay
sits on: one message produced (acks=all) and received by a waiting consumer on the
same broker. Issue 17's target: within 100 ms of the decision being recorded.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from contextlib import ExitStack

from kafka import KafkaConsumer, TopicPartition

from api.bootstrap import build_decision_relay, build_publisher, open_store
from bench.support import create_schema, prepare_process, say, start_servers
from domain.steps import Actor, StepEvent, content_hash, step_adapter
from infra.kafka import ensure_topics
from infra.kafka import producer as kafka_producer
from infra.publisher import StepHandle
from infra.settings import Settings
from schemas import encode_json

REVIEWER = Actor(kind="human", id="maria", role="sales-lead")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_round_trip(bootstrap: str, topic: str, rounds: int) -> list[float]:
    """Produce one message and time until a consumer already waiting on it has it."""
    ensure_topics(bootstrap, [topic], 1)
    producer = kafka_producer(bootstrap, linger_ms=0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.poll(timeout_ms=100)
    times = []
    for n in range(rounds):
        started = time.perf_counter()
        producer.send(topic, value=str(n).encode())
        producer.flush()
        while not any(r.value == str(n).encode() for rs in consumer.poll(timeout_ms=50).values() for r in rs):
            pass
        times.append(time.perf_counter() - started)
    producer.close()
    consumer.close()
    return times


def decision_round_trips(settings: Settings, decisions: int) -> list[float]:
    store = open_store(settings, create=True)
    relay = build_decision_relay(settings, store)
    stop = threading.Event()
    relaying = threading.Thread(target=relay.run, args=(stop.is_set,), daemon=True)
    relaying.start()
    publisher = build_publisher(settings)
    times = []
    try:
        for n in range(decisions):
            with publisher.run("lead-followup", run_id=f"bench-{n}") as run:
                step = run.propose("send_email", {"system": "gmail", "kind": "contact", "id": "a"}, "gmail")
                returned: list[float] = []
                waiter = threading.Thread(target=_wait, args=(step, returned))
                waiter.start()
                time.sleep(0.3)  # the waiter is reading its partition
                review = _review(run.run_id, step.step_id, step.current_hash, n)
                store.record([(review, encode_json(review))])
                recorded = time.perf_counter()
                waiter.join(30)
                if not returned:
                    raise RuntimeError(f"no decision for bench-{n} within 30 s")
                times.append(returned[0] - recorded)
    finally:
        stop.set()
        relaying.join(10)
        publisher.close()
        store.close()
    return times


def _review(run_id: str, step_id: str, version: str, n: int) -> StepEvent:
    review: StepEvent = step_adapter.validate_python(
        {
            "event_id": f"bench-review-{n}",
            "run_id": run_id,
            "type": "action.reviewed",
            "occurred_at": time.time(),
            "actor": REVIEWER,
            "step_id": step_id,
            "data": {"decision": "approved", "reviewed_hash": version or content_hash("")},
        }
    )
    return review


def _wait(step: StepHandle, returned: list[float]) -> None:
    step.wait_for_decision(timeout=30)
    returned.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=50)
    args = parser.parse_args()
    workdir = prepare_process()
    with ExitStack() as stack:
        base, described = start_servers(stack, workdir, Settings(partitions=4))
        assert base.kafka_bootstrap and base.database_url
        create_schema(base.database_url, "bench_decisions")
        settings = base.model_copy(update={"database_schema": "bench_decisions", "topic": "bench-steps"})
        raw = raw_round_trip(base.kafka_bootstrap, "bench-raw", args.decisions)
        say(f"raw produce -> consume: p50 {statistics.median(raw) * 1000:.1f} ms")
        measured = decision_round_trips(settings, args.decisions)
        print(f"servers: {described}")
        for name, values in (
            ("raw produce -> consume (baseline)", raw),
            ("recorded -> wait_for_decision", measured),
        ):
            p50, p99, worst = (
                x * 1000 for x in (statistics.median(values), _percentile(values, 0.99), max(values))
            )
            print(f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms (n={len(values)})")
        p99 = _percentile(measured, 0.99) * 1000
        verdict = "met" if p99 < 100 else "NOT met"
        print(
            f"target: wait_for_decision returns within 100 ms of the decision being recorded (p99): {verdict}"
        )


if __name__ == "__main__":
    main()
