"""Run one job in a pool thread: handler -> outcome -> fenced complete_job -> generation status.

Steps (procrastinate's process -> persist -> log):
1. run the handler under the job's deadline and stop flags (``JobContext``);
2. persist the outcome with ``complete_job(..., p_worker_id)`` (fenced: a job that is no
   longer ours is left alone) and mirror a failure onto the generation: ``queued`` with the
   error kept when another attempt follows, ``failed`` only on the last one. A success is
   reported with ``complete_and_claim``, which also claims the thread's next job when the
   daemon allows (``ctx.chain()``), unless the handler's last write already completed the
   job (``ctx.completion``: finish_prediction, store_image);
3. log one line and record metrics. The outcome carries what the completion claimed
   (``Outcome.next``): the daemon runs it on the freed thread.
The persist step runs in the job's own thread and is never skipped by shutdown: the daemon
waits for it during the grace period.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.context import JobContext
from worker.errors import (
    InsufficientCredit,
    InvalidInput,
    JobCancelled,
    JobError,
    LeaseLost,
    SchemaNotReady,
    WorkerError,
)
from worker.handlers import HANDLERS
from worker.jobs import DOWNLOAD_IMAGE, GENERATE_IMAGE
from worker.metrics import Metrics
from worker.ports import Claimed
from worker.retry import decide
from worker.services import Services
from worker.statuses import GENERATION_TERMINAL, GenerationStatus, JobOutcome, JobStatus

log = logging.getLogger("worker.runner")

GENERATION_JOBS = (GENERATE_IMAGE, DOWNLOAD_IMAGE)
SCHEMA_PAUSE = 3.0  # seconds without claims after a schema-cache miss
QUIET = frozenset(  # logged at INFO; the others at WARNING
    {JobOutcome.COMPLETED, JobOutcome.RELEASED, JobOutcome.PAUSED, JobOutcome.CANCELLED}
)


@dataclass(frozen=True)
class Outcome:
    status: JobOutcome
    message: str = ""
    duration: float = 0.0
    next: Claimed | None = None  # what the completing call claimed for this thread


class Runner:
    def __init__(
        self,
        services: Services,
        worker_id: str,
        metrics: Metrics,
        handlers: Mapping[str, Callable[[JobContext], Mapping[str, Any]]] = HANDLERS,
    ) -> None:
        self.services = services
        self.worker_id = worker_id
        self.metrics = metrics
        self.handlers = handlers

    def run(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        ctx.log("job.started", "started %s", job.job_type)
        try:
            outcome = self._run(ctx)
        except Exception:  # never let a job kill its pool thread silently
            log.exception(
                "unexpected error while finishing job %s",
                job.id,
                extra={"action": "job.crashed", "worker_id": self.worker_id, **job.log_fields()},
            )
            outcome = Outcome(JobOutcome.FAILED, "internal error while finishing the job")
        duration = time.monotonic() - ctx.started
        self.metrics.inc("picture_worker_jobs_total", job_type=job.job_type, outcome=outcome.status)
        self.metrics.observe(
            "picture_worker_job_duration_seconds",
            duration,
            job_type=job.job_type,
            outcome=outcome.status,
        )
        level = logging.INFO if outcome.status in QUIET else logging.WARNING
        ctx.log(
            f"job.{outcome.status}",
            "%s %s after %.3fs%s",
            job.job_type,
            outcome.status,
            duration,
            f": {outcome.message}" if outcome.message else "",
            level=level,
            duration=round(duration, 3),
        )
        return dataclasses.replace(outcome, duration=duration)

    def _run(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        handler = self.handlers.get(job.job_type)
        try:
            if handler is None:
                raise InvalidInput(f"no handler for job type {job.job_type!r}")
            result = handler(ctx)
        except JobCancelled as exc:
            if ctx.cancel_requested:
                # cancel_generation already wrote the rows
                return Outcome(JobOutcome.CANCELLED, exc.message)
            # the daemon releases the job
            return Outcome(JobOutcome.RELEASED, "stopped for shutdown")
        except LeaseLost as exc:
            return Outcome(JobOutcome.LEASE_LOST, exc.message)
        except SchemaNotReady as exc:
            # Right after a migration: nothing is wrong with the job. Give the attempt back
            # and pause claims until PostgREST's schema cache has reloaded (a few minutes
            # of this and it becomes a configuration error: worker.adapters._errors).
            ctx.log("job.schema_wait", "%s", exc.message, level=logging.WARNING)
            self.services.credit.pause_all(SCHEMA_PAUSE)
            self.services.queue.release(job.id, self.worker_id)
            return Outcome(JobOutcome.RELEASED, f"{exc.message}; released, claims paused")
        except InsufficientCredit as exc:
            # Out of credit is not the job's fault: give the attempt back and pause claims.
            pause = self.services.settings.credit_pause_seconds
            self.services.credit.pause(pause)
            self.services.queue.release(job.id, self.worker_id)
            return Outcome(
                JobOutcome.PAUSED,
                f"{exc.message}; generate-image claims paused for {pause:.0f}s",
            )
        except Exception as exc:
            return self._persist_failure(ctx, exc)
        try:
            completion = ctx.completion or self._complete(ctx, result)
        except LeaseLost as exc:
            return Outcome(JobOutcome.LEASE_LOST, exc.message)
        return Outcome(JobOutcome.COMPLETED, next=completion)

    def _complete(self, ctx: JobContext, result: Mapping[str, Any]) -> Claimed | None:
        chain = ctx.chain()
        queue = self.services.queue
        if chain is None:
            queue.complete(ctx.job.id, self.worker_id, dict(result))
            return None
        return queue.complete_and_claim(ctx.job.id, self.worker_id, ctx.stamped(result), chain)

    def _persist_failure(self, ctx: JobContext, exc: Exception) -> Outcome:
        job = ctx.job
        decision = decide(exc, job.attempt_number, job.max_attempts)
        details: dict[str, Any] = {
            "error_type": type(exc).__name__,
            "attempt": job.attempt_number,
            "worker_id": self.worker_id,
            "at": datetime.now(UTC).isoformat(),
        }
        if isinstance(exc, JobError):
            details.update(exc.details)
        if not isinstance(exc, WorkerError):
            log.exception(
                "job %s raised an unexpected error",
                job.id,
                extra={"action": "job.error", "worker_id": self.worker_id, **job.log_fields()},
            )
        try:
            row = self.services.queue.fail(
                job.id, self.worker_id, decision.message, details, decision.retryable
            )
        except LeaseLost as lost:
            return Outcome(JobOutcome.LEASE_LOST, lost.message)
        except WorkerError as unsaved:
            # The outcome could not be written: the lease brings the job back (or fails it
            # on its last attempt). A final failure still shows on the generation now.
            if decision.final:
                self._mirror_on_generation(ctx, decision.message, True)
            return Outcome(JobOutcome.FAILED, f"{decision.message}; not saved: {unsaved.message}")
        final = row.get("status") != JobStatus.PENDING
        self._mirror_on_generation(ctx, decision.message, final)
        return Outcome(JobOutcome.FAILED if final else JobOutcome.RETRY, decision.message)

    def _mirror_on_generation(self, ctx: JobContext, message: str, final: bool) -> None:
        gid = ctx.job.generation_id
        if ctx.job.job_type not in GENERATION_JOBS or not gid:
            return
        status = GenerationStatus.FAILED if final else GenerationStatus.QUEUED
        fields: dict[str, object] = {"status": status, "error_message": message}
        if final:
            fields["completed_at"] = datetime.now(UTC).isoformat()
        try:
            self.services.generations.update(gid, fields, unless_status=GENERATION_TERMINAL)
        except WorkerError as exc:
            ctx.log(
                "generation.update_failed",
                "could not mark generation %s: %s",
                status,
                exc.message,
                level=logging.WARNING,
            )
