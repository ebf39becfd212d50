"""The pure part of importing: JSON read a value at a time, the source's clock, the mapping and
its errors, and what a transcript's calls become (no broker: a list stands in for the publisher)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain.steps import StepEvent
from infra.importing import (
    CONTRACT,
    OTLP,
    TRANSCRIPT,
    Imported,
    MappingError,
    UnsupportedFormat,
    detect,
    import_file,
    load_mapping,
)
from infra.importing.base import BrokenJson, JsonValues
from infra.importing.clock import SYNTHETIC_EPOCH, fill, parse_time

DATA = Path(__file__).parent.parent / "data" / "import"
MAPPING = load_mapping(DATA / "support.yaml")


class Collected:
    def __init__(self) -> None:
        self.steps: list[StepEvent] = []

    def publish(self, step: StepEvent) -> None:
        self.steps.append(step)

    def flush(self, timeout: float = 30.0) -> None:
        return None


def _import(path: Path, **kw: Any) -> tuple[list[StepEvent], Imported]:
    sent, imported = Collected(), Imported()
    import_file(path, sent, imported, mapping=MAPPING, **kw)
    return sent.steps, imported


def _values(text: str, chunk: int = 7) -> list[Any]:
    values = JsonValues(io.StringIO(text))
    values.CHUNK = chunk  # values straddle every chunk boundary
    return list(values.values())


def test_json_values_streams_an_array_across_chunk_boundaries() -> None:
    runs = [{"id": f"r{n}", "n": 12345678901234567890 + n, "t": "é" * n} for n in range(20)]
    assert _values(json.dumps(runs)) == runs
    assert _values(" [ ] ") == []


def test_json_values_reads_values_one_after_another() -> None:
    assert _values('{"a": 1}\n{"a": 2}\n\n3.25\n') == [{"a": 1}, {"a": 2}, 3.25]


def test_json_values_refuses_a_broken_array_naming_where() -> None:
    with pytest.raises(BrokenJson, match="at character 10: expected ',' or ']'"):
        _values('[{"a": 1} {"a": 2}]')
    with pytest.raises(BrokenJson, match="at character 24: Expecting value"):
        _values('{"a": 1}\n{"b": 22, "c": }')


def test_a_run_larger_than_a_read_is_read_in_doubling_reads() -> None:
    big = {"id": "r", "messages": [{"role": "user", "content": "x" * 5000}]}
    stream = io.StringIO(json.dumps(big))
    values = JsonValues(stream)
    values.CHUNK = 16
    reads = 0
    original = stream.read

    def counted(size: int = -1) -> str:
        nonlocal reads
        reads += 1
        return original(size)

    stream.read = counted  # type: ignore[method-assign]
    assert list(values.values()) == [big]
    assert reads < 15  # 16, 16, 32, 64 … characters: not 5,000 / 16


def test_a_file_that_breaks_off_keeps_the_runs_before_and_says_where(tmp_path: Path) -> None:
    good = {"id": "r1", "messages": [_call("a", "cancel_pending_order", {"order_id": "A"})]}
    path = tmp_path / "runs.json"
    text = "[" + json.dumps(good) + ', {"id": "r2", "messages": ['
    path.write_text(text, encoding="utf-8")
    steps, imported = _import(path, workflow="w")
    assert {s.run_id for s in steps} == {"r1"}
    ((name, where, reason),) = imported.skipped
    assert (name, where) == ("runs.json", f"character {len(text)}")  # it breaks off at the end
    assert reason.endswith("the rest of the file is not read")


def test_naive_times_are_in_the_mappings_zone_and_numbers_are_unix_time() -> None:
    york = ZoneInfo("America/New_York")
    assert parse_time("2026-11-03 09:00:00", york) == datetime(2026, 11, 3, 14, tzinfo=UTC)
    assert parse_time("2026-11-03T09:00:00Z", york) == datetime(2026, 11, 3, 9, tzinfo=UTC)
    assert parse_time(1_700_000_000_000, york) == parse_time(1_700_000_000, york)
    assert parse_time("yesterday", york) is None


def test_gaps_take_their_neighbours_time_and_no_time_at_all_is_the_synthetic_clock() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    filled, synthetic = fill([None, t, None], None)
    assert not synthetic and filled[0] < filled[1] == t < filled[2]
    filled, synthetic = fill([None, None], None)
    assert synthetic and filled[0] > SYNTHETIC_EPOCH and filled[0] < filled[1]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("tools:\n  a:\n    class: delete\n", "line 3: tools.a.class"),
        ("tools:\n  a: {class: read}\n", "line 2: tools.a"),
        ("timezone: Mars/Olympus\ntools: {}\n", "line 1: timezone"),
        ("confirmations: ['(yes']\ntools: {}\n", "line 1: confirmations"),
        (
            "tools:\n  a: {class: write, target: {system: s, kind: k}, colour: red}\n",
            "line 2: tools.a.colour",
        ),
        ("tools: [\n", "line 2"),
        ("- a\n", "a mapping is a YAML document"),
    ],
)
def test_a_mapping_error_names_its_line_and_field(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match=said):
        load_mapping(path)


def test_a_tool_matches_by_name_then_by_pattern() -> None:
    assert MAPPING.tool("transfer_to_human_agents") is MAPPING.tools["transfer_to_human*"]
    assert MAPPING.tool("send_fax") is None


def _transcript(tmp_path: Path, *messages: dict[str, Any], **meta: Any) -> Path:
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps({"id": "r", **meta, "messages": list(messages)}) + "\n", encoding="utf-8")
    return path


def _call(call_id: str, name: str, arguments: Any, role: str = "assistant") -> dict[str, Any]:
    return {"role": role, "tool_calls": [{"id": call_id, "function": {"name": name, "arguments": arguments}}]}


def _result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _kinds(steps: list[StepEvent]) -> list[tuple[str, str | None]]:
    return [(s.type, s.step_id) for s in steps]


def test_a_result_answers_the_oldest_unanswered_call_with_its_id(tmp_path: Path) -> None:
    path = _transcript(
        tmp_path,
        _call("0", "cancel_pending_order", {"order_id": "A"}),
        _call("0", "cancel_pending_order", {"order_id": "B"}),
        _result("0", '{"status": "cancelled"}'),
        _result("0", "Error: order B is delivered"),
        _result("0", "late"),
    )
    steps, imported = _import(path, workflow="w")
    assert _kinds(steps)[1:] == [
        ("action.proposed", "r/m0.0"),
        ("action.executed", "r/m0.0"),
        ("action.proposed", "r/m1.0"),
        ("action.failed", "r/m1.0"),
    ]
    assert steps[1].data.action.target.id == "A"  # type: ignore[attr-defined]
    assert imported.skipped == [("run.jsonl", "r/m4", "a tool result for '0' answers no call")]


def test_consent_is_the_customers_matching_words_just_before_a_write_and_covers_one(tmp_path: Path) -> None:
    path = _transcript(
        tmp_path,
        {"role": "user", "content": "hmm, maybe", "timestamp": "2026-11-02T10:00:00Z"},
        _call("1", "cancel_pending_order", {"order_id": "A"}),
        {"role": "user", "content": "Yes, go ahead.", "timestamp": "2026-11-02T10:01:00Z"},
        _call("2", "cancel_pending_order", {"order_id": "B"}),
        _call("3", "cancel_pending_order", {"order_id": "C"}),
        customer="u-9",
    )
    steps, _ = _import(path, workflow="w")
    consents = [s for s in steps if s.type == "consent.given"]
    assert [(c.step_id, c.data.text, c.actor.id, c.actor.role) for c in consents] == [  # type: ignore[attr-defined]
        ("r/m3.0", "Yes, go ahead.", "u-9", "customer")
    ]
    assert consents[0].occurred_at == datetime(2026, 11, 2, 10, 1, tzinfo=UTC)
    assert (
        _kinds(steps).index(("consent.given", "r/m3.0"))
        == _kinds(steps).index(("action.proposed", "r/m3.0")) + 1
    )


def test_a_call_a_user_message_carries_is_the_customers(tmp_path: Path) -> None:
    path = _transcript(tmp_path, _call("u", "toggle_airplane_mode", "{}", role="user"), _result("u", "OFF"))
    steps, _ = _import(path, workflow="w")
    assert {(s.type, s.actor.kind, s.actor.role) for s in steps[1:]} == {
        ("action.proposed", "human", "customer"),
        ("action.executed", "human", "customer"),
    }


def test_importing_twice_gives_the_same_events(tmp_path: Path) -> None:
    first, _ = _import(DATA / "phone.jsonl")
    again, _ = _import(DATA / "phone.jsonl")
    assert first == again and len({s.event_id for s in first}) == len(first)
    (started,) = [s for s in first if s.type == "run.started" and s.run_id == "phone-7"]
    assert started.data.origin.model_dump() == {"format": "openai-chat", "approvals_recorded": False}  # type: ignore[attr-defined]


def test_a_run_without_a_workflow_or_messages_is_skipped_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{"id": "a", "messages": []}]), encoding="utf-8")
    _, imported = _import(path)
    assert imported.skipped == [("runs.json", "run 1", "not a run: no messages")]


def test_a_transcript_without_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="needs a mapping"):
        import_file(DATA / "retail.json", Collected(), Imported())


def test_a_transcript_file_imports_in_constant_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four times the file, about the same peak: runs are read and published one at a time
    (reads of 64 KB here, so both files are many reads long)."""
    import tracemalloc

    monkeypatch.setattr(JsonValues, "CHUNK", 1 << 16)
    from bench.transcripts import TranscriptWriter

    peaks = []
    for megabytes in (0.5, 2.0):
        path = tmp_path / f"{megabytes}.json"
        TranscriptWriter(7).write(path, megabytes)
        counted = Counted()
        tracemalloc.start()
        import_file(path, counted, Imported(), mapping=MAPPING)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert counted.count > 1_000 * megabytes
    assert peaks[1] < peaks[0] * 1.5, peaks


