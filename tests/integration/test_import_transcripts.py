"""`receipts import` of chat transcripts with a tool mapping, on the real stack: the runs are
published on the steps topic, recorded once however often imported, and their receipts and
findings say exactly what happened — the customer's own actions and hand-offs are not the
agent's, consent before a write is kept at its real time, ids inside a read record are known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.bootstrap import build_projections
from api.cli import main
from domain.receipt_model import Receipt
from infra.settings import Settings
from infra.store import RunStore
from tests.integration.helpers import cli_env, client_for, ingest_for, poll_until, running_store

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "import"
FILES = [
    str(DATA / name)
    for name in ("retail.json", "phone.jsonl", "tickets-otel-v137.jsonl", "crm-otel-v136.json")
]
# The events the files hold: not the call of a tool the mapping does not name, nor a trace in
# conventions of a version the importer does not read.
PUBLISHED = 18 + 18 + 10 + 5
OTEL_CRM = "0af7651916cd43dd8448eb211c80319c"  # a trace that names no conversation: its trace id
RUNS = ("retail-1", "crm-3", "phone-7", "booking-5", "ticket-run-88", OTEL_CRM)


def _receipt(store: RunStore, run_id: str) -> Receipt:
    return store.receipt("default", run_id, timedelta(hours=1))


def _findings(receipt: Receipt) -> dict[str, tuple[str, frozenset[str]]]:
    """Each finding's code -> its severity and the steps it names."""
    return {
        f.code: (f.severity, frozenset(f.step_ids or ((f.step_id,) if f.step_id else ())))
        for f in receipt.findings
    }


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, kafka_bootstrap: str
) -> Any:  # a module fixture: one import on the real stack, many questions
    from uuid import uuid4

    import psycopg

    unique = uuid4().hex[:10]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "t_{unique}"')
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        database_schema=f"t_{unique}",
        topic=f"steps-{unique}",
        group=f"ingest-{unique}",
        partitions=4,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        policy=DATA / "policy.toml",
    )
    monkeypatch = pytest.MonkeyPatch()
    with running_store(settings) as store, ingest_for(settings, store) as ingest:
        cli_env(monkeypatch, settings, TOPIC=settings.topic)
        first = main(["import", *FILES, "--mapping", str(DATA / "support.yaml")])
        poll_until(ingest, lambda: ingest.totals.recorded >= PUBLISHED)
        again = main(["import", *FILES, "--mapping", str(DATA / "support.yaml")])
        poll_until(ingest, lambda: ingest.totals.duplicates >= PUBLISHED)
        build_projections(settings, store).catch_up()
        yield settings, store, ingest, (first, again)
    monkeypatch.undo()


def test_each_run_is_recorded_once_however_often_imported(imported: Any) -> None:
    _, store, ingest, codes = imported
    assert codes == (1, 1)  # what was skipped is said (exit 1)
    assert ingest.totals.recorded == PUBLISHED
    assert ingest.totals.duplicates == PUBLISHED
    for run_id in RUNS:
        assert _receipt(store, run_id).run_id == run_id


def test_a_confirmed_cancel_a_failed_exchange_and_malformed_arguments(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, "retail-1")
    cancel, exchange, address = receipt.steps
    assert (cancel.action and cancel.action.verb, cancel.execution and cancel.execution.state) == (
        "cancel_order",
        "written",
    )
    (consent,) = cancel.consents
    assert (consent.text, consent.at.isoformat()) == ("Yes, go ahead.", "2026-11-02T15:01:00+00:00")
    assert cancel.proposed_by is not None and cancel.proposed_by.kind == "agent"
    assert exchange.execution is None and exchange.failures == (
        "Error: non-delivered order status cannot be exchanged",
    )
    assert exchange.source_ids == ("shop/order/#W100", "shop/item/i-1", "shop/payment_method/pm-1")
    assert address.action is not None and address.action.params == {
        "unparsed_arguments": '{"order_id": "#W100", "address": '
    }
    assert _findings(receipt) == {
        # the address change ran, the exchange was tried: the format records no approvals
        "approvals_not_recorded": ("info", {exchange.step_id, address.step_id}),
        "malformed_arguments": ("warning", {address.step_id}),
        "no_source_evidence": ("info", {address.step_id}),
    }


def test_the_customers_own_actions_and_a_hand_off_need_no_approval(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, "phone-7")
    toggle, roaming, transfer = receipt.steps
    assert toggle.proposed_by is not None and (toggle.proposed_by.kind, toggle.proposed_by.role) == (
        "human",
        "customer",
    )
    assert transfer.action is not None and "handoff" in (transfer.signal.flags if transfer.signal else ())
    assert roaming.source_ids == ("telco/line/L-1",)  # inside the customer record it read
    assert receipt.final_state == "escalated"
    assert _findings(receipt) == {
        "approvals_not_recorded": ("info", {roaming.step_id}),
    }  # neither the customer's own toggle nor the hand-off owes the agent's sources


