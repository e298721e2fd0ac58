"""Tests for sidecar.core.merkle against a naive RFC 9162 reference and published vectors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import merkle, native
from sidecar.core.merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from sidecar.errors import IntegrityError

# --------------------------------------------------------------------------- reference


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as written in RFC 9162 §2.1.1, over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 9162 §2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) from RFC 9162 §2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) from RFC 9162 §2.1.4.1 (empty for m == 0 or m == n)."""
    if m in (0, len(leaves)):
        return []
    return ref_subproof(m, leaves, True)


def ref_compact(begin: int, end: int, leaves: list[bytes]) -> list[bytes]:
    """Roots of the maximal aligned perfect subtrees inside [begin, end), found greedily."""
    out = []
    pos = begin
    while pos < end:
        size = 1
        while pos % (size * 2) == 0 and pos + size * 2 <= end:
            size *= 2
        out.append(ref_mth(leaves[pos : pos + size]))
        pos += size
    return out


def make_leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


LEAVES = make_leaves(400)
REF_ROOTS = [ref_mth(LEAVES[:n]) for n in range(100)]


def flips(h: bytes) -> Iterator[bytes]:
    """A few single-bit corruptions of a hash: first bit, last bit, one in the middle."""
    for byte, bit in ((0, 0), (15, 3), (len(h) - 1, 7)):
        yield h[:byte] + bytes([h[byte] ^ (1 << bit)]) + h[byte + 1 :]


def fails(fn: Callable[..., None], *args: Any) -> bool:
    try:
        fn(*args)
    except IntegrityError:
        return True
    return False


# --------------------------------------------------------------------------- RFC 6962 vectors
# From transparency-dev/merkle: testonly/constants.go (LeafInputs, NodeHashes, RootHashes,
# CompactTrees) and proof/verify_test.go (inclusionProofs, consistencyProofs).

TD_LEAF_INPUTS = [
    bytes.fromhex(x)
    for x in (
        *("", "00", "10", "2021", "3031", "40414243"),
        *("5051525354555657", "606162636465666768696a6b6c6d6e6f"),
    )
]
TD_NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
TD_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (level, index) of each compact tree hash for sizes 0..8, as in CompactTrees().
TD_COMPACT = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]
# (0-based leaf index, tree size, proof); verify_test.go lists 1-based leaf numbers.
TD_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
TD_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
TD_LEAVES = [leaf_hash(x) for x in TD_LEAF_INPUTS]


