"""Sealing a step's personal fields under its subject's key, and reading them back."""

from __future__ import annotations

import json
import secrets
from uuid import UUID

import pytest

from consumers.ingest import Ingest
from consumers.sealing import BatchSeals
from domain.personal import (
    ERASED,
    ERASED_OBJECT,
    KEYED_PREFIX,
    PersonalData,
    fallback_subject,
    record_named,
    run_named,
)
from domain.policy import PolicyError, load_policy, sample_policy, sample_text
from domain.routing import Router
from domain.run import RunHead, run_uuid
from domain.steps import StepEvent, step_adapter
from infra.rows import StepStates, read_step_state, stored_heads
from infra.sealing import ERASED_KEY, UNREADABLE, SubjectKey, open_step, seal
from schemas import Codec, encode_json
from tests.unit.factories import T0, edited, executed, finished, proposed, reviewed, source, started
from tests.unit.test_ingest_plan import NOW, QueuedPolls, StoredHeads, _batch

SPEC = PersonalData()
ROUTER = Router(sample_policy())
CODEC = Codec()
SECRET_TEXT = "Dear Ada, your results are ready"
ADA = "hubspot/contact/ada"


def key() -> SubjectKey:
    return SubjectKey(secrets.token_bytes(32))


def stored(step: StepEvent, subject_key: SubjectKey) -> StepEvent:
    sealed = seal(SPEC, step, ADA, subject_key)
    assert sealed is not None
    assert SECRET_TEXT.encode() not in sealed
    return CODEC.decode(sealed)


def test_a_sealed_step_opens_to_what_was_sent_but_its_hashes_stay_keyed() -> None:
    ada = key()
    step = proposed(output=SECRET_TEXT, params={"to": "ada@example.com", "cc": ["x"]})
    kept = stored(step, ada)
    assert kept.data.action.output.startswith("sealed:v1:")  # type: ignore[attr-defined]
    assert set(kept.data.action.params) == {"$sealed"}  # type: ignore[attr-defined]
    opened = open_step(kept, ada)
    assert opened.data.action.output == SECRET_TEXT  # type: ignore[attr-defined]
    assert opened.data.action.params == {"to": "ada@example.com", "cc": ["x"]}  # type: ignore[attr-defined]
    assert opened.data.action.output_hash.startswith(KEYED_PREFIX)  # type: ignore[attr-defined]


def test_keyed_hashes_compare_within_a_subject_and_not_across() -> None:
    ada, bob = key(), key()
    draft = proposed(output=SECRET_TEXT)
    approval = reviewed(output=SECRET_TEXT)
    run = executed(output=SECRET_TEXT)
    hashes = {
        stored(draft, ada).data.action.output_hash,  # type: ignore[attr-defined]
        CODEC.decode(seal(SPEC, approval, ADA, ada) or b"").data.reviewed_hash,  # type: ignore[attr-defined]
        CODEC.decode(seal(SPEC, run, ADA, ada) or b"").data.executed_hash,  # type: ignore[attr-defined]
    }
    assert len(hashes) == 1  # executed vs approved still compares
    assert CODEC.decode(seal(SPEC, run, ADA, bob) or b"").data.executed_hash not in hashes  # type: ignore[attr-defined]
    assert draft.data.action.output_hash not in hashes  # type: ignore[attr-defined]  # not the guessable one


def test_a_destroyed_key_reads_as_erased_in_the_fields_shape() -> None:
    kept = stored(proposed(output=SECRET_TEXT, params={"to": "ada@example.com"}), key())
    opened = open_step(kept, ERASED_KEY)
    assert opened.data.action.output == ERASED  # type: ignore[attr-defined]
    assert opened.data.action.params == ERASED_OBJECT  # type: ignore[attr-defined]
    assert open_step(kept, None).data.action.output == ERASED  # type: ignore[attr-defined]


def test_an_erased_subject_is_stored_already_erased() -> None:
    sealed = seal(SPEC, proposed(output=SECRET_TEXT), ADA, ERASED_KEY)
    assert sealed is not None and SECRET_TEXT.encode() not in sealed
    assert CODEC.decode(sealed).data.action.output == ERASED  # type: ignore[attr-defined]


