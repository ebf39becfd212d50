"""The hash chain: recomputed in version order, the first event that does not match is named."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from domain.chain import GENESIS, ChainBreak, StoredLink, first_break, link
from tests.unit import factories as f


def _links(n: int = 5) -> list[StoredLink]:
    recorded = f.entries(f.clean_run()[:n])
    return [StoredLink(e.version, e.wire, e.digest, e.step.event_id) for e in recorded]


def test_link_is_sha256_of_previous_digest_then_wire() -> None:
    assert link(GENESIS, b"abc") == hashlib.sha256(bytes(32) + b"abc").digest()
    assert link(b"\x01" * 32, b"abc") != link(GENESIS, b"abc")
    assert len(GENESIS) == 32 and GENESIS == b"\x00" * 32


def test_link_depends_on_every_byte_of_the_wire() -> None:
    assert link(GENESIS, b'{"a":1}') != link(GENESIS, b'{"a":1} ')


def test_intact_chain_has_no_break() -> None:
    assert first_break(_links()) is None


def test_empty_chain_has_no_break() -> None:
    assert first_break([]) is None


def test_entries_factory_chains_from_genesis() -> None:
    recorded = f.entries(f.clean_run()[:3])
    assert recorded[0].digest == link(GENESIS, recorded[0].wire)
    assert recorded[2].digest == link(recorded[1].digest, recorded[2].wire)
    assert [e.version for e in recorded] == [1, 2, 3]


def test_altered_wire_breaks_at_that_version() -> None:
    for k in (1, 3, 5):
        links = _links()
        tampered = links[k - 1].wire.replace(b"lead", b"LEAD")  # type: ignore[union-attr]
        assert tampered != links[k - 1].wire
        links[k - 1] = replace(links[k - 1], wire=tampered)
        found = first_break(links)
        assert found is not None
        assert (found.version, found.event_id) == (k, links[k - 1].event_id)
        assert found.reason.startswith("digest mismatch: stored ")
        assert links[k - 1].digest.hex()[:16] in found.reason  # type: ignore[union-attr]


def test_altered_digest_breaks_at_that_version() -> None:
    links = _links()
    links[1] = replace(links[1], digest=bytes(32))
    found = first_break(links)
    assert found == ChainBreak(
        2,
        links[1].event_id,
        f"digest mismatch: stored {'0' * 16}…, recomputed {link(links[0].digest, links[1].wire).hex()[:16]}…",  # type: ignore[arg-type]
    )


def test_rewriting_a_row_and_its_digest_still_breaks_at_the_next_version() -> None:
    links = _links()
    forged_wire = links[1].wire + b" "  # type: ignore[operator]
    links[1] = replace(links[1], wire=forged_wire, digest=link(links[0].digest, forged_wire))  # type: ignore[arg-type]
    found = first_break(links)
    assert found is not None and found.version == 3


def test_missing_version_is_a_break_with_no_event_id() -> None:
    links = _links()
    del links[2]
    assert first_break(links) == ChainBreak(3, None, "version 3 is missing (next stored is 4)")


def test_chain_not_starting_at_version_1_is_missing_version_1() -> None:
    found = first_break(_links()[1:])
    assert found == ChainBreak(1, None, "version 1 is missing (next stored is 2)")


def test_unreadable_row_breaks_there() -> None:
    links = _links()
    links[3] = StoredLink(4, None, None, "evt-unreadable")
    assert first_break(links) == ChainBreak(4, "evt-unreadable", "stored row is unreadable")


def test_row_with_wire_but_no_digest_is_unreadable() -> None:
    links = _links()
    links[0] = replace(links[0], digest=None)
    found = first_break(links)
    assert found is not None
    assert (found.version, found.reason) == (1, "stored row is unreadable")


def test_only_the_first_break_is_named() -> None:
    links = _links()
    links[1] = replace(links[1], digest=bytes(32))
    links[3] = StoredLink(4, None, None)
    found = first_break(links)
    assert found is not None and found.version == 2
