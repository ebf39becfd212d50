"""Merkle trees as RFC 6962 (Certificate Transparency) defines them, and the hashes
a checkpoint commits to.

Leaves and inner nodes are hashed with different one-byte prefixes (0x00, 0x01),
so an inner node can never be passed off as a leaf. An inclusion proof is the audit
path of RFC 6962 2.1.1, checked as RFC 9162 2.1.3.2 says; the README's standalone
verifier repeats these few lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from uuid import UUID

EMPTY_ROOT = hashlib.sha256(b"").digest()
_MOD = 1 << 256


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def event_leaf(run: UUID, version: int, digest: bytes) -> bytes:
    """The leaf of one recorded event: which run, where in it, and its chain digest (which
    commits to its bytes and every earlier event of the run)."""
    return leaf_hash(run.bytes + version.to_bytes(8, "big") + digest)


def head_leaf(run: UUID, version: int, digest: bytes) -> bytes:
    """A run's head, as the heads' set hash counts it."""
    return hashlib.sha256(b"\x02" + run.bytes + version.to_bytes(8, "big") + digest).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 over leaf hashes, computed level by level (no recursion)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # an odd node is promoted: the same tree RFC 6962 splits
        level = paired
    return level[0]


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf `index` (PATH(m, D[n]) of RFC 6962), bottom up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of a tree of {len(leaves)}")
    path: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level, index = paired, index // 2
    return path


def included(leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `path` prove leaf `index` of a tree of `size` has `expected_root`?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def set_add(total: int, item: bytes) -> int:
    """A multiset hash (sum mod 2^256): order-free, so it tells events reordered in the log
    (same sum, other root) from events changed (other sum), and it is updated per head."""
    return (total + int.from_bytes(item, "big")) % _MOD


def set_remove(total: int, item: bytes) -> int:
    return (total - int.from_bytes(item, "big")) % _MOD


def set_hex(total: int) -> str:
    return total.to_bytes(32, "big").hex()