def test_a_ciphertext_moved_to_another_event_does_not_open() -> None:
    ada = key()
    first = stored(proposed(output=SECRET_TEXT), ada)
    second = stored(proposed(output="other words"), ada)
    token = first.data.action.output  # type: ignore[attr-defined]
    doc = second.model_dump(mode="json")
    doc["data"]["action"]["output"] = token
    moved = step_adapter.validate_python(doc)
    assert open_step(moved, ada).data.action.output == UNREADABLE  # type: ignore[attr-defined]


def test_a_step_without_personal_data_stays_on_the_cheap_path() -> None:
    assert seal(SPEC, finished("sent"), ADA, key()) is None
    assert (
        seal(SPEC, proposed(output="", params={}).model_copy(), ADA, key()) is not None
    )  # its hash is keyed
    assert seal(PersonalData(fields={}, hashes={}), proposed(output=SECRET_TEXT), ADA, key()) is None


class Keys:
    def __init__(self) -> None:
        self.asked: list[set[tuple[str, str]]] = []

    def keys_for(self, subjects: object) -> dict[tuple[str, str], SubjectKey]:
        wanted = set(subjects)  # type: ignore[call-overload]
        self.asked.append(wanted)
        return {s: key() for s in wanted}


def test_a_batch_asks_for_every_key_at_once_and_steps_fall_back_to_the_runs_subject() -> None:
    steps = [
        started(),
        proposed(output=SECRET_TEXT),
        edited(output="new words"),
        proposed(output="named", step_id="s-2").model_copy(update={"subject": "zendesk/user/9"}),
        finished("sent"),
        edited(output="orphan", run_id="run-without-start"),
    ]
    keys = Keys()
    seals = BatchSeals.plan(SPEC, [(run_uuid(s.tenant, s.run_id), s) for s in steps], {}, keys)
    assert len(keys.asked) == 1
    input_key = steps[0].data.input.key  # type: ignore[attr-defined]
    assert seals.sealed_for == [
        input_key,  # input.hash is keyed
        input_key,
        input_key,
        "zendesk/user/9",
        None,
        fallback_subject(steps[-1]),
    ]
    assert seals.settles[0] == input_key and seals.settles[1:] == [None] * 5


def test_a_restarted_head_remembers_the_runs_subject() -> None:
    head = RunHead(subject=ADA)
    step = edited(output="words")
    seals = BatchSeals.plan(
        SPEC, [(run_uuid(step.tenant, step.run_id), step)], {run_uuid(step.tenant, step.run_id): head}, Keys()
    )
    assert seals.sealed_for == [ADA]


def test_the_policy_declares_personal_data_and_refuses_an_unknown_type() -> None:
    assert sample_policy().personal_data.fields["action.proposed"] == ("action.output", "action.params")
    text = (
        '[default]\nid = "d"\nlane = "review"\nreason = "r"\n'
        '[personal_data]\nfields = { "no.such" = ["x"] }\n'
    )
    with pytest.raises(PolicyError) as raised:
        load_policy(text)
    assert "not a step type" in str(raised.value)
    custom = load_policy(text.replace('"no.such" = ["x"]', '"action.held" = ["reason"]'))
    assert custom.personal_data.fields == {"action.held": ("reason",)}
    assert json.loads(custom.canonical())["personal_data"]["fields"] == {"action.held": ["reason"]}


def test_a_run_recorded_before_sealing_began_stays_as_it_was() -> None:
    # Its publishers' hashes are plain: keying its later ones would make them differ.
    step = executed(output=SECRET_TEXT)
    run = run_uuid(step.tenant, step.run_id)
    legacy = RunHead(version=4)
    seals = BatchSeals.plan(SPEC, [(run, step)], {run: legacy}, Keys())
    assert seals.sealed_for == [None]
    assert seals.stored(0, step, b"as-received", legacy) == (b"as-received", b"")


