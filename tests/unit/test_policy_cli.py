"""`receipts policy …` in-process: what each command prints, and its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.policy_cli import main
from domain.policy import load_policy, sample_policy, sample_text
from domain.steps import StepEvent
from schemas.codec import encode_json
from tests.unit.test_sample_policy import RUNS, ingested

SAMPLE = sample_text()


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(path: Path, steps: list[StepEvent]) -> str:
    path.write_bytes(b"".join(encode_json(s) + b"\n" for s in steps))
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["policy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- sample and check ---------------------------------------------------------------------------


def test_sample_prints_the_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "sample")
    assert code == 0 and out == SAMPLE
    assert load_policy(out).version == sample_policy().version


def test_check_prints_the_version_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "check", _write(tmp_path / "p.toml", SAMPLE))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].endswith(f"p.toml: valid policy, version {sample_policy().version}")
    contracts = "crm-notes, lead-followup, order-support, support-triage, website-update"
    assert lines[1] == f"contracts: 5 ({contracts})"
    assert lines[2] == "rules: 9, in order, then the default:"
    assert lines[6] == "    4. external-email-review -> review (sales-lead)"
    assert lines[-1] == "  default default-review -> review"


def test_check_names_the_line_and_field_of_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = SAMPLE.replace('lane = "escalate"', 'lane = "upstairs"')
    line = SAMPLE.splitlines().index('lane = "escalate"') + 1
    code, out, err = _run(capsys, "check", path := _write(tmp_path / "p.toml", bad))
    assert (code, out) == (1, "")
    assert err.startswith(f"receipts policy: {path}:{line}: rules.2.lane: Input should be 'auto', 'review'")


def test_check_names_the_line_of_a_toml_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "check", path := _write(tmp_path / "p.toml", SAMPLE + "\n[[rules]\n"))
    assert code == 1
    assert f"{path}:{len(SAMPLE.splitlines()) + 2}: not valid TOML" in err


def test_check_refuses_a_policy_without_a_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "check", path := _write(tmp_path / "p.toml", SAMPLE.split("[default]")[0]))
    assert code == 1 and f"{path}:1: default: a policy needs a [default] rule" in err


def test_check_of_a_missing_file_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "check", str(tmp_path / "nope.toml"))
    assert code == 1 and "cannot read it" in err


# --- explain-step -------------------------------------------------------------------------------


def test_explain_step_shows_every_rule_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RUNS["support-triage"]
    upto = next(i for i, s in enumerate(run) if s.type == "action.proposed")
    policy, steps = _write(tmp_path / "p.toml", SAMPLE), _jsonl(tmp_path / "s.jsonl", run[: upto + 1])
    code, out, err = _run(capsys, "explain-step", policy, steps)
    assert (code, err) == (0, "")
    assert "decision: escalate by rule cancellation-escalates" in out
    assert ", reviewer role support-lead" in out
    assert "  matched: cancellation-escalates, confident-triage-auto" in out
    assert "  [ROUTES] cancellation-escalates -> escalate" in out
    assert "      yes words: wants any of 'cancel*' in input/output; step has 'cancel' in input" in out
    assert "  [matches] confident-triage-auto -> auto" in out
    assert "  [no match] deletes-blocked -> block" in out
    assert "      NO  verbs: wants one of delete*; step has 'route_ticket'" in out
    for rule in sample_policy().rules:
        assert f"] {rule.id} -> " in out
    assert "  [no match] default-review -> review\n      (the default: routes when no rule matches)" in out


def test_explain_step_explains_the_last_edit_on_its_own_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RUNS["crm-note"]
    upto = next(i for i, s in enumerate(run) if s.type == "action.edited")
    code, out, _ = _run(
        capsys,
        "explain-step",
        _write(tmp_path / "p.toml", SAMPLE),
        _jsonl(tmp_path / "s.jsonl", run[: upto + 1]),
    )
    assert code == 0 and "(action.edited," in out and "decision: review by rule default-review" in out


def test_explain_step_without_a_proposal_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys,
        "explain-step",
        _write(tmp_path / "p.toml", SAMPLE),
        _jsonl(tmp_path / "s.jsonl", RUNS["crm-note"][:2]),
    )
    assert code == 1 and "no action.proposed" in err


def test_a_bad_line_in_the_steps_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = tmp_path / "s.jsonl"
    steps.write_bytes(encode_json(RUNS["crm-note"][0]) + b'\n\n{"type": "action.teleported"}\n')
    code, _, err = _run(capsys, "explain-step", _write(tmp_path / "p.toml", SAMPLE), str(steps))
    assert code == 1 and f"{steps}:3: not a step: unknown step type 'action.teleported'" in err


# --- test: a dry run ----------------------------------------------------------------------------

CANDIDATE = (
    SAMPLE.replace(
        'id = "external-email-review"\nlane = "review"', 'id = "external-email-review"\nlane = "auto"'
    )
    .replace('id = "cancellation-escalates"', 'id = "cancellation-escalates"\nwhen = { verbs = ["never"] }')
    .replace(
        '\nwhen = { workflows = ["support-triage"], words = ["cancel*"], words_in = ["input", "output"] }', ""
    )
)


def _corpus(tmp_path: Path) -> str:
    """The demo runs as ingest with the sample policy records them (service decisions included)."""
    return _jsonl(tmp_path / "events.jsonl", [s for run in RUNS.values() for s in ingested(run)])


def test_the_candidate_is_the_sample_with_two_changes() -> None:
    assert load_policy(CANDIDATE).version != sample_policy().version
    assert len(load_policy(CANDIDATE).rules) == len(sample_policy().rules)


def test_the_policy_in_force_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "test", _write(tmp_path / "p.toml", SAMPLE), _corpus(tmp_path), "--json")
    result = json.loads(out)
    assert code == 0
    assert (
        result["runs"],
        result["proposed"],
        result["compared"],
        result["changed"],
        result["undecided"],
    ) == (6, 6, 6, 0, 0)
    assert (result["transitions"], result["examples"]) == ([], [])


def test_a_candidate_counts_exactly_which_steps_change_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "test", _write(tmp_path / "c.toml", CANDIDATE), _corpus(tmp_path), "--json")
    result = json.loads(out)
    assert code == 0
    assert (result["proposed"], result["compared"], result["changed"], result["unchanged"]) == (6, 6, 2, 4)
    assert sorted((t["from"], t["to"], t["steps"]) for t in result["transitions"]) == [
        ("escalate", "auto", 1),
        ("review", "auto", 1),
    ]
    assert sorted(
        (e["run_id"], e["recorded_rule"], e["rule_id"], e["recorded_by"]) for e in result["examples"]
    ) == [
        ("demo-lead-followup", "external-email-review", "external-email-review", "service"),
        ("demo-support-triage", "cancellation-escalates", "confident-triage-auto", "service"),
    ]


def test_steps_with_no_recorded_decision_are_counted_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _jsonl(
        tmp_path / "e.jsonl", [s for run in RUNS.values() for s in run]
    )  # platform decisions only
    code, out, _ = _run(capsys, "test", _write(tmp_path / "c.toml", CANDIDATE), events)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("over 6 runs, 6 proposed steps")
    assert (
        lines[1]
        == "  would change lane: 2 of 5 with a recorded decision (3 unchanged); 1 had no recorded decision"
    )
    assert sorted(lines[2:4]) == ["  escalate -> auto: 1", "  review -> auto: 1"]
    assert lines[4] == "examples:"
    assert any(
        line.startswith("  demo-lead-followup / ")
        and "review (platform rule outbound-email-review) -> auto" in line
        for line in lines
    )


def test_examples_are_capped_but_counts_are_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "test", _write(tmp_path / "c.toml", CANDIDATE), _corpus(tmp_path), "--json", "--examples", "1"
    )
    result = json.loads(out)
    assert (code, result["changed"], len(result["examples"])) == (0, 2, 1)


def test_explain_step_of_an_edit_without_its_proposal_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit = next(s for s in RUNS["crm-note"] if s.type == "action.edited")
    steps = _jsonl(tmp_path / "s.jsonl", [RUNS["crm-note"][0], edit])
    code, _, err = _run(capsys, "explain-step", _write(tmp_path / "p.toml", SAMPLE), steps)
    assert code == 1 and f"the edit of step '{edit.step_id}' has no action.proposed before it" in err
