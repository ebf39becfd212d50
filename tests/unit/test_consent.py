"""A customer's consent (wire v4 `consent.given`): kept in the receipt with its words and real
time, linked to the step it covers, in whichever order it arrived."""

from __future__ import annotations

from api.render import receipt_text
from domain.receipt import render
from domain.receipt_model import Receipt
from domain.steps import StepEvent
from tests.unit import factories as f


def _receipt(*steps: StepEvent) -> Receipt:
    return render(f.entries(*steps))


def _run_with_consent(consent_first: bool) -> list[StepEvent]:
    """The customer said yes at minute 1; the call was proposed at minute 2."""
    said = f.consent(text="Yes, please cancel order W-1", at=f.at(1), event_id="consent-1")
    proposal = f.proposed(at=f.at(2))
    return [
        f.started(at=f.at(0)),
        *([said, proposal] if consent_first else [proposal, said]),
        f.executed(at=f.at(3)),
        f.finished(at=f.at(4)),
    ]


def test_the_receipt_shows_the_consent_words_and_real_time_on_the_step_it_covers() -> None:
    for consent_first in (True, False):
        (step,) = _receipt(*_run_with_consent(consent_first)).steps
        (consent,) = step.consents
        assert (consent.text, consent.at) == ("Yes, please cancel order W-1", f.at(1))
        assert consent.event_id == "consent-1"
        assert (consent.given_by.kind, consent.given_by.role) == ("human", "customer")
        assert consent.pattern == r"(?i)\b(yes|go ahead)\b"
        # Its real time, before the proposal, though it may have arrived after it.
        assert (step.timestamps.consented, step.timestamps.proposed) == (f.at(1), f.at(2))


def test_a_consent_recorded_before_its_proposal_is_not_out_of_order() -> None:
    codes = [x.code for x in _receipt(*_run_with_consent(consent_first=True)).findings]
    assert "out_of_order" not in codes and "unknown_step" not in codes


def test_a_consent_for_a_step_never_proposed_is_named() -> None:
    receipt = _receipt(f.started(at=f.at(0)), f.consent("ghost", at=f.at(1), event_id="c-ghost"))
    (unknown,) = [x for x in receipt.findings if x.code == "unknown_step"]
    assert unknown.event_ids == ("c-ghost",)


def test_consents_are_listed_in_the_order_they_were_given_not_received() -> None:
    late, early = f.consent(text="ok", at=f.at(5)), f.consent(text="yes", at=f.at(1))
    (step,) = _receipt(f.started(), f.proposed(at=f.at(2)), late, early).steps
    assert [c.text for c in step.consents] == ["yes", "ok"]
    assert step.timestamps.consented == f.at(1)


def test_the_text_receipt_quotes_the_consent_and_its_time() -> None:
    text = receipt_text(_receipt(*_run_with_consent(consent_first=False)))
    assert 'cust-7 (customer) said "Yes, please cancel order W-1" at 2025-03-03T09:01:00+00:00' in text
    assert "consented 2025-03-03T09:01:00+00:00" in text


def test_a_consent_answers_the_receipts_who_approved_question() -> None:
    without = [s for s in _run_with_consent(consent_first=True) if s.type != "consent.given"]
    assert "reviewer" in _receipt(*without).gaps()
    assert "reviewer" not in _receipt(*_run_with_consent(consent_first=True)).gaps()