def test_a_restarted_ingest_reads_the_runs_subject_and_sealing_from_the_headers() -> None:
    first, later = started(), edited(output=SECRET_TEXT)
    run = run_uuid(first.tenant, first.run_id)
    keys = Keys()
    seals = BatchSeals.plan(SPEC, [(run, first), (run, later)], {}, keys)
    head = RunHead()
    rows = []
    for index, step in enumerate((first, later)):
        wire, subjects = seals.stored(index, step, encode_json(step), head)
        seals.settle_head(index, head)
        entry = head.record(step, wire, T0)
        assert entry is not None
        rows.append((run, entry.version, StepStates(T0).row(run, entry, subjects)[3]))
    restarted = stored_heads(rows)[run]
    assert restarted.sealing and restarted.subject == first.data.input.key  # type: ignore[attr-defined]
    assert read_step_state(rows[1][2]).subject == first.data.input.key  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "step",
    [
        proposed(output=SECRET_TEXT),  # params empty: swapped in place
        proposed(output=SECRET_TEXT, params={"to": "ada@example.com"}),  # an object: swapped too
        edited(output=SECRET_TEXT),
        reviewed(output=SECRET_TEXT, comment="ok"),
        reviewed(output=SECRET_TEXT, comment="sha256:same-as-hash").model_copy(),
        executed(output=SECRET_TEXT),
        started(),
    ],
    ids=lambda s: s.type,
)
def test_sealing_in_place_and_anew_store_the_same_step(step: StepEvent) -> None:
    ada = key()
    in_place = seal(SPEC, step, ADA, ada, encode_json(step))
    anew = seal(SPEC, step, ADA, ada)
    assert in_place is not None and anew is not None
    assert SECRET_TEXT.encode() not in in_place
    assert open_step(CODEC.decode(in_place), ada) == open_step(CODEC.decode(anew), ada)
    # Only the hashes differ from what was sent: the fields open to the very values.
    opened = open_step(CODEC.decode(in_place), ada).model_dump()
    assert _without_hashes(opened) == _without_hashes({**step.model_dump(), "subject": ADA})


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_a_proposal_with_params_is_sealed_in_place_whatever_its_wire(encoding: str) -> None:
    """The cheap path for the commonest step: an Avro value is written as JSON by pydantic
    and its fields swapped in that, an object (params) as well as a string."""
    step = proposed(output=SECRET_TEXT, params={"to": "ada@example.com", "cc": ["x"]})
    wire = encode_json(step) if encoding == "json" else CODEC.encode_avro(step)
    ada = key()
    in_place = seal(SPEC, step, ADA, ada, wire)
    assert in_place is not None and in_place.startswith(b'{"subject":')  # swapped, not rewritten
    assert b"ada@example.com" not in in_place and SECRET_TEXT.encode() not in in_place
    assert open_step(CODEC.decode(in_place), ada) == open_step(CODEC.decode(seal(SPEC, step, ADA, ada)), ada)


def _without_hashes(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_hashes(v) for k, v in value.items() if not k.endswith("hash")}
    return value


def test_a_wire_that_repeats_a_value_is_written_anew_and_one_naming_its_subject_keeps_it_once() -> None:
    same = edited(output="twice", base="twice")  # output_hash == base_hash: found twice
    assert seal(SPEC, same, ADA, key(), encode_json(same)) is not None
    named = edited(output=SECRET_TEXT).model_copy(update={"subject": "zendesk/user/1"})
    wire = encode_json(named)
    sealed = seal(SPEC, named, "zendesk/user/1", key(), wire)
    assert sealed is not None and sealed.count(b'"subject"') == 1
    assert sealed.startswith(wire[:40])  # swapped in place: the publisher's envelope as it came


def test_an_emails_subject_param_is_sealed_in_place_and_the_envelope_names_the_subject_once() -> None:
    step = proposed(output=SECRET_TEXT, params={"to": "ada@example.com", "subject": "Your results"})
    ada = key()
    sealed = seal(SPEC, step, ADA, ada, encode_json(step))
    assert sealed is not None and sealed.startswith(b'{"subject":') and b"Your results" not in sealed
    stored = CODEC.decode(sealed)
    assert stored.subject == ADA and json.loads(sealed)["subject"] == ADA
    assert open_step(stored, ada).data.action.params == step.data.action.params  # type: ignore[attr-defined]


def test_a_wire_saying_subject_null_is_written_anew_so_the_key_is_never_held_twice() -> None:
    step = edited(output=SECRET_TEXT)
    wire = b'{"subject" : null,' + encode_json(step)[1:]
    sealed = seal(SPEC, step, ADA, key(), wire)
    assert sealed is not None and sealed.count(b'"subject"') == 1
    assert CODEC.decode(sealed).subject == ADA


