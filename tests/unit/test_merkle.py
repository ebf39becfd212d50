"""The Merkle tree against RFC 6962's recursive definition, and its inclusion proofs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from domain.merkle import (
    EMPTY_ROOT,
    included,
    inclusion_path,
    leaf_hash,
    node_hash,
    root,
    set_add,
    set_remove,
)


def rfc6962_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) as RFC 6962 2.1 writes it: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


LEAVES = [leaf_hash(bytes([i])) for i in range(33)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33])
def test_root_is_rfc6962s(n: int) -> None:
    assert root(LEAVES[:n]) == rfc6962_root(LEAVES[:n])
    assert root([]) == EMPTY_ROOT


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 33])
def test_every_leaf_proves_its_inclusion_and_no_other_does(n: int) -> None:
    tree = LEAVES[:n]
    top = root(tree)
    for index in range(n):
        path = inclusion_path(tree, index)
        assert included(tree[index], index, n, path, top)
        assert not included(leaf_hash(b"forged"), index, n, path, top)
        if n > 1:
            assert not included(tree[index], (index + 1) % n, n, path, top)
    with pytest.raises(IndexError):
        inclusion_path(tree, n)


def test_a_leaf_cannot_pass_for_a_node() -> None:
    """Domain separation: an inner node's hash is not a leaf's."""
    a, b = LEAVES[0], LEAVES[1]
    assert leaf_hash(a + b) != node_hash(a, b)


def test_the_set_sum_ignores_order_and_undoes() -> None:
    total = set_add(set_add(0, LEAVES[0]), LEAVES[1])
    assert total == set_add(set_add(0, LEAVES[1]), LEAVES[0])
    assert set_remove(total, LEAVES[1]) == set_add(0, LEAVES[0])
