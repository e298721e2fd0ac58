"""The sidecar's ledger and replicator as a process, for the fault-injection test to SIGKILL.

    python -m tests.replicate.fault_child DATA STORE_URL RATE FIRST [--drain]

Appends events at RATE a second (numbered from FIRST) and prints ``A <seq>`` for each one the
ledger acknowledged (durable: fsynced and covered by a signed checkpoint) as soon as it is;
``I <message>`` the moment the replicator reports an integrity error (the test counts these as
alarms, and none may be false). With --drain it appends nothing, waits until the replicator's
backlog is empty, prints ``D <status json>`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.replicate.drivers import open_store
from sidecar.replicate.replicator import Replicator


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def settled(rep: Replicator) -> None:
    """Until the replicator has shipped everything (or hit an integrity error)."""
    while True:
        if rep.backlog_bytes() == 0 or rep.integrity_error is not None:
            return
        await asyncio.sleep(0.05)


async def main(data: Path, url: str, rate: float, first: int, drain: bool) -> int:
    # Short timeouts: a paused store makes puts time out (and maybe land later), as on a bad network.
    store = (
        open_store(url, retention_days=1, connect_timeout=1.0, read_timeout=1.5, max_retries=1)
        if url.startswith("s3://")
        else open_store(url)
    )
    ledger = await Ledger.open(data, config=LedgerConfig(segment_max_bytes=48 * 1024))
    rep = Replicator(data, store, interval_s=0.05)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    reported = False

    async def watch() -> None:
        nonlocal reported
        while True:
            if rep.integrity_error and not reported:
                reported = True
                emit(f"I {rep.integrity_error}")
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        if drain:
            await settled(rep)
            await ledger.close()  # its final checkpoint ships too
            await settled(rep)
            await asyncio.sleep(0.1)  # let the watcher report an integrity error first
            emit("D " + orjson.dumps(rep.status()).decode())
            return 0

        async def one(i: int) -> None:
            event = IdentityEvent(
                EventType.ADMIN_CHANGE, Outcome.SUCCEEDED, realm="faults", details={"i": i, "pad": "f" * 120}
            )
            receipt = await ledger.append(event)
            emit(f"A {receipt.seq}")

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while True:  # until SIGKILL
            delay = t0 + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(first + n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
    finally:
        watcher.cancel()
        await rep.stop(drain_timeout_s=0)
        await store.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(asyncio.run(main(Path(args[0]), args[1], float(args[2]), int(args[3]), "--drain" in args)))
