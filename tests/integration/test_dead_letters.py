"""Bad input goes to the dead-letter topic whole, with its reason; good input around it is kept."""

from __future__ import annotations

import hashlib

import pytest

from api.bootstrap import build_publisher
from consumers import dead_letters as dl
from infra.settings import Settings
from schemas import Codec
from tests.integration.helpers import (
    ingest_for,
    poll_until,
    publish_raw,
    published_rows,
    query,
    read_topic,
    running_store,
)

pytestmark = pytest.mark.integration


def test_bad_values_land_in_the_dlq_with_reason_and_original_bytes(settings: Settings) -> None:
    publisher = build_publisher(settings)
    with publisher.run("support-triage", run_id="good-1") as run:
        run.finish("abandoned")
    publisher.flush()
    valid_avro = Codec().encode_avro(
        Codec().decode(read_topic(str(settings.kafka_bootstrap), settings.topic, 1)[0].value)
    )
    bad = {
        b"garbage": (b"\x00\x01 not a step at all", "not_a_step"),
        b"truncated": (valid_avro[: len(valid_avro) // 2], "truncated"),
        b"shape": (b'{"type": "action.proposed", "event_id": "x", "run_id": "r"}', "invalid"),
        b"unknown": (b'{"type": "agent.daydreamed", "event_id": "y", "run_id": "r"}', "unknown_type"),
        b"schema": (b"\xc3\x01" + b"\xff" * 8 + b"\x02", "unknown_schema"),
    }
    publish_raw(settings, [(key, value) for key, (value, _) in bad.items()])
    with publisher.run("support-triage", run_id="good-2") as run:
        run.finish("abandoned")
    publisher.close()

    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= 4 and ingest.totals.dead >= len(bad))
        assert {r for r in ("good-1", "good-2") if store.run("default", r).receipt().final_state} == {
            "good-1",
            "good-2",
        }

    assert len(published_rows(settings)) == 4
    letters = read_topic(str(settings.kafka_bootstrap), settings.dlq_topic, len(bad))
    assert len(letters) == len(bad)
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers}
        value, reason = bad[letter.key]
        assert letter.value == value  # the original bytes, untouched
        assert headers[dl.REASON] == reason
        assert headers[dl.ERROR]  # a sentence a person can act on
        assert headers[dl.SOURCE_TOPIC] == settings.topic
        assert int(headers[dl.SOURCE_OFFSET]) >= 0 and int(headers[dl.SOURCE_PARTITION]) in range(4)
    # Once the topic holds them, PostgreSQL keeps each letter's digest and length, not its bytes.
    held = query(settings, "SELECT key, length(value), value_length, value_sha256 FROM receipts_dead_letters")
    assert {bytes(key): (length, size, bytes(digest)) for key, length, size, digest in held} == {
        key: (0, len(value), hashlib.sha256(value).digest()) for key, (value, _) in bad.items()
    }


def test_a_tombstone_is_a_dead_letter_not_a_crash(settings: Settings) -> None:
    publish_raw(settings, [(b"run-x", None)])
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.dead >= 1)
    (letter,) = read_topic(str(settings.kafka_bootstrap), settings.dlq_topic, 1)
    assert dict(letter.headers)[dl.REASON] == b"undecodable"