def _hx(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# --------------------------------------------------------------------------- hashing


def test_constants_are_the_rfc_values() -> None:
    """The prefixes are 0x00/0x01 and the empty root is SHA-256 of nothing."""
    assert LEAF_PREFIX == b"\x00"
    assert NODE_PREFIX == b"\x01"
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """Leaf and node hashes prepend different bytes, so equal input gives different hashes."""
    a, b = b"a" * 32, b"b" * 32
    assert leaf_hash(a + b) == _sha(b"\x00" + a + b)
    assert node_hash(a, b) == _sha(b"\x01" + a + b)
    assert leaf_hash(a + b) != node_hash(a, b)


def test_rfc6962_leaf_hashes_match_vectors() -> None:
    """Leaf hashes of the transparency-dev inputs equal their published level-0 node hashes."""
    assert [h.hex() for h in TD_LEAVES] == TD_NODE_HASHES[0]


@pytest.mark.parametrize("size", range(9))
def test_rfc6962_roots_match_vectors(size: int) -> None:
    """root() and CompactRange give the published root for every prefix of the 8 test leaves."""
    assert root(TD_LEAVES[:size]).hex() == TD_ROOTS[size]
    cr = CompactRange.empty()
    cr.extend(TD_LEAVES[:size])
    assert cr.root().hex() == TD_ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_rfc6962_compact_trees_match_vectors(size: int) -> None:
    """The compact range over each prefix holds exactly the published subtree hashes."""
    cr = CompactRange.empty()
    cr.extend(TD_LEAVES[:size])
    assert [h.hex() for h in cr.hashes] == [TD_NODE_HASHES[lv][i] for lv, i in TD_COMPACT[size]]


@pytest.mark.parametrize(("index", "size", "proof"), TD_INCLUSION)
def test_rfc6962_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    """Generated inclusion proofs equal the published ones and verify against the published root."""
    assert [h.hex() for h in inclusion_proof(index, TD_LEAVES[:size])] == proof
    verify_inclusion(index, size, TD_LEAVES[index], _hx(proof), bytes.fromhex(TD_ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), TD_CONSISTENCY)
def test_rfc6962_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    """Generated consistency proofs equal the published ones and verify against published roots."""
    assert [h.hex() for h in consistency_proof(old, TD_LEAVES[:new])] == proof
    verify_consistency(old, new, bytes.fromhex(TD_ROOTS[old]), bytes.fromhex(TD_ROOTS[new]), _hx(proof))


# --------------------------------------------------------------------------- root and CompactRange


def test_root_matches_reference_for_small_sizes() -> None:
    """root() equals the recursive RFC definition for every size 0..99."""
    for n in range(100):
        assert root(LEAVES[:n]) == REF_ROOTS[n], n


@pytest.mark.parametrize(
    "level",
    [
        "python",
        # tests/core/test_native.py fails where the extension is missing by accident
        pytest.param("native", marks=pytest.mark.skipif(native.ext is None, reason="the C extension is not built")),
    ],
)
def test_root_matches_reference_with_either_level_hash(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """root() and extend_concatenated equal the RFC definition with node hashes in Python and in C alike."""
    monkeypatch.setattr(merkle, "_hash_pairs", None if level == "python" else native.ext.hash_pairs)
    for n in range(100):
        assert root(LEAVES[:n]) == REF_ROOTS[n], n
        rng = CompactRange.empty(0)
        rng.extend_concatenated(b"".join(LEAVES[:n]))
        assert rng.root() == REF_ROOTS[n], n
    if level == "native":
        with pytest.raises(ValueError, match="multiple of 64"):
            native.ext.hash_pairs(b"x" * 63)


def test_root_rejects_wrong_length_hashes() -> None:
    """root() refuses leaf hashes that are not 32 bytes, even if the total length adds up."""
    with pytest.raises(ValueError, match="leaf hash 1 is 31 bytes"):
        root([LEAVES[0], LEAVES[1][:31], LEAVES[2] + b"x"])


def test_compact_range_root_at_every_prefix() -> None:
    """Appending one by one gives the reference root and subtree hashes after every leaf."""
    cr = CompactRange.empty()
    assert cr.root() == EMPTY_ROOT
    for n in range(1, 100):
        cr.append(LEAVES[n - 1])
        assert cr.end == n
        assert cr.root() == REF_ROOTS[n], n
        assert list(cr.hashes) == ref_compact(0, n, LEAVES), n


def test_compact_range_nonzero_begin_matches_reference_decomposition() -> None:
    """A range starting mid-tree holds the maximal aligned subtrees of [begin, end) after every append."""
    for begin in range(0, 40):
        cr = CompactRange.empty(begin)
        for end in range(begin + 1, 70):
            cr.append(LEAVES[end - 1])
            assert list(cr.hashes) == ref_compact(begin, end, LEAVES), (begin, end)


def test_merges_at_all_split_points() -> None:
    """Merging [0,a) + [a,b) + [b,n) equals appending [0,n) for all a <= b <= n <= 40."""
    for n in range(41):
        whole = CompactRange.empty()
        whole.extend(LEAVES[:n])
        for a in range(n + 1):
            for b in range(a, n + 1):
                left = CompactRange.empty()
                left.extend(LEAVES[:a])
                mid = CompactRange.empty(a)
                mid.extend(LEAVES[a:b])
                right = CompactRange.empty(b)
                right.extend(LEAVES[b:n])
                mid.merge(right)
                assert list(mid.hashes) == ref_compact(a, n, LEAVES), (a, b, n)
                left.merge(mid)
                assert left == whole, (a, b, n)
                assert left.root() == REF_ROOTS[n]


def test_merge_rejects_non_adjacent_ranges() -> None:
    """Merging a range that does not start at this range's end raises ValueError."""
    cr = CompactRange.empty()
    cr.extend(LEAVES[:5])
    other = CompactRange.empty(6)
    other.append(LEAVES[6])
    with pytest.raises(ValueError, match=r"cannot merge compact range \[6, 7\) onto \[0, 5\)"):
        cr.merge(other)
    assert cr.end == 5 and cr.root() == REF_ROOTS[5]


def test_extend_concatenated_matches_append_from_every_start() -> None:
    """extend_concatenated equals appending one by one, from aligned and unaligned starts."""
    for begin in (0, 3, 8):
        for start in range(begin, begin + 20):
            for count in (0, 1, 2, 7, 64, 100):
                base = CompactRange.empty(begin)
                base.extend(LEAVES[begin:start])
                slow, fast = base.copy(), base.copy()
                slow.extend(LEAVES[start : start + count])
                fast.extend_concatenated(b"".join(LEAVES[start : start + count]))
                assert fast == slow, (begin, start, count)


def test_extend_concatenated_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny chunk size the fast path still matches the reference at every prefix length."""
    monkeypatch.setattr(merkle, "_CHUNK_LEAVES", 4)
    for n in range(100):
        cr = CompactRange.empty()
        cr.extend_concatenated(b"".join(LEAVES[:n]))
        assert cr.root() == REF_ROOTS[n], n


def test_extend_concatenated_large_blob_matches_root() -> None:
    """A blob larger than one chunk (70,000 leaves) gives the same root as root() and append."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(70_000)]
    fast = CompactRange.empty()
    fast.append(leaves[0])
    fast.extend_concatenated(b"".join(leaves[1:]))
    slow = CompactRange.empty()
    slow.extend(leaves)
    assert fast == slow
    assert fast.root() == root(leaves)


def test_compact_range_rejects_bad_input() -> None:
    """Bad leaf hashes, blobs, restored states and root() on a mid-tree range raise ValueError."""
    cr = CompactRange.empty()
    with pytest.raises(ValueError, match="32 bytes"):
        cr.append(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        cr.append(bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a multiple of 32"):
        cr.extend_concatenated(b"x" * 33)
    assert cr.end == 0 and cr.hashes == ()
    with pytest.raises(ValueError, match="leaf hash 2 must be 32 bytes"):
        cr.extend([LEAVES[0], LEAVES[1], b"bad", LEAVES[3]])
    assert cr.end == 2 and cr.root() == REF_ROOTS[2]
    with pytest.raises(ValueError, match="needs begin 0"):
        CompactRange.empty(3).root()
    with pytest.raises(ValueError, match=r"\[0, 3\) needs 2 subtree hashes, got 1"):
        CompactRange(0, 3, [LEAVES[0]])
    with pytest.raises(ValueError, match="not a valid leaf range"):
        CompactRange(5, 4)


def test_compact_range_restores_from_its_state() -> None:
    """A range rebuilt from (begin, end, hashes) continues exactly like the original."""
    for begin, end in ((0, 0), (0, 13), (5, 29), (8, 8)):
        cr = CompactRange.empty(begin)
        cr.extend(LEAVES[begin:end])
        restored = CompactRange(cr.begin, cr.end, cr.hashes)
        assert restored == cr
        cr.extend(LEAVES[end:60])
        restored.extend(LEAVES[end:60])
        assert restored == cr
        assert "CompactRange(begin=" in repr(cr)


# --------------------------------------------------------------------------- inclusion proofs


def test_all_inclusion_proofs_up_to_40_verify_and_tampering_fails() -> None:
    """Every inclusion proof for sizes 1..40 matches PATH, verifies, and fails after any tampering."""
    for n in range(1, 41):
        tree_root = REF_ROOTS[n]
        for i in range(n):
            proof = inclusion_proof(i, LEAVES[:n])
            assert proof == ref_path(i, LEAVES[:n]), (i, n)
            verify_inclusion(i, n, LEAVES[i], proof, tree_root)
            for bad in flips(LEAVES[i]):
                assert fails(verify_inclusion, i, n, bad, proof, tree_root)
            for bad in flips(tree_root):
                assert fails(verify_inclusion, i, n, LEAVES[i], proof, bad)
            for k in range(len(proof)):
                for bad in flips(proof[k]):
                    tampered = [*proof[:k], bad, *proof[k + 1 :]]
                    assert fails(verify_inclusion, i, n, LEAVES[i], tampered, tree_root)
            for j in range(-1, n + 2):
                if j != i:
                    assert fails(verify_inclusion, j, n, LEAVES[i], proof, tree_root), (i, j, n)
            for m in (0, n // 2, n * 2):
                if m != n:
                    assert fails(verify_inclusion, i, m, LEAVES[i], proof, tree_root), (i, m, n)
            for m in range(1, 2 * n + 2):
                if m != n and m < len(REF_ROOTS):
                    assert fails(verify_inclusion, i, m, LEAVES[i], proof, REF_ROOTS[m]), (i, m, n)
            assert fails(verify_inclusion, i, n, LEAVES[i], [*proof, tree_root], tree_root)
            assert fails(verify_inclusion, i, n, LEAVES[i], [tree_root, *proof], tree_root)
            if proof:
                assert fails(verify_inclusion, i, n, LEAVES[i], proof[:-1], tree_root)
                assert fails(verify_inclusion, i, n, LEAVES[i], proof[::-1], tree_root) or len(proof) == 1


def test_inclusion_proof_length_error_message() -> None:
    """A proof with the wrong number of hashes names the leaf, the size, and both counts."""
    proof = inclusion_proof(5, LEAVES[:8])
    expected = r"^inclusion proof for leaf 5 in tree of size 8 has 2 hashes, expected 3$"
    with pytest.raises(IntegrityError, match=expected):
        verify_inclusion(5, 8, LEAVES[5], proof[:2], REF_ROOTS[8])


def test_inclusion_root_mismatch_error_message() -> None:
    """A proof that computes another root says which root it computed and which was expected."""
    proof = inclusion_proof(5, LEAVES[:8])
    bad = bytes(32)
    got = REF_ROOTS[8].hex()[:16]
    expected = rf"^inclusion proof for leaf 5 in tree of size 8: computed root {got}…, expected 0{{16}}…$"
    with pytest.raises(IntegrityError, match=expected):
        verify_inclusion(5, 8, LEAVES[5], proof, bad)


def test_inclusion_rejects_malformed_inputs() -> None:
    """Out-of-range indices, empty trees and wrong-length hashes fail as IntegrityError."""
    with pytest.raises(IntegrityError, match="outside the tree"):
        verify_inclusion(0, 0, LEAVES[0], [], EMPTY_ROOT)
    with pytest.raises(IntegrityError, match="outside the tree"):
        verify_inclusion(-1, 4, LEAVES[0], [], REF_ROOTS[4])
    with pytest.raises(IntegrityError, match="leaf hash is 3 bytes"):
        verify_inclusion(0, 1, b"abc", [], REF_ROOTS[1])
    with pytest.raises(IntegrityError, match="root is 0 bytes"):
        verify_inclusion(0, 1, LEAVES[0], [], b"")
    with pytest.raises(IntegrityError, match="proof hash 0 is 0 bytes"):
        verify_inclusion(0, 2, LEAVES[0], [b""], REF_ROOTS[2])


def test_inclusion_proof_rejects_missing_leaf() -> None:
    """Asking for a proof of a leaf that does not exist is a caller error (ValueError)."""
    with pytest.raises(ValueError, match="no leaf 3 in a tree of size 3"):
        inclusion_proof(3, LEAVES[:3])
    with pytest.raises(ValueError):
        inclusion_proof(0, [])


# --------------------------------------------------------------------------- consistency proofs


def test_all_consistency_proofs_up_to_40_verify_and_tampering_fails() -> None:
    """Every consistency proof for 1 <= m <= n <= 40 matches PROOF, verifies, and fails when tampered."""
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = consistency_proof(m, LEAVES[:n])
            assert proof == ref_proof(m, LEAVES[:n]), (m, n)
            old, new = REF_ROOTS[m], REF_ROOTS[n]
            verify_consistency(m, n, old, new, proof)
            for bad in flips(old):
                assert fails(verify_consistency, m, n, bad, new, proof), (m, n)
            for bad in flips(new):
                assert fails(verify_consistency, m, n, old, bad, proof), (m, n)
            for k in range(len(proof)):
                for bad in flips(proof[k]):
                    assert fails(verify_consistency, m, n, old, new, [*proof[:k], bad, *proof[k + 1 :]])
            for m2 in range(0, n + 1):
                if m2 != m and (m2 or proof):  # size 0 with an empty proof is always consistent
                    assert fails(verify_consistency, m2, n, REF_ROOTS[m2], new, proof), (m, m2, n)
            for n2 in range(1, 2 * n + 2):
                if n2 != n and n2 >= m and n2 < len(REF_ROOTS):
                    assert fails(verify_consistency, m, n2, old, REF_ROOTS[n2], proof), (m, n, n2)
            if m != n:
                assert fails(verify_consistency, m, n, new, old, proof)
                assert fails(verify_consistency, m, n, old, new, [])
                assert fails(verify_consistency, m, n, old, new, proof[:-1])
                assert fails(verify_consistency, m, n, old, new, [*proof, new])
                assert fails(verify_consistency, m, n, old, new, [proof[0], *proof])
                assert fails(verify_consistency, n, m, new, old, proof)


def test_consistency_trivial_cases() -> None:
    """Size 0 is consistent with anything via an empty proof; equal sizes need equal roots."""
    for n in range(0, 10):
        assert consistency_proof(0, LEAVES[:n]) == []
        assert consistency_proof(n, LEAVES[:n]) == []
        verify_consistency(0, n, EMPTY_ROOT, REF_ROOTS[n], [])
        verify_consistency(n, n, REF_ROOTS[n], REF_ROOTS[n], [])
    with pytest.raises(IntegrityError, match="has 1 hashes, expected 0"):
        verify_consistency(0, 4, EMPTY_ROOT, REF_ROOTS[4], [REF_ROOTS[4]])
    with pytest.raises(IntegrityError, match="has 1 hashes, expected 0"):
        verify_consistency(4, 4, REF_ROOTS[4], REF_ROOTS[4], [REF_ROOTS[4]])
    with pytest.raises(IntegrityError, match="not the empty-tree root"):
        verify_consistency(0, 4, REF_ROOTS[1], REF_ROOTS[4], [])
    with pytest.raises(IntegrityError, match="trees of equal size differ"):
        verify_consistency(4, 4, REF_ROOTS[4], REF_ROOTS[5], [])
    with pytest.raises(IntegrityError, match="trees of equal size differ"):
        verify_consistency(0, 0, EMPTY_ROOT, REF_ROOTS[1], [])
    with pytest.raises(IntegrityError, match="must not be smaller"):
        verify_consistency(5, 4, REF_ROOTS[5], REF_ROOTS[4], [])
    with pytest.raises(IntegrityError, match="new root is 9 bytes"):
        verify_consistency(1, 2, REF_ROOTS[1], b"WrongRoot", [LEAVES[1]])
    with pytest.raises(ValueError, match="no consistency proof from size 5 to size 4"):
        consistency_proof(5, LEAVES[:4])


def test_consistency_root_mismatch_error_message() -> None:
    """A wrong new root is reported with the computed and the claimed value."""
    proof = consistency_proof(4, LEAVES[:7])
    bad = bytes.fromhex("9c02") + bytes(30)
    got = REF_ROOTS[7].hex()[:16]
    claimed = "9c02" + "0" * 12
    expected = rf"^consistency proof from size 4 to 7: computed new root {got}…, checkpoint says {claimed}…$"
    with pytest.raises(IntegrityError, match=expected):
        verify_consistency(4, 7, REF_ROOTS[4], bad, proof)


def test_consistency_proof_length_error_message() -> None:
    """A consistency proof of the wrong length names both sizes and both counts."""
    proof = consistency_proof(6, LEAVES[:8])
    expected = r"^consistency proof from size 6 to 8 has 4 hashes, expected 3$"
    with pytest.raises(IntegrityError, match=expected):
        verify_consistency(6, 8, REF_ROOTS[6], REF_ROOTS[8], [*proof, proof[0]])


# --------------------------------------------------------------------------- cost


def test_proof_generation_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any proof over n leaves costs fewer than n SHA-256 calls."""
    calls = 0
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        nonlocal calls
        calls += 1
        return real(data)

    leaves = LEAVES[:300]
    monkeypatch.setattr(merkle, "_sha256", counting)
    for i in (0, 1, 150, 255, 256, 299):
        calls = 0
        assert inclusion_proof(i, leaves) == ref_path(i, leaves)
        assert calls < len(leaves), (i, calls)
    for m in (1, 2, 150, 255, 256, 257, 299):
        calls = 0
        assert consistency_proof(m, leaves) == ref_proof(m, leaves)
        assert calls < len(leaves), (m, calls)


# --------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=150)
@given(data=st.data(), n=st.integers(min_value=1, max_value=300))
def test_property_proofs_verify_for_random_sizes(data: st.DataObject, n: int) -> None:
    """For random sizes up to 300, root, inclusion and consistency agree with the reference."""
    leaves = LEAVES[:n]
    expected_root = ref_mth(leaves)
    assert root(leaves) == expected_root
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    proof = inclusion_proof(index, leaves)
    assert proof == ref_path(index, leaves)
    verify_inclusion(index, n, leaves[index], proof, expected_root)
    m = data.draw(st.integers(min_value=0, max_value=n), label="old_size")
    old_root = ref_mth(leaves[:m])
    cproof = consistency_proof(m, leaves)
    assert cproof == ref_proof(m, leaves)
    verify_consistency(m, n, old_root, expected_root, cproof)
    if cproof:
        k = data.draw(st.integers(min_value=0, max_value=len(cproof) - 1), label="tampered")
        bad = [*cproof]
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(IntegrityError):
            verify_consistency(m, n, old_root, expected_root, bad)


@settings(deadline=None, max_examples=150)
@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_property_merging_random_pieces_matches_reference(cuts: list[int]) -> None:
    """Splitting [0, n) at random points, building pieces by either path and merging gives the reference."""
    points = sorted({0, *cuts})
    n = points[-1]
    pieces = []
    for i, (lo, hi) in enumerate(zip(points, [*points[1:], n], strict=True)):
        piece = CompactRange.empty(lo)
        if i % 2:
            piece.extend_concatenated(b"".join(LEAVES[lo:hi]))
        else:
            piece.extend(LEAVES[lo:hi])
        assert list(piece.hashes) == ref_compact(lo, hi, LEAVES)
        pieces.append(piece)
    acc = pieces[0]
    for piece in pieces[1:]:
        acc.merge(piece)
    assert acc.begin == 0 and acc.end == n
    assert acc.root() == ref_mth(LEAVES[:n])


def test_a_compact_range_checks_what_it_is_restored_from() -> None:
    """A range restored with one bound is empty; hashes of the wrong type or size are refused."""
    assert CompactRange(5) == CompactRange.empty(5) and CompactRange(5).end == 5
    leaf = hashlib.sha256(b"x").digest()
    with pytest.raises(ValueError, match="compact range hash 0 is not a 32-byte bytes object"):
        CompactRange(0, 1, [bytearray(leaf)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="compact range hash 0 is not a 32-byte bytes object"):
        CompactRange(0, 1, [leaf[:31]])


def test_a_compact_range_is_not_equal_to_other_things() -> None:
    """Comparing with something that is not a CompactRange is NotImplemented, so == is False."""
    assert CompactRange.empty().__eq__(()) is NotImplemented
    assert CompactRange.empty() != ()


def test_concatenated_leaf_hashes_may_come_as_a_buffer() -> None:
    """extend_concatenated takes a bytearray or memoryview as it takes bytes."""
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    want = CompactRange.empty()
    want.extend(leaves)
    for blob in (bytearray(b"".join(leaves)), memoryview(b"".join(leaves))):
        got = CompactRange.empty()
        got.extend_concatenated(blob)  # type: ignore[arg-type]
        assert got == want


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (b"short", "bytes of 5 bytes"),
        (bytearray(3), "bytearray of 3 bytes"),
        ("text", "str"),
        (None, "NoneType"),
    ],
)
def test_a_bad_leaf_hash_is_described_by_type_and_size(value: object, described: str) -> None:
    """The error for a leaf that is not 32 bytes names its type (and its length when it has one)."""
    with pytest.raises(ValueError, match=f"got {described}"):
        CompactRange.empty().append(value)  # type: ignore[arg-type]
