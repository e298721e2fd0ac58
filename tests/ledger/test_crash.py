"""Crash safety of the ledger writer: SIGKILL loops, torn tails, half-made segments and keys, I/O errors.

The invariant under test (sidecar/ledger/writer.py): whatever `append()` acknowledged is on disk with
exactly the hash it was acknowledged with, after any crash and the recovery that follows it, and the
recovered directory verifies. These tests read segments with a tiny local reader built on
`sidecar.core.framing`, so they do not depend on the code paths they check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.verifier import verify_directory
from sidecar.clock import Clock, FixedClock
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.core.note import Checkpoint, split_note
from sidecar.core.record import encode_record, record_hash
from sidecar.core.segment import SEGMENT_DIR
from sidecar.errors import IntegrityError, StorageError
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig, Receipt

pytestmark = pytest.mark.slow

ORIGIN = "crash.test"
REPO = Path(__file__).resolve().parents[2]
KILL_SEED = 20_260_501
KILL_ITERATIONS = 60
PARENT_CONFIG = LedgerConfig(segment_max_bytes=64 * 1024)


# ---------------------------------------------------------------------------- a tiny local reader
@dataclass(frozen=True)
class Rec:
    seq: int
    hash: bytes
    ts: int
    event: dict[str, Any]
    segment: str
    offset: int


@dataclass
class Contents:
    records: list[Rec]
    checkpoints: list[tuple[str, int, Checkpoint, str]]  # (segment, offset, checkpoint, signer name)
    segments: list[str]

    def by_seq(self) -> dict[int, Rec]:
        return {r.seq: r for r in self.records}

    def of_type(self, etype: str) -> list[Rec]:
        return [r for r in self.records if r.event.get("type") == etype]


_Parsed = tuple[list[Rec], list[tuple[str, int, Checkpoint, str]]]


def _read_segment(path: Path) -> _Parsed:
    records: list[Rec] = []
    checkpoints: list[tuple[str, int, Checkpoint, str]] = []
    for frame in framing.iter_frames(path.read_bytes()):
        if isinstance(frame, framing.FrameDamage):
            break
        if frame.kind == framing.RECORD:
            obj = parse(frame.body)
            records.append(
                Rec(obj["seq"], record_hash(frame.body), int(obj["ts"]), obj["event"], path.name, frame.offset)
            )
        elif frame.kind in (framing.CHECKPOINT, framing.SEAL):
            body, sigs = split_note(frame.body)
            checkpoints.append((path.name, frame.offset, Checkpoint.parse_body(body), sigs[0].name))
    return records, checkpoints


def read_ledger(data: Path, cache: dict[str, tuple[tuple[int, int, int], _Parsed]] | None = None) -> Contents:
    """Every whole frame of every segment, in order; stops a segment at its first damaged frame.

    With `cache`, a segment whose size, mtime and inode are unchanged since the last call is not re-read.
    """
    out = Contents([], [], [])
    for path in sorted((data / SEGMENT_DIR).glob("*.seg")):
        out.segments.append(path.name)
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = cache.get(path.name) if cache is not None else None
        if hit is not None and hit[0] == key:
            parsed = hit[1]
        else:
            parsed = _read_segment(path)
            if cache is not None:
                cache[path.name] = (key, parsed)
        out.records.extend(parsed[0])
        out.checkpoints.extend(parsed[1])
    return out


def frames_of(path: Path) -> list[framing.Frame]:
    frames = []
    for frame in framing.iter_frames(path.read_bytes()):
        assert isinstance(frame, framing.Frame), f"{path.name}: unexpected damage {frame}"
        frames.append(frame)
    return frames


def open_segment(data: Path) -> Path:
    return sorted((data / SEGMENT_DIR).glob("*.seg"))[-1]


def assert_verifies(data: Path, workers: int | None = 1) -> None:
    report = verify_directory(data, KeyStore(data).trust(), workers=workers)
    assert report.ok, "verify_directory found: " + "; ".join(str(f) for f in report.findings[:5])


def assert_present(contents: Contents, acked: dict[int, bytes] | list[Receipt]) -> None:
    pairs = {r.seq: r.hash for r in acked} if isinstance(acked, list) else acked
    by_seq = contents.by_seq()
    missing = [s for s in pairs if s not in by_seq]
    assert not missing, f"{len(missing)} acknowledged records are gone, first seq {sorted(missing)[:5]}"
    wrong = [s for s, h in pairs.items() if by_seq[s].hash != h]
    assert not wrong, f"acknowledged records changed their hash: seq {sorted(wrong)[:5]}"


def event(n: int, pad: int = 40) -> IdentityEvent:
    return IdentityEvent(
        EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm="crash", request_id=f"r{n}", details={"pad": "x" * pad}
    )


async def fresh_ledger(
    data: Path, n: int = 20, *, config: LedgerConfig | None = None, clock: Clock | None = None
) -> list[Receipt]:
    """Initialise a ledger, append `n` events, close it cleanly; returns the receipts."""
    KeyStore(data).init(ORIGIN)
    ledger = await Ledger.open(data, config=config, clock=clock)
    try:
        receipts = [await ledger.append(event(i)) for i in range(n)]
    finally:
        await ledger.close()
    return receipts


async def reopen(
    data: Path, *, config: LedgerConfig | None = None, clock: Clock | None = None, extra: int = 3
) -> tuple[dict[str, Any] | None, int, list[Receipt]]:
    """Open (recovering), append `extra` events, close; returns (ledger.recovered, key epoch, receipts)."""
    ledger = await Ledger.open(data, config=config, clock=clock)
    try:
        recovered, epoch = ledger.recovered, ledger.public_key.epoch
        receipts = [await ledger.append(event(1000 + i)) for i in range(extra)]
    finally:
        await ledger.close()
    return recovered, epoch, receipts


def record_frame(data: Path, payload: dict[str, Any]) -> bytes:
    """A valid record frame that continues the chain at the end of the ledger (seq, prev, ts)."""
    last = read_ledger(data).records[-1]
    body = encode_record(last.seq + 1, max(time.time_ns(), last.ts), last.hash, payload)
    return framing.encode_frame(framing.RECORD, body)


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------- the SIGKILL loop
def _child_ready(out: Path, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if out.read_bytes().startswith(b"READY"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _acks(out: Path) -> list[tuple[int, bytes]]:
    acks = []
    for line in out.read_bytes().split(b"\n")[:-1]:  # a line cut by the kill has no newline: ignored
        if line.startswith(b"ACK "):
            _, seq, digest = line.split()
            acks.append((int(seq), bytes.fromhex(digest.decode())))
    return acks


def _simulate_torn_next_write(seg: Path, rng: random.Random) -> tuple[str, dict[int, bytes], int]:
    """Simulate a crash inside the next batch write: whole records, a torn frame and/or zeros.

    Only appends bytes after a clean tail (what a crashed write can leave); never removes bytes that may have
    been fsynced. A tail the kill itself tore, and a sealed segment, are left alone. Returns (what was done,
    the whole records appended as seq -> hash, the number of garbage bytes appended after them).
    """
    raw = seg.read_bytes()
    frames: list[framing.Frame] = []
    for frame in framing.iter_frames(raw):
        if isinstance(frame, framing.FrameDamage):
            return "left alone: torn by the kill", {}, 0
        frames.append(frame)
    if frames[-1].kind == framing.SEAL:
        return "left alone: sealed", {}, 0
    header = parse(frames[0].body)
    seq, prev, ts = header["first_seq"], bytes.fromhex(header["prev"]), time.time_ns()
    for frame in frames:
        if frame.kind == framing.RECORD:
            obj = parse(frame.body)
            seq, prev, ts = obj["seq"] + 1, record_hash(frame.body), max(ts, int(obj["ts"]))
    how = rng.choice(["partial-frame", "zeros", "records", "records+partial-frame"])
    out = bytearray()
    records: dict[int, bytes] = {}
    if how.startswith("records"):
        for _ in range(rng.randint(1, 3)):
            body = encode_record(seq, ts, prev, event(-seq).to_json())
            out += framing.encode_frame(framing.RECORD, body)
            records[seq] = prev = record_hash(body)
            seq += 1
    garbage = b""
    if how == "zeros":
        garbage = b"\0" * rng.choice([512, 4096, 65536])
    elif how.endswith("partial-frame"):
        frame = rng.choice(frames)
        whole = raw[frame.offset : frame.offset + framing.OVERHEAD + len(frame.body)]
        garbage = whole[: rng.randrange(1, len(whole))]
    append_bytes(seg, bytes(out) + garbage)
    return how, records, len(garbage)


async def _recover_in_parent(data: Path) -> dict[str, Any] | None:
    ledger = await Ledger.open(data, config=PARENT_CONFIG)
    recovered = ledger.recovered
    await ledger.close()
    return recovered


def test_sigkill_loop(tmp_path: Path) -> None:
    """Acknowledged records survive 60 seeded SIGKILLs of a busy writer, and every recovery verifies."""
    rng = random.Random(KILL_SEED)
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    acked: dict[int, bytes] = {}
    before_ready = torn_by_kill = 0
    simulated_writes: Counter[str] = Counter()
    cache: dict[str, Any] = {}
    started = time.monotonic()
    for i in range(KILL_ITERATIONS):
        where = f"iteration {i} (seed {KILL_SEED})"
        out, err = tmp_path / f"child-{i}.out", tmp_path / f"child-{i}.err"
        # One kill in six is timed from the spawn, not from READY, so it can land inside open()'s recovery.
        early = rng.random() < 1 / 6
        delay = rng.uniform(0.08, 0.3) if early else rng.uniform(0.05, 0.4)
        child_seed = rng.randrange(2**31)
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.ledger.crash_child", str(data), str(child_seed)],
                stdout=fo,
                stderr=fe,
                cwd=REPO,
            )
        try:
            if not early:
                ready = _child_ready(out, proc, time.monotonic() + 30)
                assert ready, f"{where}: child did not start (rc {proc.poll()}):\n{err.read_text()[-3000:]}"
            time.sleep(delay)
            assert proc.poll() is None, f"{where}: child exited by itself:\n{err.read_text()[-3000:]}"
            before_ready += not out.read_bytes().startswith(b"READY")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for seq, digest in _acks(out):
            # The same seq acknowledged with another hash: an acknowledged record was lost and its seq reused.
            assert acked.setdefault(seq, digest) == digest, f"{where}: seq {seq} acknowledged with two hashes"

        simulated: dict[int, bytes]
        how, simulated, garbage = "", {}, 0
        if rng.random() < 0.35 and any((data / SEGMENT_DIR).glob("*.seg")):
            how, simulated, garbage = _simulate_torn_next_write(open_segment(data), rng)
            simulated_writes[how] += 1
        try:
            recovered = asyncio.run(_recover_in_parent(data))
        except IntegrityError as exc:
            pytest.fail(f"{where}: recovery refused to start after {how or 'the kill'}: {exc}")
        if garbage:
            assert recovered is not None and recovered["bytes_cut"] == garbage, f"{where} {how}: {recovered}"
            assert recovered.get("records_without_checkpoint", 0) == len(simulated), f"{where}: {recovered}"
        elif how == "records":
            assert recovered is None, f"{where}: {how}: nothing was torn, yet recovery says {recovered}"
        else:
            torn_by_kill += recovered is not None

        contents = read_ledger(data, cache)
        assert [r.seq for r in contents.records] == list(range(len(contents.records))), f"{where}: seq gap"
        assert_present(contents, acked)
        assert_present(contents, simulated)  # whole records a crash left without a checkpoint are kept
        assert_verifies(data)
        out.unlink()
        err.unlink()

    contents = read_ledger(data, cache)
    rotations = len(contents.of_type("key.rotated"))
    recovered_records = contents.of_type("ledger.recovered")
    print(
        f"\nSIGKILL loop: {KILL_ITERATIONS} iterations in {time.monotonic() - started:.1f} s "
        f"({before_ready} killed before READY); {len(acked)} acknowledged records checked, "
        f"{len(contents.records)} records in total; ledger.recovered records: {len(recovered_records)} "
        f"({torn_by_kill} from tails the kill tore); simulated torn writes: {dict(simulated_writes)}; "
        f"key rotations: {rotations}; segments: {len(contents.segments)}"
    )
    assert len(acked) > KILL_ITERATIONS, "the children acknowledged almost nothing; the loop tested nothing"
    assert len(contents.segments) > 3 and rotations > 3, "no segment rolls or key rotations happened"
    for rec in recovered_records:
        assert rec.event["details"]["bytes_cut"] > 0 and rec.event["details"]["reason"]


# ---------------------------------------------------------------------------- torn tails
@pytest.mark.parametrize("shape", ["first-7-bytes", "half-body", "3-stray-bytes"])
async def test_torn_record_frame_is_cut_and_recorded(tmp_path: Path, shape: str) -> None:
    """A partial record frame at the tail is cut on open, a ledger.recovered record says so, it verifies."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    frame = record_frame(data, event(99).to_json())
    body_len = len(frame) - framing.OVERHEAD
    garbage = {"first-7-bytes": frame[:7], "half-body": frame[: 5 + body_len // 2], "3-stray-bytes": frame[:3]}[shape]
    seg = open_segment(data)
    clean_size = seg.stat().st_size
    append_bytes(seg, garbage)

    recovered, _, more = await reopen(data)

    reason = "stray bytes" if shape == "3-stray-bytes" else "runs past the end"
    assert recovered is not None and recovered["bytes_cut"] == len(garbage)
    assert recovered["offset"] == clean_size and reason in recovered["reason"]
    contents = read_ledger(data)
    [rec] = contents.of_type("ledger.recovered")
    assert rec.event["details"]["bytes_cut"] == len(garbage) and reason in rec.event["details"]["reason"]
    assert "r99" not in {r.event.get("request_id") for r in contents.records}
    assert_present(contents, receipts + more)
    assert_verifies(data)


async def test_zero_filled_tail_is_cut_and_recorded(tmp_path: Path) -> None:
    """4096 zero bytes after the last frame (a preallocated tail) are cut and recorded, and it verifies."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    append_bytes(open_segment(data), b"\0" * 4096)

    recovered, _, more = await reopen(data)

    assert recovered is not None and recovered["bytes_cut"] == 4096 and "zero bytes" in recovered["reason"]
    contents = read_ledger(data)
    [rec] = contents.of_type("ledger.recovered")
    assert rec.event["details"]["bytes_cut"] == 4096
    assert_present(contents, receipts + more)
    assert_verifies(data)


@pytest.mark.parametrize("torn_checkpoint", [False, True], ids=["no-checkpoint", "torn-checkpoint"])
async def test_whole_record_without_checkpoint_is_kept_and_signed(tmp_path: Path, torn_checkpoint: bool) -> None:
    """A whole record a crash left without its checkpoint is kept and covered by a new signed checkpoint."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    frame = record_frame(data, event(77).to_json())
    expected_hash = record_hash(frame[5:-4])  # kind+length | body | crc
    garbage = b"C\x00\x00\x01\x00partial checkpoint" if torn_checkpoint else b""
    append_bytes(open_segment(data), frame + garbage)

    recovered, _, more = await reopen(data)

    contents = read_ledger(data)
    [rec] = [r for r in contents.records if r.event.get("request_id") == "r77"]
    assert rec.seq == receipts[-1].seq + 1 and rec.hash == expected_hash
    after = [cp for seg, off, cp, _ in contents.checkpoints if (seg, off) > (rec.segment, rec.offset)]
    assert after and after[0].size == rec.seq + 1, "the kept record is not covered by the next checkpoint"
    if torn_checkpoint:
        assert recovered is not None and recovered["bytes_cut"] == len(garbage)
        assert recovered["records_without_checkpoint"] == 1
    else:
        assert recovered is None and contents.of_type("ledger.recovered") == []
    assert_present(contents, receipts + more)
    assert_verifies(data)


# ---------------------------------------------------------------------------- damage that is not a torn tail
def _middle_record(seg: Path) -> framing.Frame:
    records = [f for f in frames_of(seg) if f.kind == framing.RECORD]
    assert len(records) >= 10
    return records[len(records) // 2]


async def test_damage_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    """A flipped byte inside a record mid-way through the open segment stops the start and changes nothing."""
    data = tmp_path / "ledger"
    await fresh_ledger(data)
    seg = open_segment(data)
    frame = _middle_record(seg)
    raw = bytearray(seg.read_bytes())
    raw[frame.offset + 5 + len(frame.body) // 2] ^= 0x20
    seg.write_bytes(bytes(raw))

    with pytest.raises(IntegrityError, match="not a torn tail"):
        await Ledger.open(data)

    assert seg.read_bytes() == bytes(raw)


async def test_failed_open_releases_the_directory_lock(tmp_path: Path) -> None:
    """After Ledger.open refused damaged data, the repaired directory opens in the same process."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    seg = open_segment(data)
    good = seg.read_bytes()
    frame = _middle_record(seg)
    raw = bytearray(good)
    raw[frame.offset + 5 + len(frame.body) // 2] ^= 0x20
    seg.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        await Ledger.open(data)
    seg.write_bytes(good)  # the operator restores the segment from a replica

    _, _, more = await reopen(data)

    assert_present(read_ledger(data), receipts + more)
    assert_verifies(data)


async def test_damaged_length_field_in_the_middle_is_not_a_torn_tail(tmp_path: Path) -> None:
    """A corrupted length field in a mid-segment record stops the start instead of cutting acked records."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    seg = open_segment(data)
    frame = _middle_record(seg)
    raw = bytearray(seg.read_bytes())
    raw[frame.offset + 2] ^= 0x40  # length += 4 MiB: past the end of the file but below MAX_FRAME
    seg.write_bytes(bytes(raw))

    try:
        ledger = await Ledger.open(data)
    except IntegrityError as exc:
        assert "not a torn tail" in str(exc)
    else:
        recovered = ledger.recovered
        await ledger.close()
        kept = read_ledger(data).by_seq()
        lost = [r.seq for r in receipts if r.seq not in kept]
        pytest.fail(
            f"open treated mid-segment damage as a torn tail and cut it: {recovered}; "
            f"{len(lost)} acknowledged records lost (seq {lost[0]}..{lost[-1]}); "
            f"verify_directory ok afterwards: {verify_directory(data, KeyStore(data).trust()).ok}"
        )
    assert seg.read_bytes() == bytes(raw)


# ---------------------------------------------------------------------------- half-made segments
@pytest.mark.parametrize("shape", ["empty", "half-header", "7-bytes", "zeros"])
async def test_half_written_segment_header_is_discarded(tmp_path: Path, shape: str) -> None:
    """A next segment whose header a crash left unfinished is removed on open, and the ledger verifies."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    # Reopen with a tiny segment size: the start record seals 00000000.seg and 00000001.seg is created.
    ledger = await Ledger.open(data, config=LedgerConfig(segment_max_bytes=1))
    await ledger.close()
    seg = open_segment(data)
    assert seg.name == "00000001.seg"
    header = frames_of(seg)[0]
    header_frame = seg.read_bytes()[: framing.OVERHEAD + len(header.body)]
    seg.write_bytes(
        {
            "empty": b"",
            "half-header": header_frame[: len(header_frame) // 2],
            "7-bytes": header_frame[:7],
            "zeros": b"\0" * 4096,
        }[shape]
    )

    _, _, more = await reopen(data)

    contents = read_ledger(data)
    assert contents.segments == ["00000000.seg", "00000001.seg"]
    assert {contents.by_seq()[r.seq].segment for r in more} == {"00000001.seg"}
    assert_present(contents, receipts + more)
    assert_verifies(data)


# ---------------------------------------------------------------------------- interrupted key rotations
def _key_files(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "keys").glob("epoch-*.key"))


async def test_stray_new_key_without_rotation_record_is_destroyed(tmp_path: Path) -> None:
    """A next-epoch key file with no key.rotated record is destroyed on open and the old key keeps signing."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    KeyStore(data).create(1)  # the crash hit after the new key was saved, before the record was written
    assert _key_files(data) == ["epoch-000000.key", "epoch-000001.key"]

    _, epoch, more = await reopen(data)

    assert epoch == 0 and _key_files(data) == ["epoch-000000.key"]
    contents = read_ledger(data)
    assert contents.of_type("key.rotated") == []
    assert {name for *_, name in contents.checkpoints} == {f"{ORIGIN}#0"}
    assert_present(contents, receipts + more)
    assert_verifies(data)


async def test_old_key_left_after_completed_rotation_is_destroyed(tmp_path: Path) -> None:
    """An old epoch's key file that a crash left after a committed rotation is destroyed on open."""
    data = tmp_path / "ledger"
    clock = FixedClock(time.time_ns())
    receipts = await fresh_ledger(data, clock=clock)
    old_key = (data / "keys" / "epoch-000000.key").read_bytes()
    ledger = await Ledger.open(data, clock=clock)
    try:
        clock.t += 3601 * 10**9  # the epoch (3600 s) is over: the next commit rotates the key
        receipts.append(await ledger.append(event(500)))
        assert ledger.public_key.epoch == 1
    finally:
        await ledger.close()
    assert _key_files(data) == ["epoch-000001.key"]
    (data / "keys" / "epoch-000000.key").write_bytes(old_key)  # crash before the old key was destroyed

    _, epoch, more = await reopen(data, clock=clock)

    assert epoch == 1 and _key_files(data) == ["epoch-000001.key"]
    contents = read_ledger(data)
    assert len(contents.of_type("key.rotated")) == 1
    assert_present(contents, receipts + more)
    assert_verifies(data)


async def test_rotation_record_without_checkpoint_completes_on_open(tmp_path: Path) -> None:
    """A key.rotated record with a torn checkpoint is kept, signed by the old key; then the new key signs."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    keys = KeyStore(data)
    old = keys.trust().root_key
    new = keys.create(1)
    rotated = IdentityEvent(
        EventType.KEY_ROTATED,
        Outcome.SUCCEEDED,
        details={"key": new.public.to_json(), "epoch": 1, "previous": old.to_json()},
    ).to_json()
    frame = record_frame(data, rotated)
    torn = b"C\x00\x00\x00\xf0half a checkpoint"
    append_bytes(open_segment(data), frame + torn)

    recovered, epoch, more = await reopen(data)

    assert recovered is not None and recovered["records_without_checkpoint"] == 1
    assert recovered["bytes_cut"] == len(torn)
    assert epoch == 1 and _key_files(data) == ["epoch-000001.key"]
    contents = read_ledger(data)
    [rec] = contents.of_type("key.rotated")
    after = [(cp, name) for seg, off, cp, name in contents.checkpoints if (seg, off) > (rec.segment, rec.offset)]
    assert after[0][0].size == rec.seq + 1 and after[0][1] == f"{ORIGIN}#0"
    assert after[-1][1] == f"{ORIGIN}#1"
    assert_present(contents, receipts + more)
    assert_verifies(data)


# ---------------------------------------------------------------------------- I/O errors
def _require_chattr(probe_dir: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.fail("chattr is not installed: the I/O error tests need it (e2fsprogs); they must not skip")
    probe = probe_dir / "chattr-probe"
    probe.write_bytes(b"x")
    try:
        subprocess.run(["chattr", "+i", str(probe)], check=True, capture_output=True)
        with contextlib.suppress(PermissionError), probe.open("ab") as f:
            f.write(b"y")
            pytest.fail("chattr +i did not make a file immutable (not root?)")
    except subprocess.CalledProcessError as exc:
        pytest.fail(
            f"chattr +i does not work on {probe_dir}'s file system (needs root on ext4): {exc.stderr.decode().strip()}"
        )
    finally:
        subprocess.run(["chattr", "-i", str(probe)], check=False, capture_output=True)
        probe.unlink()


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


async def test_write_error_fails_the_append_promptly(tmp_path: Path) -> None:
    """When the open segment cannot be written, append raises StorageError at once; repaired, it recovers."""
    _require_chattr(tmp_path)
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    ledger = await Ledger.open(data)
    seg = open_segment(data)
    closed = False
    try:
        receipts = [await ledger.append(event(i)) for i in range(10)]
        _chattr("+i", seg)
        started = time.monotonic()
        with pytest.raises(StorageError):
            await asyncio.wait_for(ledger.append(event(10)), 10)
        assert time.monotonic() - started < 5
        # The write and the cut-back both fail on an immutable file: the ledger must say it is broken and why.
        assert ledger.broken, "the partial write could not be cut back, yet the ledger is not marked broken"
        with pytest.raises(StorageError, match="ledger unavailable"):
            await asyncio.wait_for(ledger.append(event(11)), 10)
        await ledger.close()
        closed = True
    finally:
        _chattr("-i", seg)
        if not closed:
            await ledger.close()

    recovered, _, more = await reopen(data)

    assert recovered is None
    contents = read_ledger(data)
    assert_present(contents, receipts + more)
    assert_verifies(data)


async def test_segment_roll_error_fails_appends_instead_of_hanging(tmp_path: Path) -> None:
    """When a sealed segment's successor cannot be created, later appends raise StorageError, not hang."""
    _require_chattr(tmp_path)
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    ledger = await Ledger.open(data, config=LedgerConfig(segment_max_bytes=4096))
    seg_dir = data / SEGMENT_DIR
    receipts: list[Receipt] = []
    outcomes: list[str] = []
    try:
        _chattr("+i", seg_dir)  # the open segment stays writable; no new segment file can be created
        for i in range(40):
            try:
                receipts.append(await asyncio.wait_for(ledger.append(event(i, pad=200)), 5))
                outcomes.append("ok")
            except StorageError:
                outcomes.append("StorageError")
            except TimeoutError:
                outcomes.append("hang")
                break
    finally:
        _chattr("-i", seg_dir)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ledger.close(), 10)
    task = ledger._task
    died = task.exception() if task is not None and task.done() and not task.cancelled() else None
    assert "hang" not in outcomes, (
        f"append hung after a failed segment roll (outcomes: {outcomes}); the writer task died with {died!r}"
    )
    assert "StorageError" in outcomes

    _, _, more = await reopen(data)

    assert_present(read_ledger(data), receipts + more)
    assert_verifies(data)


# ---------------------------------------------------------------------------- more crash shapes
async def test_half_written_first_segment_header_opens(tmp_path: Path) -> None:
    """A crash while the very first segment's header was written leaves a ledger that the next open starts."""
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    ledger = await Ledger.open(data)
    await ledger.close()
    seg = open_segment(data)
    header = frames_of(seg)[0]
    seg.write_bytes(seg.read_bytes()[: (framing.OVERHEAD + len(header.body)) // 2])

    _, _, more = await reopen(data)

    assert_present(read_ledger(data), more)
    assert_verifies(data)


async def test_torn_frame_followed_by_zero_fill_is_a_torn_tail(tmp_path: Path) -> None:
    """A half-written last frame followed by zeros (a file extended before its blocks landed) is cut."""
    data = tmp_path / "ledger"
    receipts = await fresh_ledger(data)
    frame = record_frame(data, event(99, pad=2000).to_json())
    garbage = frame[:1000] + b"\0" * 4096
    append_bytes(open_segment(data), garbage)

    recovered, _, more = await reopen(data)

    assert recovered is not None and recovered["bytes_cut"] == len(garbage)
    assert_present(read_ledger(data), receipts + more)
    assert_verifies(data)


_REOPEN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from sidecar.ledger.writer import Ledger

async def main():
    ledger = await Ledger.open(Path(sys.argv[1]))
    await ledger.close()

asyncio.run(main())
"""


def test_sealed_segment_without_successor_reopens_without_root(tmp_path: Path) -> None:
    """A crash between a seal and the next segment's creation leaves a ledger a non-root writer can reopen."""
    data = tmp_path / "ledger"
    receipts = asyncio.run(fresh_ledger(data))
    asyncio.run(reopen(data, config=LedgerConfig(segment_max_bytes=1), extra=0))  # seals 00000000.seg
    (data / SEGMENT_DIR / "00000001.seg").unlink()  # the crash came before the successor was created
    assert (data / SEGMENT_DIR / "00000000.seg").stat().st_mode & 0o777 == 0o444
    prefix: list[str] = []
    if os.geteuid() == 0:  # root ignores file modes: drop CAP_DAC_OVERRIDE so they apply, as to a service
        if shutil.which("setpriv") is None:
            pytest.fail("running as root without setpriv (util-linux): cannot run the writer with file modes")
        prefix = ["setpriv", "--bounding-set=-dac_override"]
    run = subprocess.run(
        [*prefix, sys.executable, "-c", _REOPEN_SCRIPT, str(data)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"reopen failed:\n{run.stderr.decode()[-1500:]}"
    contents = read_ledger(data)
    assert contents.segments == ["00000000.seg", "00000001.seg"]
    assert_present(contents, receipts)
    assert_verifies(data)
