"""Nothing a publisher sends stops ingest, and nothing unstorable gets in.

Valid steps and every kind of poison value are interleaved on the same partitions
(poison is keyed by the valid runs' ids); each valid step is recorded once, each
poison value is in the dead-letter topic, byte for byte, with a reason that names
what is wrong, and the loop goes on recording what comes after.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from itertools import cycle

import pytest

from consumers import dead_letters as dl
from domain.step_values import EARLIEST, LATEST
from domain.steps import StepEvent
from infra.rows import read_step_state
from infra.settings import Settings
from schemas import Codec
from tests.integration.helpers import (
    ingest_for,
    poll_until,
    publish_raw,
    published_rows,
    read_topic,
    running_store,
)
from tests.unit import factories as f
from tests.unit.hostile import as_json, at, avro, nested, with_params_text

pytestmark = pytest.mark.integration

CODEC = Codec()
PARAMS = ("data", "action", "params")
LONGEST = "é" * 512


def _good_runs() -> list[StepEvent]:
    """Three runs, one of them at the edge of every limit: all must be recorded."""
    steps: list[StepEvent] = []
    for run_id in ("hostile-good-1", "hostile-good-2", LONGEST):
        steps += [
            f.started(run_id, at=EARLIEST, workflow=LONGEST),
            f.proposed(run_id=run_id, params={"p": _deep(63)}, output="Dear Ana,\n" * 2_000),
            f.finished("sent", run_id=run_id, at=LATEST - timedelta(microseconds=1)),
        ]
    return steps


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def _poison() -> dict[str, tuple[bytes, str, str]]:
    """name -> (value, reason, what the error must say)."""
    proposed, started, finished = f.proposed(), f.started(), f.finished()
    return {
        "avro-params-100k-deep": (
            avro(proposed, at(*PARAMS, value=nested(20_000))),
            "invalid",
            "data.action.params is not JSON text: recursion limit exceeded",
        ),
        "avro-params-65-deep": (
            avro(proposed, at(*PARAMS, value=f'{{"p": {nested(64)}}}')),
            "invalid",
            "data.action.params: nested deeper than 64 levels",
        ),
        "json-100k-deep": (
            as_json(finished).replace(
                b'"tenant"', b'"x": ' + nested(100_000, kind="array").encode() + b', "tenant"'
            ),
            "invalid",
            "not valid JSON: Invalid JSON: recursion limit exceeded",
        ),
        "json-params-100-deep": (
            with_params_text(proposed, f'{{"p": {nested(100)}}}'),
            "invalid",
            "data.action.params: nested deeper than 64 levels",
        ),
        "json-nul-in-workflow": (
            as_json(started, at("data", "workflow", value="lead\x00followup")),
            "invalid",
            "data.workflow: String should not contain NUL (U+0000)",
        ),
        "avro-nul-in-workflow": (
            avro(started, at("data", "workflow", value="lead\x00followup")),
            "invalid",
            "data.workflow: String should not contain NUL (U+0000)",
        ),
        "json-nul-in-output": (
            as_json(proposed, at("data", "action", "output", value="Dear Ana,\x00")),
            "invalid",
            "data.action.output: String should not contain NUL (U+0000)",
        ),
        "json-100kb-run-id": (
            as_json(finished, at("run_id", value="r" * 100_000)),
            "invalid",
            "run_id: String should have at most 512 characters",
        ),
        "avro-100kb-run-id": (
            avro(finished, at("run_id", value="s" * 100_000)),
            "invalid",
            "run_id: String should have at most 512 characters",
        ),
        "json-year-9999-minus-5h": (
            as_json(finished, at("occurred_at", value="9999-12-31T23:00:00-05:00")),
            "invalid",
            "occurred_at: Input should be less than 9000-01-01T00:00:00Z",
        ),
        "json-year-1-plus-1h": (
            as_json(finished, at("occurred_at", value="0001-01-01T00:30:00+01:00")),
            "invalid",
            "occurred_at: Input should be greater than or equal to 1900-01-01T00:00:00Z",
        ),
        "avro-year-past-9999": (
            avro(finished, at("occurred_at", value=2**62)),
            "invalid",
            "occurred_at: Input should be from 1900-01-01T00:00:00Z and before 9000-01-01T00:00:00Z",
        ),
        "json-invalid-utf8": (
            as_json(finished, at("run_id", value="MRKR")).replace(b"MRKR", b"\xff\xfe"),
            "invalid",
            "not valid JSON",
        ),
        "avro-invalid-utf8": (
            avro(finished, at("run_id", value="MRKR")).replace(b"MRKR", b"\xed\xa0\x80x"),
            "invalid",
            "UnicodeDecodeError",
        ),
        "avro-params-5000-digits": (
            avro(proposed, at(*PARAMS, value='{"n": ' + "9" * 5_000 + "}")),
            "invalid",
            "data.action.params is not JSON text: number out of range",
        ),
        "json-params-nan": (
            with_params_text(proposed, '{"n": NaN}'),
            "invalid",
            "data.action.params: a number is not finite",
        ),
        "avro-params-lone-surrogate": (
            avro(proposed, at(*PARAMS, value='{"a": "\\ud800"}')),
            "invalid",
            "data.action.params is not JSON text",
        ),
        "json-100kb-type": (
            as_json(finished, at("type", value="t" * 100_000)),
            "unknown_type",
            "(100,000 characters)",
        ),
        "empty": (b"", "not_a_step", "0 bytes starting (empty)"),
    }


def test_poison_values_are_dead_lettered_and_valid_steps_around_them_are_recorded_once(
    settings: Settings,
) -> None:
    good = _good_runs()
    poison = _poison()
    good_messages = [
        (step.run_id.encode(), CODEC.encode(step, "avro" if n % 2 else "json")) for n, step in enumerate(good)
    ]
    keys = cycle(sorted({key for key, _ in good_messages}))
    poison_messages = [(next(keys), value) for value, _, _ in poison.values()]
    # Interleaved: each valid step follows a poison value on its partition.
    mixed = [m for pair in zip(poison_messages, good_messages, strict=False) for m in pair]
    mixed += poison_messages[len(good_messages) :]
    publish_raw(settings, mixed)

    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        poll_until(ingest, lambda: ingest.totals.recorded >= len(good) and ingest.totals.dead >= len(poison))
        # The loop is still running: a step published afterwards is recorded too.
        after = f.finished("sent", run_id="hostile-good-1")
        publish_raw(settings, [(b"hostile-good-1", CODEC.encode(after))])
        poll_until(ingest, lambda: ingest.totals.recorded >= len(good) + 1)
        assert (ingest.totals.dead, ingest.totals.duplicates) == (len(poison), 0)
        for run_id in ("hostile-good-1", "hostile-good-2", LONGEST):
            assert store.run("default", run_id).receipt().final_state == "sent"

    recorded = Counter(read_step_state(state).event_id for _, _, state in published_rows(settings))
    assert recorded == Counter(step.event_id for step in [*good, after])

    letters = read_topic(str(settings.kafka_bootstrap), settings.dlq_topic, len(poison))
    by_value = {value: name for name, (value, _, _) in poison.items()}
    assert sorted(by_value[letter.value] for letter in letters) == sorted(poison)  # original bytes, once each
    for letter in letters:
        name = by_value[letter.value]
        _, reason, problem = poison[name]
        headers = {key: value.decode() for key, value in letter.headers}
        assert headers[dl.REASON] == reason, name
        assert problem in headers[dl.ERROR], (name, headers[dl.ERROR])
        assert len(headers[dl.ERROR]) <= 2_000, name
        assert headers[dl.SOURCE_TOPIC] == settings.topic
