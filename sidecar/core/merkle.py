"""RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges, and proofs for the tamper-evident log.

Role: every log entry's leaf hash goes into one append-only Merkle tree. Checkpoints sign
(size, root); this module computes those roots incrementally (`CompactRange`), builds
inclusion and consistency proofs from stored leaf hashes, and verifies proofs received
from elsewhere. It is pure: no I/O, no clock, no asyncio, no global state.

Invariants (RFC 9162 §2.1.1, identical to RFC 6962 §2.1 with SHA-256):

* Domain separation. A leaf hash is ``SHA-256(0x00 || data)`` and an interior node is
  ``SHA-256(0x01 || left || right)``, so a leaf can never be passed off as a node.
* The root of the empty tree is ``SHA-256(b"")`` (`EMPTY_ROOT`); the root of one leaf is
  its leaf hash.
* The tree over n > 1 leaves splits at k, the largest power of two smaller than n:
  ``MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))``. The tree is left-balanced and an
  append never changes an existing perfect subtree.
* Every hash handled here is exactly 32 bytes; anything else is refused, never padded.
* A compact range [begin, end) is the list of roots of the maximal perfect subtrees
  lying inside [begin, end), left to right, each aligned to its own size (a subtree of
  2^h leaves starts at a multiple of 2^h). It is O(log n) hashes and is enough to keep
  appending and to compute the root without the leaves.

Proofs follow RFC 9162: inclusion proofs are PATH (§2.1.3.1), consistency proofs are
PROOF/SUBPROOF (§2.1.4.1), ordered from the leaves upward. Generating a proof over n
leaf hashes costs at most n - 1 node hashes (sibling subtrees are disjoint). Verification
(§2.1.3.2, §2.1.4.2) raises `IntegrityError` naming the proof, what was expected and what
was computed. Verification binds the tree size only through the root: the caller must take
size and root from the same signed checkpoint.

Caller errors (a proof asked for a leaf that does not exist, a malformed compact range)
raise ValueError; data that fails verification raises IntegrityError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sidecar.core import native
from sidecar.errors import IntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
# extend_concatenated hashes at most this many leaves as one perfect subtree at a time,
# which bounds the temporary memory to about 2 MiB of hashes.
_CHUNK_LEAVES = 1 << 16
# One level of node hashes in C (sidecar/core/native.py), unless not built or SIDECAR_NATIVE=0.
_hash_pairs = native.ext.hash_pairs if native.ENABLED else None


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash SHA-256(0x00 || data)."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _short(h: bytes) -> str:
    text = h.hex()
    return text if len(text) <= 16 else text[:16] + "…"


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _concat(leaf_hashes: Sequence[bytes]) -> bytes:
    """Join leaf hashes into one buffer after checking each is a 32-byte hash."""
    buf = b"".join(leaf_hashes)
    if len(buf) != HASH_SIZE * len(leaf_hashes) or any(len(h) != HASH_SIZE for h in leaf_hashes):
        for i, h in enumerate(leaf_hashes):
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hash {i} is {len(h)} bytes, expected {HASH_SIZE}")
    return buf


def _mth(buf: bytes) -> bytes:
    """MTH over a buffer of concatenated 32-byte hashes, level by level.

    Pairing adjacent nodes and promoting an unpaired last node unchanged yields exactly the
    RFC 9162 left-balanced tree; it costs n - 1 node hashes.
    """
    n = len(buf) // HASH_SIZE
    if n == 0:
        return EMPTY_ROOT
    sha = _sha256
    prefix = NODE_PREFIX
    pairs = _hash_pairs
    while n > 1:
        paired = (n >> 1) * 64
        if pairs is not None:
            buf = pairs(buf[:paired]) + buf[paired:]
        else:
            level = [sha(prefix + buf[i : i + 64]).digest() for i in range(0, paired, 64)]
            if n & 1:
                level.append(buf[paired:])
            buf = b"".join(level)
        n = (n + 1) >> 1
    return buf


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash over already-hashed leaves (EMPTY_ROOT for none)."""
    return _mth(_concat(leaf_hashes))


def _levels(begin: int, end: int) -> list[int]:
    """Heights of the perfect subtrees in the compact range [begin, end), left to right."""
    if begin == end:
        return []
    if begin == 0:
        left, right = 0, end
    else:
        # Paths to leaves begin-1 and end diverge at bit d; only nodes below it are inside.
        before = begin - 1
        mask = (1 << ((before ^ end).bit_length() - 1)) - 1
        left, right = ~before & mask, end & mask
    levels = [h for h in range(left.bit_length()) if left >> h & 1]
    levels.extend(h for h in reversed(range(right.bit_length())) if right >> h & 1)
    return levels


