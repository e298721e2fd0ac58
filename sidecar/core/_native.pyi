"""Types of the C extension sidecar/core/_native.c (see sidecar/core/native.py)."""

def canonical(body: bytes, /) -> int:
    """1 if `body` is exactly canonical JSON of docs/format.md §3, 0 if it is not, -1 if not decided."""

def scan_records(
    data: bytes, pos: int, version: int, seq: int, prev: bytes, last_ts: int, limit: int, /
) -> tuple[int, int, bytes, int, int, dict[str, int], list[frozenset[str]]]:
    """(pos, n, leaves, first_ts, last_ts, types, subjects) of the clean record frames from `pos` on."""

def hash_pairs(buf: bytes, /) -> bytes:
    """The node hash SHA-256(0x01 || left || right) of each 64-byte pair in `buf`, concatenated."""
