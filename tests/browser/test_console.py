"""The reviewer's console in Chromium: sign in, the queue, an edit with its diff and an
approval, the receipt that shows them, a refused rejection, tenants, the keyboard, and the
reading pages with JavaScript off."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from api.bootstrap import build_projections
from consumers.ingest import Ingest
from domain.steps import content_hash
from infra.settings import Settings
from infra.store import RunStore
from tests.browser.conftest import signed_in
from tests.integration.console import STEP, seed, waiting
from tests.integration.helpers import add_principal, ingest_for, poll_until, running_store
from tests.unit import factories as f

pytestmark = pytest.mark.integration
EDIT = f.DRAFT.replace("40 EUR", "36 EUR (annual plan)") + "Best, Kim\n"


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        seed(settings, store, waiting("r-1"), waiting("r-2", minutes=10), waiting("b-1", tenant="acme"))
        yield store


@pytest.fixture
def ingest(settings: Settings, store: RunStore) -> Iterator[Ingest]:
    with ingest_for(settings, store) as ingest:
        yield ingest


def recorded(settings: Settings, store: RunStore, ingest: Ingest, count: int) -> None:
    """Once ingest has recorded `count` steps, the views as they then are."""
    poll_until(ingest, lambda: ingest.totals.recorded >= count)
    build_projections(settings, store).catch_up()


def test_edit_see_the_diff_approve_and_the_receipt_shows_the_edited_version_and_reviewer(
    browser: Browser, served: str, settings: Settings, store: RunStore, ingest: Ingest
) -> None:
    page = signed_in(browser, served, add_principal(settings, "kim", roles=["sales-lead"]))
    queue = page.locator("#queue")
    expect(queue).to_contain_text(STEP)
    expect(queue).to_contain_text("review")
    page.get_by_role("link", name=STEP).click()
    expect(page.locator("#draft")).to_have_text(f.DRAFT)
    expect(page.locator("#rule")).not_to_have_text("—")
    page.locator("#output").fill(EDIT)
    page.get_by_role("button", name="Save edit…").click()
    diff = page.locator("#edit-preview pre.diff")
    expect(diff).to_contain_text("-Our plan costs 40 EUR.")
    expect(diff).to_contain_text("+Our plan costs 36 EUR (annual plan).")
    expect(diff).to_contain_text("+Best, Kim")
    page.locator("#submit-edit").click()
    expect(page.get_by_role("status").first).to_contain_text("edit of")
    # The edit is recorded, and routed again by the service (its policy.decided follows).
    recorded(settings, store, ingest, 1)
    # The page reloads itself (every second) until the edit is recorded: no reload of ours
    # to race with it.
    expect(page.locator("#current")).to_have_text(EDIT)
    expect(page.locator("#version")).to_have_text(content_hash(EDIT))
    expect(page.locator("pre.diff").first).to_contain_text("+Best, Kim")
    page.get_by_role("button", name=re.compile("^Approve")).click()
    # The next item opens after a decision: r-2's step.
    page.wait_for_url(re.compile(r"step=r-2"))
    expect(page.get_by_role("status").first).to_contain_text("approve of r-1/step-1 sent")
    recorded(settings, store, ingest, 2)
    page.goto("/ui/runs/r-1")
    expect(page.locator(".approved")).to_have_text(EDIT)
    expect(page.locator(".reviewers")).to_contain_text("approved by kim (sales-lead)")
    expect(page.locator("#timeline")).to_contain_text("action.edited")
    expect(page.locator("#timeline")).to_contain_text("action.reviewed")
    expect(page.locator("#integrity")).to_contain_text("verifies")
    page.goto("/ui/queue")
    expect(page.locator("#queue")).not_to_contain_text(STEP)


def test_reject_without_a_comment_is_refused_on_the_page(
    browser: Browser, served: str, settings: Settings, store: RunStore
) -> None:
    page = signed_in(browser, served, add_principal(settings, "kim", roles=["sales-lead"]))
    page.goto(f"/ui/step?run=r-1&step={STEP}")
    page.get_by_role("button", name="Reject").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text("comment_required")
    expect(refusal).to_contain_text("a rejection needs a comment saying why")
    # Still waiting, and the forms are there to try again.
    expect(page.locator("#comment")).to_be_visible()
    page.locator("#comment").fill("The price is wrong: the annual plan is 36 EUR.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_url(re.compile(r"step=r-2"))
    expect(page.get_by_role("status").first).to_contain_text("reject of r-1/step-1 sent")


def test_a_reviewer_of_tenant_b_sees_nothing_of_tenant_a(
    browser: Browser, served: str, settings: Settings, store: RunStore
) -> None:
    page = signed_in(browser, served, add_principal(settings, "bo", "acme", roles=["sales-lead"]))
    expect(page.locator("#queue")).to_contain_text("b-1/step-1")
    expect(page.locator("#queue")).not_to_contain_text("r-1")
    for guessed in ("/ui/runs/r-1", f"/ui/step?run=r-1&step={STEP}", "/ui/receipt.md?run=r-1"):
        response = page.goto(guessed)
        assert response is not None and response.status == 404, guessed
        expect(page.locator("body")).not_to_contain_text("Our plan costs")
    page.goto("/ui/search")
    page.get_by_label("Workflow").fill("lead-followup")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#results")
    expect(results).to_contain_text("b-1")
    expect(results).not_to_contain_text("r-1")
    page.goto("/ui/search?touched=gmail/contact/ana@example.com")
    expect(page.locator("#results")).not_to_contain_text("r-1")


def test_the_keyboard_moves_through_the_queue_and_decides(
    browser: Browser, served: str, settings: Settings, store: RunStore
) -> None:
    page = signed_in(browser, served, add_principal(settings, "kim", roles=["sales-lead"]))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    expect(page.locator("#queue tbody tr.selected")).to_contain_text("r-1/step-1")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"step=r-1"))
    page.keyboard.press("j")
    page.wait_for_url(re.compile(r"step=r-2"))
    page.keyboard.press("k")
    page.wait_for_url(re.compile(r"step=r-1"))
    page.keyboard.press("e")
    expect(page.locator("#output")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    expect(page.locator("#comment")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    page.wait_for_url(re.compile(r"step=r-2"))
    expect(page.get_by_role("status").first).to_contain_text("approve of r-1/step-1 sent")


def test_the_receipt_and_search_read_and_work_with_javascript_off(
    browser: Browser, served: str, settings: Settings, store: RunStore, ingest: Ingest
) -> None:
    page = signed_in(browser, served, add_principal(settings, "kim", roles=["sales-lead"]), javascript=False)
    page.goto("/ui/search")
    page.get_by_label("Text in the input reference").fill("lead-42")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="r-1", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("r-1")
    expect(page.locator("dl.fields")).to_contain_text("1. Input reference")
    expect(page.locator("dl.fields")).to_contain_text("hubspot/form/lead-42")
    expect(page.locator("#timeline tbody tr")).to_have_count(len(waiting("r-1")))
    expect(page.locator("#integrity")).to_contain_text("verifies")
    # A run that relied on nothing: its receipt names the gap.
    seed(settings, store, [s for s in f.clean_run() if s.type != "source.used"])
    page.goto("/ui/runs/run-1")
    expect(page.locator("#findings")).to_contain_text("unknown_source")
    expect(page.locator("#final-state")).to_have_text("sent")
    page.goto("/ui/runs/r-1")
    page.get_by_role("link", name="runs that touched this record").click()
    expect(page.locator("#results")).to_contain_text("r-1")
    # "As of" a time: the receipt as it stood then (the picker's seconds, read as UTC).
    page.goto("/ui/runs/r-1")
    page.get_by_label("As of (UTC)").fill("2099-01-01T00:00:00")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("main")).to_contain_text("as of 2099-01-01 00:00:00 UTC")
    expect(page.locator("#timeline tbody tr")).to_have_count(len(waiting("r-1")))
    page.get_by_label("As of (UTC)").fill("2001-01-01T00:00:00")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_contain_text("had nothing recorded at 2001-01-01")
    # Without a script, an edit still previews its diff on a page of its own and submits.
    page.goto(f"/ui/step?run=r-1&step={STEP}")
    page.locator("#output").fill(EDIT)
    page.get_by_role("button", name="Save edit…").click()
    expect(page.locator("pre.diff")).to_contain_text("+Best, Kim")
    page.get_by_role("button", name="Submit edit").click()
    expect(page.get_by_role("status").first).to_contain_text("edit of r-1/step-1 sent")
    poll_until(ingest, lambda: ingest.totals.recorded >= 1)
