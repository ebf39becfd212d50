"""The checkpoints themselves attacked: edited by one byte, forged, signed by another key,
missing (one, two in a row, the newest), a broken chain; events newer than the last
checkpoint; a key rotation that leaves old checkpoints verifiable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from api.checkpoint_cli import build_checkpointer
from domain.checkpoint import Checkpoint
from infra.checkpoints import rotate_key
from infra.keyring import rotate, staged_path, trusted_keys
from infra.signing import SigningKey
from tests.integration.anchoring import Anchored, anchored

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(settings, tmp_path: Path) -> Anchored:  # type: ignore[no-untyped-def]
    with anchored(settings, tmp_path, checkpoints=4) as ready:
        yield ready


def resign(setup: Anchored, seq: int, key: SigningKey, **changes: object) -> None:
    """Rewrite checkpoint `seq`'s file with `changes`, signed (validly) by `key`."""
    path = setup.checkpoint_file(seq)
    body = {**json.loads(path.read_text())["checkpoint"], **changes, "key_id": key.key_id}
    signature = key.sign(Checkpoint.model_validate(body).body())
    path.write_text(json.dumps({"checkpoint": body, "signature": base64.b64encode(signature).decode()}))


def named(setup: Anchored) -> list[tuple[str, int | None]]:
    return [(f.kind, f.checkpoint) for f in setup.verify().findings]


def test_a_checkpoint_file_edited_by_one_byte(setup: Anchored) -> None:
    path = setup.checkpoint_file(2)
    text = path.read_bytes()
    at = text.index(b'"events": ') + len(b'"events": ')
    path.write_bytes(text[:at] + bytes([text[at] ^ 0x01]) + text[at + 1 :])  # one digit, still JSON
    found = setup.verify().findings
    assert (found[0].kind, found[0].checkpoint) == ("forged_checkpoint", 2)
    assert "does not verify" in found[0].detail


def test_a_checkpoint_file_that_no_longer_reads(setup: Anchored) -> None:
    path = setup.checkpoint_file(3)
    path.write_bytes(path.read_bytes()[:-5])
    found = setup.verify().findings
    assert found[0].kind == "forged_checkpoint" and "does not read" in found[0].detail
    # its number did not read either: the chain then says which one is absent
    assert [(f.kind, f.checkpoint) for f in found[1:]] == [("missing_checkpoint", 3)]


def test_a_checkpoint_signed_by_another_key(setup: Anchored) -> None:
    resign(setup, 2, SigningKey.generate())
    assert named(setup)[0] == ("foreign_key", 2)


def test_a_forged_checkpoint_hiding_a_rewrite(setup: Anchored) -> None:
    """The attacker rewrites run a and the checkpoint that signed it, but cannot sign as the
    service; the next checkpoint's signed set of all heads still holds run a's real head."""
    setup.rewrite("a", 2)
    resign(setup, 1, SigningKey.generate(), root="00" * 32)
    assert named(setup) == [("foreign_key", 1), ("heads_differ", 2)]


def test_a_missing_checkpoint_and_two_missing_in_a_row(setup: Anchored) -> None:
    setup.checkpoint_file(2).unlink()
    verdict = setup.verify()
    assert [(f.kind, f.checkpoint) for f in verdict.findings] == [("missing_checkpoint", 2)]
    assert verdict.report.not_anchored == 7  # run d, in the missing range, is not anchored
    setup.checkpoint_file(3).unlink()
    found = setup.verify().findings
    assert [(f.kind, f.checkpoint) for f in found] == [("missing_checkpoint", 2)]
    assert "checkpoints 2..3 missing" in found[0].detail


def test_an_export_behind_the_store_is_a_note_and_leaves_events_unanchored(setup: Anchored) -> None:
    """Deleting the newest files looks like an export taken before the last checkpoint: the
    events only that checkpoint covers are not yet anchored, and the verdict says why."""
    setup.checkpoint_file(4).unlink()
    verdict = setup.verify()
    assert verdict.verified and verdict.report.not_anchored == 7
    assert verdict.notes == [
        f"checkpoint(s) 4 are in the store but not in {setup.dir}: it is behind (export again); "
        "the events they cover are counted as not yet anchored"
    ]


def test_a_gap_in_the_checkpoint_chain(setup: Anchored) -> None:
    """Validly signed (say, the key leaked), but not linked to the checkpoint before it."""
    resign(setup, 3, setup.key, previous="ab" * 32)
    # …and checkpoint 4 names the real checkpoint 3, not this one
    assert named(setup) == [("checkpoint_chain_gap", 3), ("checkpoint_chain_gap", 4)]


