"""The reviewer's console over HTTP (no browser): sign-in and its cookie, CSRF, sessions
that end, tenants, search errors. tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build_queries
from api.demo import publish_demo
from api.web import create_app
from domain.policy import sample_policy, sample_text
from domain.principals import token_digest
from domain.steps import SERVICE, StepEvent, content_hash
from infra.principals import Principals
from infra.publisher import Publisher
from infra.settings import Settings
from infra.store import RunStore
from projections.queue import ReviewerQueue
from schemas import Codec
from tests.fakes import FakeProducer
from tests.integration.console import STEP, console_for, csrf_of, seed, waiting
from tests.integration.helpers import add_principal, query, running_store
from tests.unit import factories as f

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with running_store(settings) as store:
        seed(settings, store, waiting("r-1"), waiting("b-1", tenant="acme"))
        yield store


def decision_form(csrf: str | None, **more: str) -> dict[str, str]:
    form = {"run_id": "r-1", "step_id": STEP, "version_hash": content_hash(f.DRAFT), **more}
    return form | ({"csrf": csrf} if csrf is not None else {})


def test_sign_in_keeps_a_server_side_session_in_a_strict_http_only_cookie(
    settings: Settings, store: RunStore
) -> None:
    token = add_principal(settings, "kim", roles=["sales-lead"])
    with TestClient(create_app(settings)) as client:
        form = client.get("/ui/")
        assert form.status_code == 200 and 'type="password"' in form.text
        signed = client.post(
            "/ui/", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/queue"
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("receipts_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        session_id = cookie.split(";")[0].split("=", 1)[1]
        # Only the session id's digest is stored, beside the principal and the CSRF token.
        ((digest, who),) = query(settings, "SELECT id_digest, principal_id FROM receipts_sessions")
        assert (digest, who) == (token_digest(session_id), "kim") and session_id not in digest
        queue = client.get("/ui/queue")
        assert queue.status_code == 200 and STEP in queue.text and "kim" in queue.text
        assert token not in queue.text


def test_sign_in_refuses_a_bad_token_and_a_form_without_its_csrf(settings: Settings, store: RunStore) -> None:
    with TestClient(create_app(settings)) as client:
        form = client.get("/ui/")
        bad = client.post("/ui/", data={"token": "rcpt_" + "x" * 43, "csrf": csrf_of(form.text)})
        assert bad.status_code == 401 and "unknown or revoked token" in bad.text
        forged = client.post("/ui/", data={"token": add_principal(settings, "kim"), "csrf": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert "receipts_session" not in client.cookies
        assert client.get("/ui/queue").status_code == 401  # the sign-in page


def test_a_decision_without_the_sessions_csrf_token_is_refused_and_nothing_is_recorded(
    settings: Settings, store: RunStore
) -> None:
    with console_for(settings, "kim") as (client, csrf):
        before = len(store.run("default", "r-1").entries)
        for sent in (None, "not-the-token", csrf[:-1]):
            response = client.post("/ui/decide", data=decision_form(sent, decision="approve"))
            assert response.status_code == 403 and "CSRF" in response.text
        assert len(store.run("default", "r-1").entries) == before  # not even a refusal
        preview = client.post("/ui/preview", data=decision_form("x", output="new"))
        assert preview.status_code == 403
        signout = client.post("/ui/signout", data={"csrf": "x"})
        assert signout.status_code == 403 and client.get("/ui/queue").status_code == 200


def test_a_refused_decision_shows_its_rule_and_is_recorded(settings: Settings, store: RunStore) -> None:
    with console_for(settings, "kim") as (client, csrf):
        response = client.post("/ui/decide", data=decision_form(csrf, decision="reject", comment="  "))
        assert response.status_code == 403
        assert "comment_required" in response.text and "a rejection needs a comment" in response.text
        refused = [e.step for e in store.run("default", "r-1").entries if e.step.type == "decision.refused"]
        assert [r.data.rule for r in refused] == ["comment_required"]  # type: ignore[union-attr]
        # A role the step does not ask for: refused by the same rule as the API's.
    with console_for(settings, "ops", roles=("support",)) as (client, csrf):
        response = client.post("/ui/decide", data=decision_form(csrf, decision="approve"))
        assert response.status_code == 403 and "role_required" in response.text


def test_sign_out_revocation_and_expiry_end_the_session(settings: Settings, store: RunStore) -> None:
    with console_for(settings, "kim") as (client, csrf):
        cookie = client.cookies["receipts_session"]
        out = client.post("/ui/signout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        client.cookies.set("receipts_session", cookie, path="/ui")  # kept by a stolen copy
        assert client.get("/ui/queue").status_code == 401
    with console_for(settings, "lee") as (client, _csrf):
        Principals(store.steps.datastore, settings.database_schema).revoke("lee")
        page = client.get("/ui/queue")
        assert page.status_code == 401 and "sign in again" in page.text
    with console_for(settings, "max") as (client, _csrf):
        query(settings, "UPDATE receipts_sessions SET expires_at = now() - interval '1 second' RETURNING 1")
        assert client.get("/ui/queue").status_code == 401


def test_a_reviewer_of_another_tenant_sees_nothing_of_this_one(settings: Settings, store: RunStore) -> None:
    with console_for(settings, "bo", tenant="acme") as (client, csrf):
        queue = client.get("/ui/queue").text
        assert "b-1/step-1" in queue and "r-1" not in queue
        for url in ("/ui/runs/r-1", f"/ui/step?run=r-1&step={STEP}", "/ui/receipt.md?run=r-1"):
            response = client.get(url)
            assert response.status_code == 404 and f.DRAFT.splitlines()[0] not in response.text, url
        for asked in (
            "",
            "?workflow=lead-followup",
            "?touched=gmail/contact/ana@example.com",
            "?source=cms/page/pricing",
        ):
            found = client.get("/ui/search" + asked)
            assert found.status_code == 200 and "r-1" not in found.text, asked
        response = client.post("/ui/decide", data=decision_form(csrf, decision="approve"))
        assert response.status_code == 404
        assert not [e for e in store.run("default", "r-1").entries if e.step.type == "decision.refused"]


def test_the_queue_shows_the_roles_steps_and_filters_them(settings: Settings, store: RunStore) -> None:
    with console_for(settings, "kim") as (client, _csrf):
        assert STEP in client.get("/ui/queue?workflow=lead-followup&lane=review").text
        assert STEP not in client.get("/ui/queue?workflow=support-triage").text
        assert STEP not in client.get("/ui/queue?lane=escalate").text
        assert client.get("/ui/queue?lane=auto").status_code == 422
        # The filter form sends its empty fields: "any".
        assert STEP in client.get("/ui/queue?workflow=&lane=&cursor=").text
    with console_for(settings, "ops", roles=("support",)) as (client, _csrf):
        assert STEP not in client.get("/ui/queue").text


def test_search_names_a_bad_field_and_the_markdown_receipt_is_the_apis(
    settings: Settings, store: RunStore
) -> None:
    with console_for(settings, "kim") as (client, _csrf):
        bad = client.get("/ui/search?since=yesterday")
        assert bad.status_code == 422 and "since" in bad.text
        assert client.get("/ui/search?touched=hubspot").status_code == 422
        window = client.get("/ui/search?since=2025-03-03T09:00&until=2025-03-03T10:00")
        assert window.status_code == 200 and "/ui/runs/r-1" in window.text
        markdown = client.get("/ui/receipt.md?run=r-1")
        assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
        assert "r-1" in markdown.text
        assert client.get("/ui/runs/r-1?as_of=not-a-time").status_code == 422


def test_the_reviewers_queue_is_soonest_to_expire_first_then_no_deadline_and_pages(
    settings: Settings, store: RunStore
) -> None:
    policy = sample_policy()
    store.record_policy(policy, sample_text(), "test")

    def routed(
        run_id: str, minutes: float, by_service: bool = True, role: str | None = "sales-lead"
    ) -> list[StepEvent]:
        step, where = f"{run_id}/step-1", {"run_id": run_id}
        decided = {"policy_version": policy.version, "source": "service", "by": SERVICE} if by_service else {}
        return [
            f.started(at=f.at(minutes), **where),
            f.proposed(step, at=f.at(minutes + 2), **where),
            f.policy(step, "review", at=f.at(minutes + 3), required_role=role, **decided, **where),
        ]

    # r-1 (the fixture's) and r-none were decided by a platform: no contract, no deadline.
    seed(settings, store, routed("r-late", 60), routed("r-soon", 0), routed("r-none", -100, by_service=False))
    seed(settings, store, routed("r-anyone", 30, role=None), routed("r-support", 10, role="support"))
    queries = build_queries(settings, store)
    asked = ReviewerQueue(roles=["sales-lead"], limit=2)
    order, cursor = [], None
    while True:
        listed = queries.reviewer_queue("default", asked.model_copy(update={"cursor": cursor}))
        order += [(i.run_id, i.expires_at is not None) for i in listed.items]
        if not (cursor := listed.next_cursor):
            break
    # Soonest deadline first (the lead-followup contract: four hours), then no deadline, oldest first.
    assert order == [
        ("r-soon", True),
        ("r-anyone", True),
        ("r-late", True),
        ("r-none", False),
        ("r-1", False),
    ]
    # Another role: its own steps and those that need no role.
    support = queries.reviewer_queue("default", ReviewerQueue(roles=["support"]))
    assert [i.run_id for i in support.items] == ["r-support", "r-anyone"]


def test_pages_are_guarded_and_an_agents_uri_is_never_a_script_link(
    settings: Settings, store: RunStore
) -> None:
    hostile = {**f.TARGET, "uri": "javascript:alert(document.cookie)"}
    step = "r-js/step-1"
    seed(
        settings,
        store,
        [
            f.started(run_id="r-js", at=f.at(0)),
            f.proposed(step, run_id="r-js", target=hostile, output="<script>alert(1)</script>\n", at=f.at(1)),
            f.policy(step, "review", run_id="r-js", at=f.at(2)),
        ],
    )
    with console_for(settings, "kim") as (client, _csrf):
        page = client.get(f"/ui/step?run=r-js&step={step}")
        assert page.status_code == 200
        assert "javascript:alert(document.cookie)" in page.text  # shown, as text
        assert 'href="javascript:' not in page.text and "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"


def test_escalate_sends_the_decision_and_opens_the_next_item(settings: Settings, store: RunStore) -> None:
    seed(settings, store, waiting("r-2", minutes=10))
    with console_for(settings, "kim") as (client, csrf):
        response = client.post(
            "/ui/decide",
            data=decision_form(csrf, decision="escalate", comment="legal should see this"),
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        where = response.headers["location"]
        assert "step=r-2%2Fstep-1" in where and "escalate+of+r-1%2Fstep-1+sent" in where


def test_every_demo_run_renders_its_receipt_and_steps(settings: Settings, store: RunStore) -> None:
    """The demo's runs hold every kind of step (edits, escalations, executions, reverts,
    corrections, the boring failures): each page renders them."""
    producer = FakeProducer()
    run_ids = publish_demo(Publisher(producer=producer, encoding="json", decisions=None))
    codec = Codec()
    steps = [codec.decode(value) for value in producer.accepted]
    seed(settings, store, steps)
    with console_for(settings, "kim") as (client, _csrf):
        for run_id in run_ids:
            receipt = client.get(f"/ui/runs/{run_id}")
            assert (
                receipt.status_code == 200 and f'Receipt for run <span id="run-id">{run_id}' in receipt.text
            )
            timeline = receipt.text[receipt.text.index('id="timeline"') :]
            assert [s.event_id for s in steps if s.run_id == run_id] == re.findall(
                r"<tr><td>\d+</td>.*?<code>([^<]*)</code></td></tr>", timeline
            )
            for step in {s.step_id for s in steps if s.run_id == run_id and s.step_id}:
                assert client.get("/ui/step", params={"run": run_id, "step": step}).status_code == 200
            assert client.get("/ui/receipt.md", params={"run": run_id}).status_code == 200


def test_after_an_edit_the_step_waits_for_it_then_says_it_did_not_arrive(
    settings: Settings, store: RunStore
) -> None:
    with console_for(settings, "kim") as (client, _csrf):
        asked = {"run": "r-1", "step": STEP, "edited": content_hash("an edit not recorded yet")}
        waiting_page = client.get("/ui/step", params={**asked, "sent_at": str(time.time())}).text
        assert 'http-equiv="refresh"' in waiting_page and 'id="approve"' not in waiting_page
        late = client.get("/ui/step", params={**asked, "sent_at": str(time.time() - 60)}).text
        assert "not recorded after 30 seconds" in late
        assert 'http-equiv="refresh"' not in late and 'id="approve"' in late
        # The edit recorded (here: the version named is the current one): nothing to wait for.
        current = client.get("/ui/step", params={**asked, "edited": content_hash(f.DRAFT)}).text
        assert 'http-equiv="refresh"' not in current and 'id="approve"' in current
