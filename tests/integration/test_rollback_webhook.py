"""The webhook and correction adapters against a real local HTTP server."""

from __future__ import annotations

import pytest

from infra.rollback import Corrected, Failed, Reverted
from infra.rollback.correction import CorrectionAdapter
from infra.rollback.webhook import WebhookAdapter
from tests.integration.targets import SECRET, reverse_event, webhook_receiver

pytestmark = pytest.mark.integration

NOTE = {"system": "hubspot", "kind": "note", "id": "n-7"}


def _adapter(url: str, **kw: object) -> WebhookAdapter:
    waits: list[float] = []
    kw.setdefault("timeout", 2.0)
    adapter = WebhookAdapter(url, SECRET, sleep=waits.append, **kw)  # type: ignore[arg-type]
    adapter.waits = waits  # type: ignore[attr-defined]
    return adapter


def test_a_crm_note_is_amended_to_its_prior_version_with_a_verifiable_signature() -> None:
    amend = reverse_event(method="amend", target=NOTE, prior_version="Call back on Monday", verb="add_note")
    with webhook_receiver() as receiver:
        outcome = _adapter(receiver.url).apply(amend)
    assert outcome == Reverted(f"applied:{amend.reverse_id}", verified=True)
    (delivery,) = receiver.deliveries
    assert delivery.verified and delivery.webhook_id == amend.reverse_id
    document = delivery.document
    assert document["type"] == "rollback.amend"
    assert document["data"]["prior_version"] == "Call back on Monday"
    assert document["data"]["target"] == {**NOTE, "uri": None}


def test_a_tampered_body_or_another_secret_does_not_verify() -> None:
    with webhook_receiver() as receiver:
        _adapter(receiver.url).apply(reverse_event(method="amend", target=NOTE))
    (delivery,) = receiver.deliveries
    delivery.body = delivery.body.replace(b"amend", b"delete")
    assert not delivery.verified


def test_two_503s_then_success_is_one_webhook_id_three_deliveries_with_backoff() -> None:
    amend = reverse_event(method="amend", target=NOTE)
    with webhook_receiver([(503, b"busy"), (503, b"busy")]) as receiver:
        adapter = _adapter(receiver.url)
        outcome = adapter.apply(amend)
    assert isinstance(outcome, Reverted)
    assert [d.status for d in receiver.deliveries] == [503, 503, 200]
    assert {d.webhook_id for d in receiver.deliveries} == {amend.reverse_id}
    assert len({d.body for d in receiver.deliveries}) == 1 and all(d.verified for d in receiver.deliveries)
    assert adapter.waits == [0.2, 0.4]  # type: ignore[attr-defined]


def test_a_4xx_is_a_failure_carrying_the_body_and_is_not_retried() -> None:
    with webhook_receiver([(422, b'{"error": "note n-7 is locked"}')]) as receiver:
        outcome = _adapter(receiver.url).apply(reverse_event(method="amend", target=NOTE))
    assert isinstance(outcome, Failed) and not outcome.retryable
    assert "422" in outcome.error and "note n-7 is locked" in outcome.error
    assert len(receiver.deliveries) == 1


def test_a_target_that_stays_down_is_a_retryable_failure_after_every_attempt() -> None:
    with webhook_receiver([(500, b"down")] * 3) as receiver:
        outcome = _adapter(receiver.url, attempts=3).apply(reverse_event(method="amend", target=NOTE))
    assert isinstance(outcome, Failed) and outcome.retryable
    assert "500" in outcome.error and "3 attempts" in outcome.error and len(receiver.deliveries) == 3


def test_no_answer_in_time_is_retried() -> None:
    with webhook_receiver() as receiver:
        url = receiver.url
    # The server is gone: nothing listens on its port.
    adapter = _adapter(url, attempts=2)
    outcome = adapter.apply(reverse_event(method="amend", target=NOTE))
    assert isinstance(outcome, Failed) and outcome.retryable and "did not answer" in outcome.error
    assert adapter.waits == [0.2]  # type: ignore[attr-defined]


def test_an_email_is_corrected_not_reverted_and_the_owner_is_told() -> None:
    email = reverse_event(
        method="correct",
        verb="send_email",
        target={"system": "gmail", "kind": "contact", "id": "ana@example.com"},
        external_ref="msg-123",
        runbook="reply with the right price",
    )
    with webhook_receiver() as receiver:
        outcome = CorrectionAdapter(_adapter(receiver.url)).apply(email)
    assert isinstance(outcome, Corrected)
    assert "send_email to gmail/contact/ana@example.com (msg-123) cannot be undone" in outcome.correction
    assert "the price was wrong" in outcome.correction and "reply with the right price" in outcome.correction
    (delivery,) = receiver.deliveries
    assert delivery.verified and delivery.webhook_id == email.reverse_id
    assert delivery.document["type"] == "rollback.corrected"
    assert delivery.document["data"]["correction"] == outcome.correction


def test_a_correction_whose_owner_cannot_be_told_fails() -> None:
    with webhook_receiver([(403, b"forbidden")]) as receiver:
        outcome = CorrectionAdapter(_adapter(receiver.url)).apply(reverse_event(method="correct"))
    assert isinstance(outcome, Failed) and not outcome.retryable and "owner was not told" in outcome.error


def test_an_answer_that_does_not_come_in_time_is_retried_with_the_same_id() -> None:
    amend = reverse_event(method="amend", target=NOTE)
    with webhook_receiver() as receiver:
        receiver.hold_next = True  # the first delivery is taken and never answered in time
        outcome = _adapter(receiver.url, timeout=0.5).apply(amend)
        receiver.release.set()
    assert isinstance(outcome, Reverted)
    assert [d.webhook_id for d in receiver.deliveries] == [amend.reverse_id] * 2