class CompactRange:
    """Roots of the maximal aligned perfect subtrees covering leaves [begin, end).

    Same structure as transparency-dev/merkle's compact.Range: left of the range's
    highest split point the subtrees grow in size, right of it they shrink.
    """

    __slots__ = ("_begin", "_end", "_hashes")

    def __init__(self, begin: int = 0, end: int | None = None, hashes: Iterable[bytes] = ()) -> None:
        """Restore a range from its bounds and subtree roots (as returned by `hashes`)."""
        if end is None:
            end = begin
        if begin < 0 or end < begin:
            raise ValueError(f"compact range [{begin}, {end}) is not a valid leaf range")
        stored = list(hashes)
        expected = len(_levels(begin, end))
        if len(stored) != expected:
            raise ValueError(f"compact range [{begin}, {end}) needs {expected} subtree hashes, got {len(stored)}")
        for i, h in enumerate(stored):
            if type(h) is not bytes or len(h) != HASH_SIZE:
                raise ValueError(f"compact range hash {i} is not a {HASH_SIZE}-byte bytes object")
        self._begin = begin
        self._end = end
        self._hashes = stored

    @classmethod
    def empty(cls, begin: int = 0) -> CompactRange:
        """Return the empty range [begin, begin)."""
        return cls(begin, begin)

    @property
    def begin(self) -> int:
        """Index of the first leaf covered."""
        return self._begin

    @property
    def end(self) -> int:
        """One past the index of the last leaf covered (the tree size when begin is 0)."""
        return self._end

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The subtree roots, left to right."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        clone = CompactRange.__new__(CompactRange)
        clone._begin = self._begin
        clone._end = self._end
        clone._hashes = list(self._hashes)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._begin, self._end, self._hashes) == (other._begin, other._end, other._hashes)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(begin={self._begin}, end={self._end}, hashes={len(self._hashes)})"

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash at index `end`."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {_describe(leaf_hash)}")
        hashes = self._hashes
        begin = self._begin
        h = leaf_hash
        idx = self._end
        self._end = idx + 1
        level = 0
        # The new node is a right child while idx is odd; merge while its sibling is inside.
        while idx & 1 and (idx - 1) << level >= begin:
            h = _sha256(NODE_PREFIX + hashes.pop() + h).digest()
            idx >>= 1
            level += 1
        hashes.append(h)

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order; on a bad hash, those before it stay appended."""
        hashes = self._hashes
        pop = hashes.pop
        push = hashes.append
        begin = self._begin
        sha = _sha256
        prefix = NODE_PREFIX
        end = self._end
        try:
            for h in leaf_hashes:
                if type(h) is not bytes or len(h) != HASH_SIZE:
                    raise ValueError(f"leaf hash {end} must be {HASH_SIZE} bytes, got {_describe(h)}")
                idx = end
                end += 1
                if begin == 0:
                    while idx & 1:
                        h = sha(prefix + pop() + h).digest()
                        idx >>= 1
                else:
                    level = 0
                    while idx & 1 and (idx - 1) << level >= begin:
                        h = sha(prefix + pop() + h).digest()
                        idx >>= 1
                        level += 1
                push(h)
        finally:
            self._end = end

    def extend_concatenated(self, blob: bytes) -> None:
        """Append the leaf hashes concatenated in `blob` (a multiple of 32 bytes); the fast path."""
        count, rest = divmod(len(blob), HASH_SIZE)
        if rest:
            raise ValueError(f"concatenated leaf hashes are {len(blob)} bytes, not a multiple of {HASH_SIZE}")
        if type(blob) is not bytes:
            blob = bytes(blob)
        pos = 0
        while pos < count:
            end = self._end
            # Largest aligned perfect subtree that starts at `end` and fits in what is left.
            aligned = end & -end if end else _CHUNK_LEAVES
            size = min(aligned, _CHUNK_LEAVES, 1 << ((count - pos).bit_length() - 1))
            level = size.bit_length() - 1
            self._push(_mth(blob[pos * HASH_SIZE : (pos + size) * HASH_SIZE]), level)
            pos += size

    def merge(self, other: CompactRange) -> None:
        """Append the range `other`, which must start where this one ends."""
        if other._begin != self._end:
            raise ValueError(
                f"cannot merge compact range [{other._begin}, {other._end}) onto "
                f"[{self._begin}, {self._end}): it must begin at {self._end}"
            )
        for h, level in zip(list(other._hashes), _levels(other._begin, other._end), strict=True):
            self._push(h, level)

    def _push(self, h: bytes, level: int) -> None:
        """Append a perfect subtree root of height `level` starting at `end` (which it aligns to)."""
        hashes = self._hashes
        begin = self._begin
        idx = self._end >> level
        self._end += 1 << level
        while idx & 1 and (idx - 1) << level >= begin:
            h = _sha256(NODE_PREFIX + hashes.pop() + h).digest()
            idx >>= 1
            level += 1
        hashes.append(h)

    def root(self) -> bytes:
        """Return the tree root over leaves [0, end); only valid when begin is 0."""
        if self._begin != 0:
            raise ValueError(f"root of compact range [{self._begin}, {self._end}) needs begin 0")
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(NODE_PREFIX + h + r).digest()
        return r


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{type(value).__name__} of {len(value)} bytes"
    return type(value).__name__


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 inclusion proof for leaf `index` in the tree over `leaf_hashes`."""
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    buf = _concat(leaf_hashes)
    proof: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            proof.append(_mth(buf[(lo + k) * HASH_SIZE : hi * HASH_SIZE]))
            hi = lo + k
        else:
            proof.append(_mth(buf[lo * HASH_SIZE : (lo + k) * HASH_SIZE]))
            lo += k
            m -= k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 consistency proof from the first `old_size` leaves to all of them."""
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise ValueError(f"no consistency proof from size {old_size} to size {size}")
    if old_size in (0, size):
        return []
    buf = _concat(leaf_hashes)
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(buf[(lo + k) * HASH_SIZE : hi * HASH_SIZE]))
            hi = lo + k
        else:
            proof.append(_mth(buf[lo * HASH_SIZE : (lo + k) * HASH_SIZE]))
            lo += k
            m -= k
            complete = False
    if not complete:
        proof.append(_mth(buf[lo * HASH_SIZE : hi * HASH_SIZE]))
    proof.reverse()
    return proof


def _check_hash(where: str, what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise IntegrityError(f"{where}: {what} is {len(h)} bytes, expected {HASH_SIZE}")


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` with `root` (RFC 9162 §2.1.3.2)."""
    where = f"inclusion proof for leaf {index} in tree of size {size}"
    if not 0 <= index < size:
        raise IntegrityError(f"{where}: leaf index is outside the tree")
    _check_hash(where, "leaf hash", leaf_hash)
    _check_hash(where, "root", root)
    for i, p in enumerate(proof):
        _check_hash(where, f"proof hash {i}", p)
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise IntegrityError(f"{where} has {len(proof)} hashes, expected {expected}")

    fn, sn, r = index, size - 1, leaf_hash
    # The length check above makes the proof exactly as long as the path: the asserts state it.
    for p in proof:
        assert sn != 0, "proof longer than the path to the root"
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof shorter than the path to the root"
    if r != root:
        raise IntegrityError(f"{where}: computed root {_short(r)}, expected {_short(root)}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (`new_size`, `new_root`) extends (`old_size`, `old_root`) (RFC 9162 §2.1.4.2)."""
    where = f"consistency proof from size {old_size} to {new_size}"
    if old_size < 0 or new_size < old_size:
        raise IntegrityError(f"{where}: the new tree must not be smaller than the old one")
    _check_hash(where, "old root", old_root)
    _check_hash(where, "new root", new_root)
    for i, p in enumerate(proof):
        _check_hash(where, f"proof hash {i}", p)

    if old_size == 0 or old_size == new_size:
        if proof:
            raise IntegrityError(f"{where} has {len(proof)} hashes, expected 0")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise IntegrityError(
                f"{where}: old root {_short(old_root)} is not the empty-tree root {_short(EMPTY_ROOT)}"
            )
        if old_size == new_size and new_root != old_root:
            raise IntegrityError(
                f"{where}: trees of equal size differ: old root {_short(old_root)}, new root {_short(new_root)}"
            )
        return

    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    shift = (old_size & -old_size).bit_length() - 1
    old_is_perfect = old_size == 1 << shift
    expected = inner - shift + border + (0 if old_is_perfect else 1)
    if len(proof) != expected:
        raise IntegrityError(f"{where} has {len(proof)} hashes, expected {expected}")

    path = [old_root, *proof] if old_is_perfect else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:  # exactly as long as the path (the length check above)
        assert sn != 0, "proof longer than the path to the new root"
        if fn & 1 or fn == sn:
            fr = _sha256(NODE_PREFIX + c + fr).digest()
            sr = _sha256(NODE_PREFIX + c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof shorter than the path to the new root"
    problems = []
    if fr != old_root:
        problems.append(f"computed old root {_short(fr)}, checkpoint says {_short(old_root)}")
    if sr != new_root:
        problems.append(f"computed new root {_short(sr)}, checkpoint says {_short(new_root)}")
    if problems:
        raise IntegrityError(f"{where}: " + "; ".join(problems))