class Counted:
    def __init__(self) -> None:
        self.count = 0

    def publish(self, step: StepEvent) -> None:
        self.count += 1

    def flush(self, timeout: float = 30.0) -> None:
        return None


def test_a_bare_array_of_messages_is_one_run_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chat-42.json"
    messages = [_call("a", "get_order_details", {"order_id": "#W1"}), _result("a", '{"order_id": "#W1"}')]
    path.write_text(json.dumps(messages), encoding="utf-8")
    steps, _ = _import(path, workflow="w", tenant="acme")
    assert {(s.run_id, s.tenant) for s in steps} == {("chat-42-1", "acme")}
    assert [s.type for s in steps] == ["run.started", "source.used"]


def test_a_trace_in_conventions_of_another_version_is_refused_and_said(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    request = {
        "resourceSpans": [
            {
                "schemaUrl": "https://opentelemetry.io/schemas/1.20.0",
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "t",
                                "spanId": "s",
                                "name": "invoke_agent a",
                                "startTimeUnixNano": "1",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    path.write_text(json.dumps(request) + "\n" + json.dumps({"hello": 1}) + "\n", encoding="utf-8")
    steps, imported = _import(path, workflow="w")
    assert steps == []
    assert [(where, reason.split(";")[0]) for _, where, reason in imported.skipped] == [
        (
            "request 1",
            "schema 'https://opentelemetry.io/schemas/1.20.0' is not a version of the OpenTelemetry "
            "semantic conventions this importer reads (1.26.0 to 1.38.0)",
        ),
        ("request 2", "not an OTLP ExportTraceServiceRequest (no resourceSpans)"),
    ]


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (
            '{"event_id": "e", "run_id": "r", "type": "consent.given", "actor": {"role": "customer"}}',
            CONTRACT,
        ),
        ('{"id": "r", "messages": [{"role": "user"}]}', TRANSCRIPT),
        ('[{"role": "user", "content": "hi"}]', TRANSCRIPT),
        ('{"resourceSpans": []}', OTLP),
        ('{\n  "id": "r",\n  "messages": []\n}', TRANSCRIPT),
        (
            '{"event_id": "e", "run_id": "r", "type": "run.finished", "data": {"x": "resourceSpans"}}',
            CONTRACT,
        ),
    ],
)
def test_the_format_is_detected_from_the_first_line(tmp_path: Path, first: str, kind: str) -> None:
    path = tmp_path / "f"
    path.write_text(first + "\n", encoding="utf-8")
    assert detect(path) == kind


def test_the_cli_refuses_a_bad_mapping_before_asking_any_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import main

    bad = tmp_path / "mapping.yaml"
    bad.write_text("tools:\n  get_order:\n    class: delete\n", encoding="utf-8")
    assert main(["import", str(DATA / "retail.json"), "--mapping", str(bad)]) == 2
    assert f"{bad}:line 3: tools.get_order.class" in capsys.readouterr().err


def test_the_summary_counts_each_reason_when_many_were_skipped() -> None:
    imported = Imported(events=3, runs={("default", "r")})
    for number in range(25):
        imported.skip("f.json", f"r/m{number}", "tool 'send_fax' is not in the mapping")
    imported.skip("f.json", "run 9", "not a run: no messages")
    lines = imported.summary()
    assert lines[0] == "published 3 events of 1 runs; skipped 26"
    assert lines[1] == "  f.json:r/m0: tool 'send_fax' is not in the mapping"
    assert lines[21:] == [
        "  … and 6 more; every reason, how often:",
        "    25: tool 'send_fax' is not in the mapping",
        "    1: not a run: no messages",
    ]


def test_a_result_given_as_text_parts_is_read_as_its_text(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "Error: order A is delivered"}]
    path = _transcript(
        tmp_path,
        _call("1", "cancel_pending_order", {"order_id": "A"}),
        {"role": "tool", "tool_call_id": "1", "content": parts},
    )
    steps, _ = _import(path, workflow="w")
    assert [(s.type, getattr(s.data, "error", None)) for s in steps[1:]] == [
        ("action.proposed", None),
        ("action.failed", "Error: order A is delivered"),
    ]


def test_the_summary_says_what_was_skipped_and_what_was_noted() -> None:
    _, imported = _import(DATA / "retail.json")
    assert imported.summary() == [
        "published 18 events of 2 runs; skipped 1",
        "  retail.json:crm-3/m7.0: tool 'send_fax' is not in the mapping",
        "  note: calls of internal tools (they touch nothing: not recorded): 1",
        "  note: runs without timestamps (on the synthetic clock, flagged synthetic_clock): 1",
        "  note: tool calls with malformed arguments imported as text: 1",
    ]
