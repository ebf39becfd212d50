"""The policy document: loading, refusals that name the line and the field, versions that are content."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta

import pytest

from domain.policy import Policy, PolicyError, load_policy, locate, sample_policy, sample_text

MINIMAL = """
[default]
lane = "review"
reason = "a person reviews what no rule covers"
"""


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy(textwrap.dedent(text))
    return caught.value


# --- the sample ----------------------------------------------------------------------------------


def test_the_sample_loads_with_the_contracts_and_rules_of_the_demo_lanes() -> None:
    policy = sample_policy()
    assert set(policy.contracts) == {
        "lead-followup",
        "support-triage",
        "website-update",
        "crm-notes",
        "order-support",
    }
    assert [w for w, c in policy.contracts.items() if c.accepts_consent] == ["order-support"]
    assert [r.id for r in policy.rules][:2] == ["deletes-blocked", "lead-needs-context"]
    assert policy.default.id == "default-review"
    assert policy.contracts["support-triage"].review_deadline == timedelta(hours=1)
    assert policy.contracts["website-update"].needs_recovery("anything")
    assert not policy.contracts["lead-followup"].needs_recovery("send_email")


def test_the_sample_is_package_data_so_an_installed_package_finds_it() -> None:
    from importlib.resources import files

    assert files("domain").joinpath("sample_policy.toml").is_file()
    assert sample_text().startswith("# Agent Receipts sample policy")


def test_a_minimal_policy_is_just_a_default_rule() -> None:
    policy = load_policy(MINIMAL)
    assert (policy.rules, policy.contracts, policy.default.id, policy.default.lane) == (
        (),
        {},
        "default",
        "review",
    )


# --- versions are content ------------------------------------------------------------------------


def test_the_version_is_the_sha256_of_the_canonical_document() -> None:
    import hashlib

    policy = sample_policy()
    assert policy.version == "sha256:" + hashlib.sha256(policy.canonical().encode()).hexdigest()
    assert json.loads(policy.canonical())["default"]["id"] == "default-review"


def test_formatting_key_order_and_spelt_out_defaults_do_not_make_a_new_version() -> None:
    reformatted = """
    default = { reason = "a person reviews what no rule covers", lane = "review", id = "default" }
    contracts = {}
    rules = []   # nothing but the default
    """
    assert load_policy(textwrap.dedent(reformatted)).version == load_policy(MINIMAL).version


def test_any_change_of_content_is_a_new_version() -> None:
    assert load_policy(MINIMAL.replace('"review"', '"escalate"')).version != load_policy(MINIMAL).version


# --- refusals name the line and the field ---------------------------------------------------------


def test_a_policy_without_a_default_rule_is_refused() -> None:
    error = _error('[[rules]]\nid = "x"\nlane = "auto"\nreason = "r"\n')
    assert (error.line, error.field) == (1, "default")
    assert "a policy needs a [default] rule" in str(error)


def test_a_toml_syntax_error_names_its_line() -> None:
    error = _error(MINIMAL + '\n[[rules]]\nid = "x"\nlane = \n')
    assert error.line == 8
    assert str(error).startswith("line 8: not valid TOML")


def test_a_bad_value_in_the_third_rule_names_its_line_and_field() -> None:
    text = MINIMAL + "".join(
        f'\n[[rules]]\nid = "r{n}"\nlane = "{lane}"\nreason = "because"\n'
        for n, lane in enumerate(["auto", "review", "sideways"])
    )
    error = _error(text)
    assert error.field == "rules.2.lane"
    assert error.line == text.splitlines().index('lane = "sideways"') + 1
    assert "Input should be 'auto', 'review', 'escalate', 'draft_only' or 'block'" in error.message


def test_a_bad_condition_in_a_rule_when_table_names_its_line() -> None:
    text = (
        MINIMAL + '\n[[rules]]\nid = "a"\nlane = "auto"\nreason = "r"\n[rules.when]\nmin_confidence = 1.5\n'
    )
    error = _error(text)
    assert (error.field, error.line) == ("rules.0.when.min_confidence", 11)
    assert "less than or equal to 1" in error.message


def test_a_misspelt_key_is_refused_not_ignored() -> None:
    text = MINIMAL + '\n[[rules]]\nid = "a"\nlane = "auto"\nreason = "r"\nwhen = { verb = ["send_email"] }\n'
    error = _error(text)
    assert (error.field, error.line) == ("rules.0.when.verb", 10)
    assert "Extra inputs are not permitted" in error.message


def test_a_bad_contract_field_names_the_workflow_table_line() -> None:
    text = (
        MINIMAL
        + '\n[contracts.lead-followup]\nreviewer_role = "sales-lead"\nfinal_states = ["sent", "gone"]\n'
    )
    error = _error(text)
    assert (error.field, error.line) == ("contracts.lead-followup.final_states.1", 8)


def test_a_missing_required_key_names_its_table() -> None:
    text = MINIMAL + '\n[[rules]]\nid = "a"\nreason = "r"\n'
    error = _error(text)
    assert (error.field, error.line) == ("rules.0.lane", 6)
    assert error.message == "Field required"


def test_a_rule_id_used_twice_is_refused_naming_the_second_use() -> None:
    rule = '\n[[rules]]\nid = "{}"\nlane = "auto"\nreason = "r"\n'
    error = _error(MINIMAL + rule.format("a") + rule.format("b") + rule.format("a"))
    assert (error.field, error.line) == ("rules.2.id", 17)
    assert "rule id 'a' is used twice" in error.message
    assert _error(MINIMAL + rule.format("default")).field == "rules.0.id"


def test_a_bad_field_path_is_refused() -> None:
    text = MINIMAL + '\n[[rules]]\nid = "a"\nlane = "auto"\nreason = "r"\nwhen = { missing = ["params.x"] }\n'
    assert _error(text).field == "rules.0.when.missing.0"


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    error = _error(MINIMAL + '\n[[rules]]\nid = "a b"\nlane = "up"\nreason = ""\n')
    assert error.field == "rules.0.id"
    assert error.message.endswith("(and 2 more problems)")


# --- the locator ---------------------------------------------------------------------------------

LOCATED = """\
public_targets = [{ system = "cms" }]          # 1
[contracts."lead-followup"]                    # 2
inputs = [                                     # 3
  { system = "hubspot", kind = "form" },       # 4
]                                              # 5
reviewer_role = "sales-lead"                   # 6
[[rules]]                                      # 7
id = "a"                                       # 8
[[rules]]                                      # 9
id = "b"                                       # 10
when.words = ["x"]                             # 11
[rules.when]                                   # 12
verbs = ["v"]                                  # 13
[default]                                      # 14
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("public_targets", 0, "system"), 1),
        (("contracts", "lead-followup"), 2),
        (("contracts", "lead-followup", "inputs", 0, "kind"), 3),
        (("contracts", "lead-followup", "reviewer_role"), 6),
        (("contracts", "lead-followup", "signals"), 2),
        (("rules",), 7),
        (("rules", 0, "id"), 8),
        (("rules", 1, "id"), 10),
        (("rules", 1, "when", "words", 0), 11),
        (("rules", 1, "when", "verbs"), 13),
        (("rules", 1, "lane"), 9),
        (("default", "lane"), 14),
        (("nowhere",), None),
    ],
)
def test_locate_finds_the_line_of_a_key_or_its_nearest_written_parent(
    loc: tuple[str | int, ...], line: int | None
) -> None:
    assert locate(LOCATED, loc) == line


def test_the_version_is_what_the_document_says_not_the_models_defaults() -> None:
    """A service that adds an optional field must not re-version every policy in force."""
    policy = sample_policy()
    canonical = json.loads(policy.canonical())
    contract = canonical["contracts"]["lead-followup"]
    for unsaid in ("escalation_role", "second_eyes_after_edit", "rollback_role"):
        assert unsaid not in contract, unsaid
    again = Policy.model_validate(canonical)  # the stored document, read back
    assert again == policy and again.version == policy.version
