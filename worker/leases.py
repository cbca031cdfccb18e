"""Lease handling for running jobs, shared by the daemon and the functions' process-jobs.

While a job runs, its lease is extended every WORKER_HEARTBEAT_INTERVAL (``heartbeat_job``).
The row that comes back is also the only way a running job learns what happened to it:

- no row, or ``cancelled``: the user cancelled the generation -> ``ctx.cancel()``; the
  handler stops and cancels its prediction;
- no longer ``processing`` under this worker (requeued after an expired lease, taken by
  another worker) -> ``ctx.lose_lease()``; the job stops without reporting an outcome
  (``complete_job`` is fenced anyway).

A failed heartbeat is logged and retried at the next tick: the lease outlives a few.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from worker.context import JobContext
from worker.errors import WorkerError
from worker.ports import Queue, Row
from worker.statuses import JobStatus

RunBlocking = Callable[[Callable[[], Row | None]], Awaitable[Row | None]]


def apply(ctx: JobContext, row: Row | None) -> None:
    """Act on the row ``heartbeat_job`` returned for ``ctx``'s job."""
    if row is None or row.get("status") == JobStatus.CANCELLED:
        ctx.log("job.cancel_seen", "generation cancelled; stopping the job")
        ctx.cancel()
    elif row.get("status") != JobStatus.PROCESSING or row.get("locked_by") != ctx.worker_id:
        ctx.log(
            "job.lease_lost",
            "lease lost (now %s, locked by %s)",
            row.get("status"),
            row.get("locked_by"),
            level=logging.WARNING,
        )
        ctx.lose_lease()


async def heartbeat(
    contexts: Iterable[JobContext],
    queue: Queue,
    lease_seconds: int,
    run_blocking: RunBlocking,
    still_running: Callable[[JobContext], bool] = lambda ctx: True,
) -> int:
    """Extend the leases of ``contexts`` one by one (``run_blocking`` runs the blocking
    call off the event loop) and act on the answers; returns how many calls succeeded.
    A job that finished while its heartbeat was on its way is left alone."""
    answered = 0
    for ctx in contexts:
        job_id, worker_id = ctx.job.id, ctx.worker_id

        def call(job_id: str = job_id, worker_id: str = worker_id) -> Row | None:
            return queue.heartbeat(job_id, worker_id, lease_seconds)

        try:
            row = await run_blocking(call)
        except WorkerError as exc:
            ctx.log(
                "job.heartbeat_failed", "heartbeat failed: %s", exc.message, level=logging.WARNING
            )
            continue
        answered += 1
        if still_running(ctx):
            apply(ctx, row)
    return answered
