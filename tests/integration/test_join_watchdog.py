"""An ingest consumer whose group never completes its join says so, loudly.

On the embedded broker (Tansu 0.6), a group wedges when a member that holds
partitions does not rejoin during a rebalance: every later JoinGroup answers
with the same generation and every SyncGroup with "rebalance in progress", even
after that member left and even for brand-new members. Here the member that
never rejoins is a consumer that stops polling after its assignment."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from kafka import KafkaConsumer

from infra.kafka import ensure_topics
from infra.settings import Settings
from schemas import encode_json
from tests.integration.helpers import finished_step, incidents, publish_raw, stored_rows
from tests.integration.processes import IngestProcess

pytestmark = pytest.mark.integration


def test_a_consumer_that_gets_no_partitions_rejoins_says_the_group_is_stuck_and_moves_on(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap and settings.database_url
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    holder = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.group,
        enable_auto_commit=False,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=10_000,
    )
    try:
        holder.subscribe([settings.topic])
        deadline = time.monotonic() + 30
        while len(holder.assignment()) < settings.partitions:
            assert time.monotonic() < deadline, "the holder got no assignment"
            holder.poll(100)
        # From here the holder never polls again: it never rejoins.
        ingest = IngestProcess(settings, join_timeout_seconds=1.5)
        try:
            ingest.wait_for(rf"group {settings.group} has had no partitions .* joining as a new member")
            error = ingest.wait_for(
                rf"ERROR .*consumer group {settings.group}: 3 new members in a row", timeout=60
            )
            incidents = _incidents_eventually(settings)  # written just after the ERROR line
            # In a fresh group it gets the partitions and records what is published.
            after = ingest.lines.index(error.string)
            ingest.wait_for(r"resumed .* from stored positions", timeout=60, after=after)
            publish_raw(settings, [(b"stuck-1", encode_json(finished_step("stuck-1")))])
            _rows_eventually(settings, 1)
        finally:
            ingest.stop(signal.SIGKILL)
    finally:
        holder.close(autocommit=False, timeout_ms=2000)
    assert incidents[0][0] == settings.group
    assert incidents[0][1]["topic"] == settings.topic


def _incidents_eventually(settings: Settings, timeout: float = 15.0) -> list[tuple[str, dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        stuck = incidents(settings, "consumer_join_stuck")
        if stuck or time.monotonic() > deadline:
            assert stuck, "no consumer_join_stuck incident"
            return stuck
        time.sleep(0.2)


def _rows_eventually(settings: Settings, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(stored_rows(settings)) < count:
        assert time.monotonic() < deadline, "nothing recorded after the move to a fresh group"
        time.sleep(0.2)
