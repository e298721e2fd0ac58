"""A ledger writer that the crash tests kill with SIGKILL at random moments.

    python -m tests.ledger.crash_child DATA_DIR SEED

Opens (and so recovers) the ledger in DATA_DIR with small segments and a short key
epoch, so seals, segment rolls and key rotations happen while it runs, prints
`READY` once the ledger is open, then appends events from several concurrent
tasks in random batch sizes drawn from SEED. After each append is acknowledged
it prints `ACK <seq> <record hash hex>` and flushes stdout. It runs until killed.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.ledger.writer import Ledger, LedgerConfig

CONFIG = LedgerConfig(segment_max_bytes=64 * 1024, epoch_s=0.2, heartbeat_s=0.5)
TASKS = 4
_TYPES = (
    EventType.LOGIN_SUCCEEDED,
    EventType.LOGIN_FAILED,
    EventType.TOKEN_ISSUED,
    EventType.ROLE_GRANTED,
    EventType.USER_UPDATED,
    EventType.LOGOUT_COMPLETED,
)


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _event(rng: random.Random, worker: int, n: int) -> IdentityEvent:
    return IdentityEvent(
        rng.choice(_TYPES),
        rng.choice((Outcome.SUCCEEDED, Outcome.FAILED)),
        realm="crash",
        actor=Party(id=f"user-{rng.randrange(1000)}", username=f"u{worker}"),
        request_id=f"w{worker}-{n}",
        details={"pad": "x" * rng.randrange(0, 300)},
    )


async def _append_and_report(ledger: Ledger, event: IdentityEvent) -> None:
    receipt = await ledger.append(event)
    _emit(f"ACK {receipt.seq} {receipt.hash.hex()}")


async def _worker(ledger: Ledger, rng: random.Random, worker: int) -> None:
    n = 0
    while True:
        batch = rng.randint(1, 32)
        await asyncio.gather(*(_append_and_report(ledger, _event(rng, worker, n + i)) for i in range(batch)))
        n += batch
        await asyncio.sleep(rng.uniform(0.01, 0.06))  # keeps the volume a test can re-verify


async def main(data_dir: Path, seed: int) -> None:
    ledger = await Ledger.open(data_dir, config=CONFIG)
    _emit(f"READY {ledger.size} {ledger.segment}")
    await asyncio.gather(*(_worker(ledger, random.Random(f"{seed}/{w}"), w) for w in range(TASKS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