def test_events_newer_than_the_last_checkpoint_are_not_yet_anchored(setup: Anchored) -> None:
    setup.record("late")
    verdict = setup.verify()
    assert verdict.verified and verdict.report.not_anchored == 7 and verdict.report.anchored == 42
    one = setup.verify("late")
    assert one.report.anchored == 0 and one.report.not_anchored == 7
    setup.delete("late", 7)  # not anchored: nothing signed says it existed
    assert setup.verify("late").report.not_anchored == 6


def test_rotation_is_recorded_and_old_checkpoints_stay_verifiable(setup: Anchored) -> None:
    old = setup.key
    key_file = setup.settings.signing_key_file
    entry = rotate_key(
        setup.store.steps.datastore, setup.store.steps.checkpoint_tables, key_file, "ops", "yearly"
    )
    new = SigningKey.load(key_file)
    assert entry.key_id == new.key_id != old.key_id and entry.previous == old.key_id
    assert entry.record["from_checkpoint"] == 5
    setup.record("after-rotation")
    setup.close()
    setup.export()
    for anchor in (old, new):  # trusting either key, the history links the other
        verdict = setup.verify(anchors=[anchor])
        assert verdict.verified, verdict.findings
        assert set(verdict.trusted_keys) == {old.key_id, new.key_id}
    stranger = SigningKey.generate()
    assert {f.kind for f in setup.verify(anchors=[stranger]).findings} == {"foreign_key"}


def test_a_key_history_entry_not_endorsed_by_the_key_it_replaces(setup: Anchored) -> None:
    tables = setup.store.steps.checkpoint_tables
    with setup.store.steps.datastore.transaction(commit=True) as curs:
        rotate(curs, tables.keyring, setup.settings.signing_key_file, "ops", "test", 5)
        history = tables.keyring.history(curs)
    forged = history[-1].model_copy(
        update={"signatures": {history[-1].key_id: history[-1].signatures[history[-1].key_id]}}
    )
    trusted, problems = trusted_keys([history[0], forged], [setup.key.public])
    assert set(trusted) == {setup.key.key_id}
    assert problems == [f"key record {forged.key_id}: not endorsed by the key it replaces"]


def test_a_replaced_key_file_is_refused(setup: Anchored) -> None:
    from infra.signing import BadKey

    SigningKey.generate().write(setup.settings.signing_key_file)
    setup.record("more")
    with pytest.raises(BadKey, match="not in the key history"):
        setup.close()


def test_a_retired_key_signs_nothing_after_its_rotation(setup: Anchored) -> None:
    """An old key that leaked cannot extend the chain: checkpoints after the rotation must
    carry the new key, and the checkpointer itself never signs with the old one again."""
    old, key_file = setup.key, setup.settings.signing_key_file
    rotate_key(setup.store.steps.datastore, setup.store.steps.checkpoint_tables, key_file, "ops", "leak")
    setup.record("after")
    setup.close()
    setup.export()
    assert setup.verify(anchors=[old]).verified
    resign(setup, 5, old)
    assert named(setup)[0] == ("retired_key", 5)


def test_a_rotation_cut_short_by_a_crash_is_finished_by_the_checkpointer(setup: Anchored) -> None:
    old, key_file = setup.key, setup.settings.signing_key_file
    tables = setup.store.steps.checkpoint_tables
    with setup.store.steps.datastore.transaction(commit=True) as curs:
        entry = rotate(curs, tables.keyring, key_file, "ops", "crash before install", 5)
    assert SigningKey.load(key_file).key_id == old.key_id  # the crash: never installed
    setup.record("after")
    setup.close()  # installs the staged key, and signs with it
    assert SigningKey.load(key_file).key_id == entry.key_id and not staged_path(key_file).exists()
    setup.export()
    assert setup.verify(anchors=[old]).verified
    old.write(key_file)  # the old key put back by hand: it signs nothing
    setup.record("later")
    assert build_checkpointer(setup.settings, setup.store).close() is None


def test_export_never_overwrites_a_file_that_differs_from_the_store(setup: Anchored) -> None:
    from infra.checkpoint_files import write_dir

    path = setup.checkpoint_file(2)
    kept = path.read_text().replace('"events": 7', '"events": 8')
    path.write_text(kept)
    tables = setup.store.steps.checkpoint_tables
    with setup.store.steps.datastore.transaction(commit=False) as curs:
        assert write_dir(setup.dir, tables.all(curs), tables.keyring.history(curs)) == (0, [2])
    assert path.read_text() == kept
