"""pgqueuer's own dequeue + ack cycle, for the side-by-side queue-cost comparison.

What pgqueuer's ``tools/benchmark.py --strategy drain`` does, written against the installed
package's public API: enqueue N jobs (batched ``Queries.enqueue``), then ``consumers``
``QueueManager``s, each on its own asyncpg connection, drain them with a no-op entrypoint
(``qm.run(batch_size=10, mode=drain)``). pgqueuer acknowledges through a buffered status
log (completed jobs move to ``pgqueuer_log`` in batches), its designed fast path. Runs in a
database of its own (``bench_pgqueuer``) on the same Postgres cluster.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

DB_NAME = "bench_pgqueuer"
ENTRYPOINT = "bench_noop"
BATCH = 10


@dataclass(frozen=True)
class DrainResult:
    consumers: int
    jobs: int
    processed: int
    seconds: float

    @property
    def jobs_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


async def _install(dsn: str) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
    finally:
        await conn.close()


async def _enqueue(dsn: str, jobs: int) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("truncate pgqueuer, pgqueuer_log")
        queries = Queries(AsyncpgDriver(conn))
        left = jobs
        while left > 0:
            n = min(1000, left)
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
            left -= n
        await conn.execute("vacuum analyze pgqueuer")
    finally:
        await conn.close()


async def _drain(dsn: str, consumers: int) -> tuple[int, float]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    processed = 0
    conns = [await asyncpg.connect(dsn) for _ in range(consumers)]
    managers = []
    for conn in conns:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(_job: Job) -> None:
            nonlocal processed
            processed += 1

        managers.append(qm)
    try:
        began = time.perf_counter()
        await asyncio.gather(*(
            qm.run(batch_size=BATCH, mode=QueueExecutionMode.drain,
                   dequeue_timeout=timedelta(seconds=1))
            for qm in managers
        ))
        return processed, time.perf_counter() - began
    finally:
        for conn in conns:
            await conn.close()


def available() -> bool:
    """pgqueuer and asyncpg come with the ``bench`` extra, not with ``test``."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("pgqueuer", "asyncpg"))


def drain(dsn: str, consumers: int, jobs: int) -> DrainResult:
    """Install (once), fill with ``jobs`` and drain with ``consumers`` queue managers."""
    asyncio.run(_install(dsn))
    asyncio.run(_enqueue(dsn, jobs))
    processed, seconds = asyncio.run(_drain(dsn, consumers))
    return DrainResult(consumers, jobs, processed, seconds)