def test_a_booking_consented_a_failed_cancel_and_a_card_the_user_record_does_not_hold(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, "booking-5")
    book, cancel, unanswered = receipt.steps
    assert book.action is not None and book.action.target.id == "R-555"  # the id the booking created
    assert book.execution is not None and book.execution.external_ref == "R-555"
    # Naive times are the mapping's zone (New York, UTC-5 in November) ...
    assert [(c.text, c.at) for c in book.consents] == [
        ("yes please book it", datetime(2026, 11, 4, 19, 1, tzinfo=UTC))
    ]
    # ... and the user record's result, which has none, is a microsecond after its call.
    (user,) = [s for s in receipt.sources if s.key == "airline/user/mia-1"]
    assert user.retrieved_at == datetime(2026, 11, 4, 19, 0, 3, 1, tzinfo=UTC)
    assert len(cancel.failures) == 1 and "basic economy cannot be cancelled" in cancel.failures[0]
    assert unanswered.execution is None and unanswered.failures == ()
    assert receipt.final_state is None  # the source says nothing of how it ended
    assert _findings(receipt) == {
        "unknown_source": ("warning", {unanswered.step_id}),  # gift_card_3 is not in mia-1's record
        "approvals_not_recorded": ("info", {cancel.step_id}),
        "no_source_evidence": ("info", {cancel.step_id}),
        "no_rollback_link": ("info", {cancel.step_id}),
    }


def test_a_run_without_timestamps_is_on_the_marked_synthetic_clock(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, "crm-3")
    (note,) = receipt.steps
    assert note.signal is not None and "synthetic_clock" in note.signal.flags
    assert receipt.timestamps.started is not None and receipt.timestamps.started.year == 2000
    assert [c.text for c in note.consents] == ["Confirmed."]
    assert note.rollback is not None and note.rollback.runbook == 'call delete_note with {"note_id":"n-77"}'


def test_readiness_counts_the_imported_runs(imported: Any) -> None:
    settings, _, _, _ = imported
    with client_for(settings) as http:
        (workflow,) = http.get("/readiness", params={"workflow": "customer-support"}).json()["workflows"]
    (lane,) = workflow["lanes"]
    # phone-7 alone: info findings only, and finished (the traces say nothing of how they ended)
    assert (workflow["runs"], workflow["complete_receipts"]) == (6, 0.1667)
    assert {f["code"]: f["count"] for f in workflow["findings"]} == {
        "approvals_not_recorded": 5,
        "no_source_evidence": 2,
        "no_input_reference": 2,  # crm-3 and the older trace name no ticket
        "unknown_source": 1,
        "no_rollback_link": 1,
        "malformed_arguments": 1,
    }
    # 14 steps: 5 consented, 3 failed, 2 hand-offs; nobody edited, nothing was reverted.
    rates = ("steps", "consent_rate", "edit_rate", "failure_rate", "handoff_rate", "revert_rate")
    assert {k: lane[k] for k in ("lane", "runs", *rates)} == {
        "lane": "review",
        "runs": 6,
        "steps": 14,
        "consent_rate": 0.3571,
        "edit_rate": 0.0,
        "failure_rate": 0.2143,
        "handoff_rate": 0.1429,
        "revert_rate": 0.0,
    }
    assert lane["verdict"] == "stay in draft"


def test_a_trace_in_the_current_conventions(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, "ticket-run-88")
    assert receipt.input is not None and receipt.input.key == "zendesk/ticket/T-88"  # the mapping's `input`
    assert receipt.model is not None and (receipt.model.provider, receipt.model.name) == ("openai", "gpt-4o")
    raised, denied, transfer = receipt.steps
    assert [(c.text, c.at.isoformat(), c.given_by.id) for c in raised.consents] == [
        ("Yes, raise it to urgent please.", "2026-11-05T10:00:05+00:00", "cust-5")
    ]
    assert raised.execution is not None and raised.source_ids == ("zendesk/ticket/T-88",)
    assert denied.consents == () and denied.failures == ("permission denied: assignee",)
    assert transfer.execution is not None and transfer.execution.state == "routed"
    assert "kb/document/kb-123" in {s.key for s in receipt.sources}
    assert _findings(receipt) == {
        "approvals_not_recorded": ("info", {denied.step_id}),  # consent covered the first change only
    }


def test_a_trace_in_the_older_conventions(imported: Any) -> None:
    _, store, _, _ = imported
    receipt = _receipt(store, OTEL_CRM)
    assert receipt.model is not None and (receipt.model.provider, receipt.model.name) == (
        "anthropic",
        "claude-3-5-sonnet",
    )
    (note,) = receipt.steps
    assert note.action is not None and note.action.target.key == "hubspot/note/n-90"
    assert [(c.text, c.at.isoformat()) for c in note.consents] == [("yes", "2026-11-05T12:00:06+00:00")]
    assert _findings(receipt) == {"no_input_reference": ("warning", frozenset())}
