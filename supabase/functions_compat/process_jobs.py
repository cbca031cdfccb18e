"""POST /process-jobs (any valid project JWT, the anon key included): claim up to 3 jobs and
run them in the request, as the pg_cron-driven original did.

    200 {"success": true, "processed": N, "errors": M,
         "message": "Processed N job(s) with M error(s)"}

The body is ignored (pg_cron posts ``{}``, curl posts nothing). Jobs are claimed with
``claim_jobs`` under a worker id ``process-jobs-<uuid>`` and run concurrently in threads by
the worker's own Runner and handlers, with the daemon's semantics: fenced completion,
retries with backoff, the generation mirrored. While they run, their leases are
heartbeated, and a cancelled generation or a lost lease stops its job as in the daemon.
``errors`` counts jobs that did not complete (failed, retried later, lease lost, paused).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from functions_compat.auth import TokenVerifier
from functions_compat.http import HttpError, json_response, read_body
from functions_compat.runtime import WorkerRuntime, WorkerRuntimes
from worker import leases
from worker.context import JobContext
from worker.errors import WorkerError
from worker.jobs import Job
from worker.runner import Outcome
from worker.statuses import OUTCOME_OK

log = logging.getLogger("functions_compat.process_jobs")

BATCH = 3


class ProcessJobs:
    def __init__(self, verifier: TokenVerifier, runtimes: WorkerRuntimes) -> None:
        self.verifier = verifier
        self.runtimes = runtimes

    async def __call__(self, request: Request) -> Response:
        await self.verifier.project(request)
        await read_body(request)  # accepted and ignored, as the original did
        rt = await self.runtimes.get("process-jobs")
        worker_id = f"process-jobs-{uuid.uuid4()}"
        jobs = await self._claim(rt, worker_id)
        outcomes = await self._run(rt, worker_id, jobs)
        processed = len(outcomes)
        errors = sum(1 for o in outcomes if o.status not in OUTCOME_OK)
        return json_response(
            {
                "success": True,
                "processed": processed,
                "errors": errors,
                "message": f"Processed {processed} job(s) with {errors} error(s)",
            }
        )

    async def _claim(self, rt: WorkerRuntime, worker_id: str) -> list[Job]:
        types = rt.services.credit.claimable(rt.settings.job_types)
        if not types:
            return []
        try:
            return await run_in_threadpool(
                rt.services.queue.claim, BATCH, types, worker_id, rt.settings.lease_seconds
            )
        except WorkerError as exc:
            log.warning("process-jobs could not claim: %s", exc.message)
            await self._release_lost(rt, worker_id)
            raise HttpError(500, "Could not claim jobs from the queue") from None

    @staticmethod
    async def _release_lost(rt: WorkerRuntime, worker_id: str) -> None:
        """The claim may have committed with its answer lost: hand its jobs back at once
        (attempt given back) rather than leave them to their lease."""
        try:
            released = await run_in_threadpool(rt.services.queue.release_lost, worker_id, [])
        except WorkerError as exc:
            log.warning("process-jobs could not release lost claims: %s", exc.message)
            return
        if released:
            log.warning("process-jobs released %d job(s) of a lost claim", len(released))

    async def _run(self, rt: WorkerRuntime, worker_id: str, jobs: list[Job]) -> list[Outcome]:
        if not jobs:
            return []
        runner = rt.runner(worker_id)
        contexts = [
            JobContext(job, rt.services, worker_id, rt.settings.job_timeout) for job in jobs
        ]
        tasks = [
            asyncio.ensure_future(self.runtimes.run(functools.partial(runner.run, ctx)))
            for ctx in contexts
        ]
        pending = set(tasks)
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=rt.settings.heartbeat_interval)
            running = [ctx for ctx, task in zip(contexts, tasks, strict=True) if not task.done()]
            if running:
                await leases.heartbeat(
                    running, rt.services.queue, rt.settings.lease_seconds, run_in_threadpool
                )
        return [task.result() for task in tasks]
