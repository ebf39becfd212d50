"""`receipts demo`: realistic runs for the four lanes of the brief, an order change a
customer consented to, and one that shows the boring failures a receipt must expose."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain.step_values import Actor
from domain.steps import content_hash
from infra.publisher import Publisher

MARIA = Actor(kind="human", id="maria@acme.example", role="sales-lead")
DEV = Actor(kind="human", id="dev@acme.example", role="web-owner")
SUPPORT = Actor(kind="human", id="sam@acme.example", role="support-lead")
CLAUDE = {"provider": "anthropic", "name": "claude-sonnet", "version": "4.5"}


def lead_followup(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """Lead form -> follow-up email; the reviewer edits the draft, then approves her edit."""
    bot = Actor(kind="agent", id="lead-bot")
    with publisher.run(
        "lead-followup",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={
            "system": "hubspot",
            "kind": "form_submission",
            "id": "lead-8812",
            "uri": "https://crm.example/forms/lead-8812",
        },
        agent={"name": "lead-bot", "version": "2.3.0"},
        model=CLAUDE,
    ) as run:
        form = run.source(
            "hubspot",
            "form_submission",
            "lead-8812",
            at=t0,
            excerpt="Team of 40, wants SSO, asked about annual pricing",
            retrieved_at=t0,
        )
        pricing = run.source(
            "cms",
            "page",
            "pricing",
            version="v12",
            at=t0,
            uri="https://acme.example/pricing",
            retrieved_at=t0 - timedelta(hours=2),
            excerpt="Business plan: $24/seat/month billed annually",
        )
        draft = (
            "Hi Dana,\n\nThanks for your interest in Acme. For a team of 40 the Business plan "
            "is $24/seat/month.\nSSO is included.\n\nBest,\nAcme"
        )
        step = run.propose(
            "send_email",
            {"system": "hubspot", "kind": "contact", "id": "dana-lee-4410"},
            "gmail.send",
            output=draft,
            params={"to": "dana@bigco.example", "subject": "Acme"},
            confidence=0.86,
            reason_code="lead.qualified",
            sources=[form, pricing],
            rollback={"method": "none", "runbook": "send a correction email"},
            at=t0 + _s(2),
        )
        step.policy(
            "outbound-email-review",
            "2026-11-01",
            "review",
            reasons=["customer-facing email"],
            required_role="sales-lead",
            at=t0 + _s(3),
        )
        step.edit(
            draft.replace("SSO is included.", "SSO is included on Business and above, billed annually."),
            by=MARIA,
            at=t0 + _s(120),
        )
        step.review("approved", by=MARIA, comment="clarified SSO billing", at=t0 + _s(130))
        step.executed("sent", external_ref="gmail-msg-19ac2", at=t0 + _s(131))
        run.finish("sent", at=t0 + _s(132))


def support_triage(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """Support ticket -> queue; the word "cancel" forces escalation to a human."""
    bot = Actor(kind="agent", id="triage-bot")
    with publisher.run(
        "support-triage",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={"system": "zendesk", "kind": "ticket", "id": "ZD-5521"},
        agent={"name": "triage-bot", "version": "1.8.1"},
        model=CLAUDE,
    ) as run:
        ticket = run.source(
            "zendesk",
            "ticket",
            "ZD-5521",
            version="3",
            at=t0,
            retrieved_at=t0,
            excerpt="I want to cancel my subscription, the export keeps failing",
        )
        account = run.source(
            "stripe",
            "customer",
            "cus_88Q",
            at=t0,
            retrieved_at=t0,
            excerpt="plan=Business seats=12 renews=2027-01-04",
        )
        step = run.propose(
            "route_ticket",
            {"system": "zendesk", "kind": "ticket", "id": "ZD-5521"},
            "zendesk.update",
            params={"group": "billing", "priority": "high"},
            output="route to: billing (priority high)",
            confidence=0.91,
            reason_code="billing.export_failure",
            flags=["cancellation_keyword"],
            sources=[ticket, account],
            rollback={"method": "revert", "prior_version": "ticket rev 3"},
            at=t0 + _s(1),
        )
        step.policy(
            "cancellation-escalates",
            "2026-11-01",
            "escalate",
            reasons=["input mentions cancellation"],
            required_role="support-lead",
            at=t0 + _s(1),
        )
        step.review("escalated", by=SUPPORT, comment="retention team takes it", at=t0 + _s(300))
        step.review(
            "approved",
            by=SUPPORT,
            comment="route to retention, not billing",
            reviewed_hash=step.edit("route to: retention (priority high)", by=SUPPORT, at=t0 + _s(310)),
            at=t0 + _s(311),
        )
        step.executed("routed", external_ref="ZD-5521@rev4", at=t0 + _s(312))
        run.finish("escalated", at=t0 + _s(313))


def pricing_update(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """Website pricing update -> preview -> approval -> deploy, then reverted by a commit."""
    bot = Actor(kind="agent", id="site-bot")
    with publisher.run(
        "website-update",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={"system": "linear", "kind": "issue", "id": "WEB-311", "uri": "https://linear.example/WEB-311"},
        agent={"name": "site-bot", "version": "0.9.4"},
        model=CLAUDE,
    ) as run:
        sheet = run.source(
            "gsheets",
            "sheet",
            "pricing-2027",
            version="rev 41",
            at=t0,
            retrieved_at=t0,
            excerpt="Team: $12 -> $14",
        )
        step = run.propose(
            "update_page",
            {"system": "github", "kind": "file", "id": "site/pricing.md"},
            "github.pull_request",
            output="Team plan: $14/seat/month",
            params={"branch": "pricing-2027", "preview": "https://preview-311.acme.example"},
            confidence=0.74,
            sources=[sheet],
            rollback={
                "method": "revert",
                "ref": "git:main",
                "prior_version": "a1b2c3d",
                "runbook": "git revert the deploy commit",
            },
            at=t0 + _s(5),
        )
        step.policy(
            "public-site-review",
            "2026-11-01",
            "review",
            reasons=["public-facing page"],
            required_role="web-owner",
            at=t0 + _s(5),
        )
        step.review("approved", by=DEV, comment="preview looks right", at=t0 + _s(600))
        step.executed(
            "published", external_ref="commit 9f8e7d6", url="https://acme.example/pricing", at=t0 + _s(660)
        )
        run.finish("published", at=t0 + _s(661))
        step.rollback_requested("Team price not effective until Jan 1", by=DEV, at=t0 + _s(3600))
        step.reverted("revert", reverse_ref="commit 0c1d2e3 (revert 9f8e7d6)", by=DEV, at=t0 + _s(3660))


def crm_note(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """Call transcript -> CRM note. "May be ready next week" must not become "approved
    rollout": the reviewer rejects the overreaching draft and approves a faithful edit."""
    bot = Actor(kind="agent", id="notes-bot")
    with publisher.run(
        "crm-notes",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={"system": "gong", "kind": "call", "id": "call-7730", "hash": "sha256:9d1c"},
        agent={"name": "notes-bot", "version": "3.0.2"},
        model=CLAUDE,
    ) as run:
        call = run.source(
            "gong",
            "transcript",
            "call-7730",
            at=t0,
            retrieved_at=t0,
            excerpt="...the integration may be ready next week, I can't promise",
        )
        draft = "Customer confirmed approved rollout of the integration next week."
        step = run.propose(
            "write_note",
            {"system": "salesforce", "kind": "opportunity", "id": "006Qx01"},
            "salesforce.note",
            output=draft,
            confidence=0.62,
            sources=[call],
            rollback={"method": "amend", "runbook": "edit the note, keep history"},
            at=t0 + _s(4),
        )
        step.policy(
            "crm-write-review",
            "2026-11-01",
            "review",
            reasons=["commitment language in a CRM note"],
            at=t0 + _s(4),
        )
        step.review("rejected", by=MARIA, comment="the customer did not approve a rollout", at=t0 + _s(200))
        step.edit(
            "Customer said the integration may be ready next week (no commitment).", by=MARIA, at=t0 + _s(230)
        )
        step.review("approved", by=MARIA, at=t0 + _s(240))
        step.executed("noted", external_ref="note-00Tx9", at=t0 + _s(241))
        run.finish("edited", at=t0 + _s(242))


