"""The console's diffs of a step's versions and its reading of a time picker's value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.console.diffs import current_text, unified, version_chain
from api.console.run_pages import as_of_time
from domain.errors import Invalid
from domain.receipt import render
from tests.unit import factories as f

EDIT_1 = f.DRAFT.replace("40 EUR", "36 EUR")
EDIT_2 = EDIT_1 + "Best, Kim\n"


def test_each_edit_is_diffed_from_the_version_it_was_made_on() -> None:
    step_id = f.STEP
    receipt = render(
        f.entries(
            f.started(at=f.at(0)),
            f.proposed(step_id, at=f.at(1)),
            f.policy(step_id, "review", at=f.at(2)),
            f.edited(step_id, output=EDIT_1, at=f.at(3)),
            f.edited(step_id, output=EDIT_2, base=EDIT_1, at=f.at(4)),
        )
    )
    (step,) = receipt.steps
    chain = version_chain(step)
    assert [(d.before, d.after) for d in chain] == [
        ("proposed", f"edit 1 by {f.REVIEWER.id}"),
        (f"edit 1 by {f.REVIEWER.id}", f"edit 2 by {f.REVIEWER.id}"),
    ]
    assert ("removed", "-Our plan costs 40 EUR.") in chain[0].lines
    assert ("added", "+Our plan costs 36 EUR.") in chain[0].lines
    assert [line for line in chain[1].lines if line[0] in ("added", "removed")] == [("added", "+Best, Kim")]
    assert current_text(step) == EDIT_2


def test_the_same_text_is_no_diff() -> None:
    assert unified("a\n", "a\n", "current", "your edit").same
    assert not unified("a\n", "b\n", "current", "your edit").same


def test_a_time_pickers_value_is_utc_and_a_bad_one_names_the_field() -> None:
    assert as_of_time("2026-11-25T14:02") == datetime(2026, 11, 25, 14, 2, tzinfo=UTC)
    assert as_of_time("2026-11-25T14:02:00+01:00") == datetime(2026, 11, 25, 13, 2, tzinfo=UTC)
    assert as_of_time("  ") is None
    for bad in ("yesterday", "1800-01-01T00:00"):
        with pytest.raises(Invalid, match="as_of"):
            as_of_time(bad)