class FixedKeys:
    """One key per subject for the whole test, as the key ring keeps them."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], SubjectKey] = {}

    def keys_for(self, subjects: object) -> dict[tuple[str, str], SubjectKey]:
        return {s: self.keys.setdefault(s, key()) for s in set(subjects)}  # type: ignore[call-overload]


def test_routing_reads_a_restarted_runs_stored_sources_opened() -> None:
    keys = FixedKeys()
    earlier = [started(), source("form-1", system="hubspot", kind="form_submission")]  # not a public page

    def ingest(heads: dict[UUID, RunHead]) -> Ingest:
        return Ingest(QueuedPolls(), StoredHeads(heads), None, clock=lambda: NOW, router=ROUTER, keys=keys)

    first = ingest({}).plan(_batch(*map(encode_json, earlier)))
    first.chain()
    rows = first.rows()
    stored_wire = read_step_state(rows[1][3]).wire
    assert b"Plan: 40 EUR" not in stored_wire  # the excerpt is sealed in the store
    heads = stored_heads((run, version, state) for run, version, _, state in rows)
    later = ingest(heads).plan(_batch(encode_json(proposed())))
    opened = later._read_stored(stored_wire)
    assert opened is not None and opened.data.source.excerpt == "Plan: 40 EUR"  # type: ignore[attr-defined]


def test_a_sealed_step_redelivered_after_a_restart_is_a_duplicate_and_other_content_a_conflict() -> None:
    keys = FixedKeys()
    first_steps = [started(), proposed(output=SECRET_TEXT)]

    def ingest(heads: dict[UUID, RunHead]) -> Ingest:
        return Ingest(QueuedPolls(), StoredHeads(heads), None, clock=lambda: NOW, keys=keys)

    first = ingest({}).plan(_batch(*map(encode_json, first_steps)))
    first.chain()
    rows = first.rows()
    stored = {read_step_state(r[3]).event_id: read_step_state(r[3]).wire for r in rows}
    heads = stored_heads((run, version, state) for run, version, _, state in rows)
    again = first_steps[1]
    forged = again.model_copy(update={"data": proposed(output="other words").data})  # type: ignore[attr-defined]
    redelivered = ingest(heads).plan(_batch(encode_json(again), encode_json(forged)))
    redelivered.chain()
    assert len(redelivered.suspects) == 2  # the stored bytes are the sealed form: not comparable as bytes
    flagged = list(redelivered.settle(lambda run, event_id: stored[event_id]))
    assert redelivered.duplicates == 1
    assert [d.reason for d in redelivered.dead] == ["conflicting_duplicate"] and len(flagged) == 1


def test_a_wire_spelling_one_string_two_ways_is_written_anew_so_no_field_is_missed() -> None:
    step = proposed(output="gmail.send")  # the same text as its tool
    wire = encode_json(step).replace(b'"output":"gmail.send"', b'"output":"gmail\\u002esend"')
    assert CODEC.decode(wire) == step and wire.count(b'"gmail.send"') == 1  # only the tool's
    stored = CODEC.decode(seal(SPEC, step, ADA, key(), wire) or b"")
    assert stored.data.action.output.startswith("sealed:v1:")  # type: ignore[attr-defined]
    assert stored.data.action.tool == "gmail.send"  # type: ignore[attr-defined]


def test_a_public_source_is_stored_as_received_and_a_customers_record_is_sealed() -> None:
    spec = PersonalData(public_sources=("cms/page/*",))
    pricing = source("pricing")  # cms/page/pricing: what anyone can read
    ticket = source("t-1", system="zendesk", kind="ticket")
    assert not spec.carries(pricing) and seal(spec, pricing, ADA, key(), encode_json(pricing)) is None
    assert spec.carries(ticket) and seal(spec, ticket, ADA, key(), encode_json(ticket)) is not None
    assert SPEC.carries(pricing)  # the default names no source public


def test_the_policy_refuses_a_public_source_that_names_no_record() -> None:
    with pytest.raises(PolicyError, match="public_sources"):
        load_policy(sample_text().replace('public_sources = ["cms/page/*"]', 'public_sources = ["cms/page"]'))
    assert sample_policy().personal_data.public_sources == ("cms/page/*",)


def test_a_subject_is_a_records_key_or_a_runs_own() -> None:
    assert record_named("gmail/contact/ana@example.com") == ("gmail", "contact", "ana@example.com")
    assert record_named("crm/note/a/b") == ("crm", "note", "a/b")  # an id may hold '/'
    assert record_named("crm/contact") is None and record_named("crm//1") is None
    assert run_named(fallback_subject(started())) == started().run_id
    assert run_named("run/") is None  # names no run: nothing to search a dead letter for