def order_change(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """Customer chat -> a new shipping address on their order. The agent asked, the customer
    said yes before the tool call: the order-support contract takes that consent for the
    approval, so no reviewer waits on it, and the execution names the consent it relied on."""
    bot = Actor(kind="agent", id="order-bot")
    customer = Actor(kind="human", id="kai@example.com", role="customer")
    with publisher.run(
        "order-support",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={"system": "intercom", "kind": "conversation", "id": "conv-3310"},
        agent={"name": "order-bot", "version": "1.2.0"},
        model=CLAUDE,
    ) as run:
        order = run.source(
            "shopify",
            "order",
            "1042",
            version="rev 6",
            at=t0,
            retrieved_at=t0,
            excerpt="ship to: 4 Elm St, Leeds; status: unfulfilled",
        )
        step = run.propose(
            "change_address",
            {"system": "shopify", "kind": "order", "id": "1042"},
            "shopify.orders.update",
            output="ship to: 12 Park Row, Leeds",
            params={"shipping_address": "12 Park Row, Leeds"},
            confidence=0.93,
            reason_code="order.address_change",
            sources=[order],
            rollback={
                "method": "amend",
                "prior_version": "ship to: 4 Elm St, Leeds",
                "runbook": "set the old address back before the order ships",
            },
            at=t0 + _s(31),
        )
        # Said a second before the call, recorded after the proposal: its real time is kept.
        yes = step.consent(
            "Yes, please send it to 12 Park Row instead", by=customer, pattern=r"(?i)^yes\b", at=t0 + _s(30)
        )
        step.policy(
            "order-change-review",
            "2026-11-01",
            "review",
            reasons=["changes a customer's order"],
            required_role="support-lead",
            at=t0 + _s(31),
        )
        step.executed("written", external_ref="order-1042@rev7", authorization_ref=yes, at=t0 + _s(33))
        run.finish("synced", at=t0 + _s(34))


def boring_failures(publisher: Publisher, run_id: str, t0: datetime) -> None:
    """The gaps a receipt must expose: no source evidence, executed without approval,
    no rollback link, and an edit nobody recorded."""
    bot = Actor(kind="agent", id="outreach-bot")
    with publisher.run(
        "lead-followup",
        run_id=run_id,
        actor=bot,
        at=t0,
        input={"system": "hubspot", "kind": "form_submission", "id": "lead-9001"},
        agent={"name": "outreach-bot", "version": "0.1.0"},
        model=CLAUDE,
    ) as run:
        step = run.propose(
            "send_email",
            {"system": "hubspot", "kind": "contact", "id": "pat-9001"},
            "gmail.send",
            output="Hi Pat, your discount of 40% is approved!",
            confidence=0.97,
            at=t0 + _s(1),
        )
        # What went out is not what was proposed, and no edit says who changed it.
        sent = "Hi Pat, your discount of 40% is approved! Reply today to claim it."
        step.executed("sent", executed_hash=content_hash(sent), external_ref="gmail-msg-77f01", at=t0 + _s(2))
        run.finish("sent", at=t0 + _s(3))


SCENARIOS: dict[str, Callable[[Publisher, str, datetime], None]] = {
    "lead-followup": lead_followup,
    "support-triage": support_triage,
    "pricing-update": pricing_update,
    "crm-note": crm_note,
    "order-change": order_change,
    "boring-failures": boring_failures,
}


def publish_demo(publisher: Publisher, prefix: str = "demo", now: datetime | None = None) -> list[str]:
    """Publish every scenario; returns the run ids."""
    t0 = (now or datetime.now(UTC)) - timedelta(hours=2)
    run_ids = []
    for name, scenario in SCENARIOS.items():
        run_id = f"{prefix}-{name}"
        scenario(publisher, run_id, t0)
        run_ids.append(run_id)
    publisher.flush()
    return run_ids


def _s(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)
