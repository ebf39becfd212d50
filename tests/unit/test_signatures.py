"""Who may write, without servers: signing, checking each way a signature fails, the policy's
handling, the key cache, and the vouch kept beside a stored step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from kafka import TopicPartition

from api.render import receipt_markdown, receipt_text
from consumers.ingest import Ingest
from consumers.plan import vouched
from consumers.signatures import SignatureCheck, Unvouched
from domain.policy import PublisherRules, SignatureRules, load_policy, sample_text
from domain.receipt import render
from domain.steps import StepEvent
from domain.vouches import (
    PUBLISHER_HEADER,
    SERVICE_PUBLISHER,
    SIGNATURE_HEADER,
    WRITTEN_BY_SERVICE,
    Vouch,
    signed_bytes,
)
from infra.dead_letters import DeadLetter
from infra.publishers import (
    KnownKey,
    PublisherKeys,
    PublisherRecord,
    Signer,
    service_public_key,
    service_signer,
)
from infra.retry import Backoff
from infra.rows import header_digest, read_step_state, step_state, subject_fields
from infra.signing import SigningKey, ensure_signing_key
from schemas.codec import encode_json
from tests.unit import factories as f
from tests.unit.test_ingest_plan import AwayStore, SeekingPolls
from tests.unit.test_ingest_plan import Record as PlanRecord

CRM = Signer("crm-bot", SigningKey.generate())
REVOKED_AT = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Record:
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "steps"
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"r"


def record(
    step: StepEvent, signer: Signer | None = CRM, headers: list[tuple[str, bytes]] | None = None
) -> Any:
    value = encode_json(step)
    return Record(value, headers if headers is not None else (signer.headers(value) if signer else []))


def registered(name: str, tenant: str, key: SigningKey, revoked: datetime | None = None) -> PublisherRecord:
    return PublisherRecord(name, tenant, key.public, REVOKED_AT, "tests", revoked)


class Keys:
    """The registered keys as a list the cache loads, counting the loads."""

    def __init__(self, *records: PublisherRecord) -> None:
        self.records = list(records)
        self.loads = 0

    def __call__(self) -> list[PublisherRecord]:
        self.loads += 1
        return list(self.records)


def check(*records: PublisherRecord) -> SignatureCheck:
    return SignatureCheck(PublisherKeys(Keys(registered("crm-bot", "acme", CRM.key), *records)))


STEP = f.started(tenant="acme")


def test_a_good_signature_vouches_and_covers_exactly_the_bytes_sent() -> None:
    sent = record(STEP)
    signature = dict(sent.headers)[SIGNATURE_HEADER]
    assert check().check(STEP, sent) == Vouch("crm-bot", signature)
    assert CRM.key.public.verifies(signature, signed_bytes(sent.value))
    # The signature is over a prefixed message: the bare value does not verify with it.
    assert not CRM.key.public.verifies(signature, sent.value)
    altered = Record(sent.value.replace(b"acme", b"acmf"), sent.headers)
    assert _code(check().check(STEP, altered)) == "bad_signature"


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ([(PUBLISHER_HEADER, b"crm-bot")], "half a signature"),
        ([(SIGNATURE_HEADER, b"x" * 64)], "half a signature"),
        ([(PUBLISHER_HEADER, b""), (SIGNATURE_HEADER, b"x" * 64)], "half a signature"),
        ([(PUBLISHER_HEADER, b"crm-bot"), (SIGNATURE_HEADER, b"short")], "does not match"),
        ([(PUBLISHER_HEADER, b"crm-bot"), (SIGNATURE_HEADER, b"x" * 64)], "does not match"),
        ([(PUBLISHER_HEADER, b"ghost"), (SIGNATURE_HEADER, b"x" * 64)], "'ghost', which is not registered"),
    ],
)
def test_each_broken_signature_is_bad_and_says_why(headers: list[tuple[str, bytes]], said: str) -> None:
    checked = check().check(STEP, record(STEP, headers=headers))
    assert isinstance(checked, Unvouched) and checked.code == "bad_signature" and said in checked.message


def test_a_revoked_key_and_another_tenants_key_vouch_for_nothing() -> None:
    old, globex = Signer("old-bot", SigningKey.generate()), Signer("globex-bot", SigningKey.generate())
    checking = check(
        registered("old-bot", "acme", old.key, REVOKED_AT), registered("globex-bot", "globex", globex.key)
    )
    revoked = checking.check(STEP, record(STEP, old))
    assert _code(revoked) == "bad_signature" and "revoked" in str(revoked)
    other = checking.check(STEP, record(STEP, globex))
    assert _code(other) == "publisher_not_for_tenant" and "'globex'" in str(other)


def test_unsigned_is_a_finding_only_where_the_tenant_has_a_live_publisher() -> None:
    assert _code(check().check(STEP, record(STEP, None))) == "unsigned_event"
    elsewhere = f.started(tenant="default")
    assert check().check(elsewhere, record(elsewhere, None)) is None
    # A tenant whose only publisher was revoked expects no signatures any more.
    only_revoked = SignatureCheck(PublisherKeys(Keys(registered("crm-bot", "acme", CRM.key, REVOKED_AT))))
    assert only_revoked.check(STEP, record(STEP, None)) is None


def test_the_service_vouches_in_every_tenant() -> None:
    service = Signer("service", SigningKey.generate())
    now, key = [0.0], [service.key.public]
    checking = SignatureCheck(PublisherKeys(Keys(), service=lambda: key[0], clock=lambda: now[0]))
    for tenant in ("acme", "globex"):
        step = f.started(tenant=tenant)
        assert _publisher(checking.check(step, record(step, service))) == "service"
    # The key file rotated: steps the old key signed, still on the topic, hold; so do the new key's.
    rotated = Signer("service", SigningKey.generate())
    key[0], now[0] = rotated.key.public, 10.0
    assert _publisher(checking.check(STEP, record(STEP, rotated))) == "service"
    assert _publisher(checking.check(STEP, record(STEP, service))) == "service"
    assert (
        _code(checking.check(STEP, record(STEP, Signer("service", SigningKey.generate())))) == "bad_signature"
    )


def test_the_policy_dead_letters_or_records_per_tenant() -> None:
    policy = load_policy(
        sample_text()
        + '\n[publishers.tenants.acme]\nunsigned = "dead_letter"\nbad_signature = "dead_letter"\n'
    )
    rules = policy.publishers
    assert rules.for_tenant("acme") == SignatureRules(unsigned="dead_letter", bad_signature="dead_letter")
    other = rules.for_tenant("other")
    assert (other.unsigned, other.bad_signature) == ("record", "record")
    dead: list[DeadLetter] = []
    keep, why = vouched(check(), rules, STEP, record(STEP, None), dead)
    assert not keep and _code(why) == "unsigned_event"
    assert (dead[0].reason, dead[0].value, dead[0].offset) == ("unsigned_event", encode_json(STEP), 7)
    # A tenant with no publisher at all may still refuse unsigned steps outright.
    strict = PublisherRules(unsigned="dead_letter")
    default = f.started(tenant="default")
    keep, why = vouched(check(), strict, default, record(default, None), dead)
    assert not keep and _code(why) == "unsigned_event" and len(dead) == 2
    # The default records them, with the finding.
    keep, why = vouched(check(), PublisherRules(), STEP, record(STEP, None), dead)
    assert keep and _code(why) == "unsigned_event" and len(dead) == 2
    with pytest.raises(ValueError, match="unsigned"):
        load_policy(sample_text() + '\n[publishers.tenants.acme]\nunsigned = "drop"\n')


def test_the_key_cache_reloads_on_an_unknown_name_at_most_so_often_and_on_its_interval() -> None:
    now = [0.0]
    keys = Keys()
    cache = PublisherKeys(keys, refresh_every=5.0, miss_every=1.0, clock=lambda: now[0])
    assert cache.find("crm-bot") is None and keys.loads == 1
    keys.records.append(registered("crm-bot", "acme", CRM.key))
    assert (
        cache.find("crm-bot") is None and keys.loads == 1
    )  # a flood of unknown names is not a flood of queries
    now[0] = 1.5
    found = cache.find("crm-bot")
    assert isinstance(found, KnownKey) and found.tenant == "acme" and keys.loads == 2
    keys.records[0] = registered("crm-bot", "acme", CRM.key, REVOKED_AT)
    assert cache.find("crm-bot").revoked_at is None  # type: ignore[union-attr]
    now[0] = 7.0  # a revocation is seen within the refresh interval
    assert cache.find("crm-bot").revoked_at == REVOKED_AT  # type: ignore[union-attr]


def test_the_vouch_is_kept_beside_the_stored_bytes_not_in_them() -> None:
    wire = encode_json(STEP)
    vouch = CRM.vouch(wire)
    sealed_for = subject_fields("crm/contact/1", "crm/contact/1", opens=True)
    state = step_state(REVOKED_AT, b"\x01" * 32, STEP.event_id, wire, True, STEP.type, sealed_for, vouch)
    header = read_step_state(state)
    assert header.vouch == vouch and header.wire == wire
    # Beside the sealing fields of the same header, neither read as the other.
    assert (header.subject, header.run_subject, header.sealing) == ("crm/contact/1", "crm/contact/1", True)
    assert header_digest(state) == b"\x01" * 32  # what checkpoints anchor is untouched by the vouch
    assert read_step_state(step_state(REVOKED_AT, b"\x01" * 32, STEP.event_id, wire, True)).vouch is None


def _code(checked: object) -> str | None:
    return checked.code if isinstance(checked, Unvouched) else None


def _publisher(checked: object) -> str | None:
    return checked.publisher if isinstance(checked, Vouch) else None


def test_keys_that_cannot_be_read_apply_nothing_and_the_batch_is_read_again() -> None:
    away = [True]

    def load() -> list[PublisherRecord]:
        if away[0]:
            away[0] = False
            raise OperationalError("server closed the connection unexpectedly")
        return [registered("crm-bot", "acme", CRM.key)]

    sent = record(STEP)
    batch = {
        TopicPartition("steps", 0): [
            SignedRecord("steps", 0, 0, STEP.run_id.encode(), sent.value, headers=sent.headers)
        ]
    }
    store, polls = AwayStore(), SeekingPolls(batch, batch)
    store.away = 0
    ingest = Ingest(polls, store, None, signatures=SignatureCheck(PublisherKeys(load)))
    ingest.backoff = Backoff(first=0.0, cap=0.0)
    ingest.poll_once()  # the keys are away: nothing is applied, the consumer seeks back
    assert store.applied == [] and ingest.totals.retries == 1
    assert polls.asked == ["poll 1", "seek to beginning"]
    ingest.poll_once()
    assert store.applied == [[1]] and ingest.totals.recorded == 1 and ingest.totals.flagged == 0


@dataclass
class SignedRecord(PlanRecord):
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_an_unreadable_service_key_file_keeps_the_keys_known_so_far(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    assert service_public_key(path) is None  # no file yet: nothing to add
    key, _ = ensure_signing_key(path)
    assert service_public_key(path) == key.public
    path.write_text("not a key")
    assert service_public_key(path) is None and service_signer(path) is None


def test_the_receipt_names_who_vouched_for_each_event_and_renders_it() -> None:
    steps = [*f.clean_run(), f.consent(at=f.at(5))]
    recorded = [
        dataclasses.replace(e, vouch=CRM.vouch(e.wire))
        if e.step.type in ("run.started", "consent.given")
        else e
        for e in f.entries(steps)
    ]
    receipt = render(recorded)
    assert [v.publisher for v in receipt.vouched] == [
        "crm-bot",
        None,
        None,
        None,
        None,
        None,
        None,
        "crm-bot",
    ]
    assert [v.event_id for v in receipt.vouched] == [s.event_id for s in steps]
    text = receipt_text(receipt)
    assert "5. consent: " in text and 'said "yes, go ahead"' in text
    consent_line = next(line for line in text.splitlines() if "5. consent:" in line)
    assert consent_line.endswith("(vouched by: crm-bot)")
    executed_line = next(line for line in text.splitlines() if "executed: sent" in line)
    assert executed_line.endswith("(vouched by: nobody, unsigned)")
    assert "| Vouched by | crm-bot (2), unsigned (6) |" in receipt_markdown(receipt)
    # A run nobody signed says so once, and its lines carry no vouch.
    plain = receipt_text(render(f.entries(f.clean_run())))
    assert "Vouched by: no event was signed" in plain and "(vouched by" not in plain


def test_the_steps_ingest_writes_itself_are_the_services_without_a_signature_of_their_own() -> None:
    wire = encode_json(STEP)
    state = step_state(
        REVOKED_AT, b"\x01" * 32, STEP.event_id, wire, False, STEP.type, b"", WRITTEN_BY_SERVICE
    )
    assert b'"vs"' not in state.split(b"\n", 1)[0]  # the checkpoint's signature holds it, not its own
    assert read_step_state(state).vouch == Vouch(SERVICE_PUBLISHER, None)
