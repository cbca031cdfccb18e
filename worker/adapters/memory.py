"""In-memory ports beside the real adapters, for fast tests of the daemon, the runner and
the handlers (procrastinate's ``InMemoryConnector``, pgqueuer's in-memory adapter): the
queue here, the generations, images and image store in ``memory_generations``.

They follow the SQL of supabase/migrations, not a simplification of it: claim order
(priority desc, scheduled_at, created_at) over due pending jobs, leases, fencing
(``complete_job`` with a worker id raises PW001 -> ``LeaseLost``), retry backoff, release,
``requeue_stale_jobs`` (suspects marked with ``lease_expired_at``, the final attempt
failed, the generation put back to queued or failed), dedupe keys over live jobs,
``cancel_generation``. The contract suite (tests/contract) runs the same tests against
these and against the real adapters on the local stack, so the two cannot drift apart.

Rows come back as PostgREST returns them (timestamps as ISO strings). Time is
``clock()``, an aware UTC datetime (``utc_now`` unless a test passes its own).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.adapters.memory_generations import (
    Clock,
    MemoryGenerations,
    MemoryImageStore,
    export,
    iso,
    utc_now,
)
from worker.adapters.memory_work import JobRow, WorkCalls
from worker.errors import LeaseLost, PermanentError
from worker.jobs import GENERATE_IMAGE, PROCESS_WEBHOOK, Job
from worker.ports import Row, WorkerInfo
from worker.settings import JOB_TYPES
from worker.statuses import (
    GENERATION_TERMINAL,
    GenerationStatus,
    JobStatus,
)

NO_LEASE_STALE_AFTER = timedelta(minutes=15)


def retry_delay(attempt: int) -> timedelta:
    """``job_retry_delay``: 2^attempt seconds (from 2 s), capped at 300 s, +-20 % jitter."""
    seconds = min(300.0, 2.0 ** min(max(attempt, 1), 16)) * (0.8 + 0.4 * random.random())
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Claim:
    """One ``claim_jobs`` call, as tests of the loop look at it."""

    worker_id: str
    limit: int
    exclude_suspects: bool
    held_before: list[str]  # jobs this worker was running when it asked
    claimed: list[str]


class MemoryQueue(WorkCalls):
    """``job_queue`` and its RPCs (``claim_jobs``, ``complete_job``, ``heartbeat_job``, ...;
    the combined calls in ``worker.adapters.memory_work``)."""

    def __init__(
        self,
        generations: MemoryGenerations | None = None,
        clock: Clock = utc_now,
        catalogue: Mapping[str, str | None] | None = None,
    ) -> None:
        self.generations = generations or MemoryGenerations(clock, catalogue)
        self.clock = clock
        # The active models (replicate_id -> version) enqueue_job checks generate-image
        # payloads against, as the SQL does (catalogue_model); None: no catalogue, no check.
        self.catalogue = dict(catalogue) if catalogue is not None else None
        self.lock = self.generations.lock  # one lock: some RPCs touch both tables
        self.jobs: dict[str, JobRow] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.seen: dict[str, datetime] = {}  # job_workers.last_seen_at
        self.calls: list[str] = []  # RPC names in call order
        self.claims: list[Claim] = []

    # -- test helpers (not port methods) ------
    def row(self, job_id: str) -> dict[str, object]:
        with self.lock:
            return self.jobs[job_id].row()

    def rows(self) -> list[dict[str, object]]:
        with self.lock:
            return [job.row() for job in self.jobs.values()]

    def expire_lease(self, job_id: str) -> None:
        """Move a running job's lease into the past (its worker died)."""
        with self.lock:
            self.jobs[job_id].locked_until = self.clock() - timedelta(seconds=1)

    def cancel_generation(self, generation_id: str) -> Row | None:
        """``cancel_generation`` as service role: the generation and its live jobs cancelled;
        a prediction no job holds (webhook mode) gets a process-webhook cancel job."""
        with self.lock:
            gen = self.generations.rows.get(generation_id)
            if gen is None:
                raise PermanentError(f"generation {generation_id} not found (code P0002)")
            if gen["status"] in GENERATION_TERMINAL:
                return export(gen)
            mine = [
                j for j in self.jobs.values() if j.payload.get("generation_id") == generation_id
            ]
            running = gen["status"] != GenerationStatus.PROCESSING or any(
                j.status == JobStatus.PROCESSING for j in mine
            )
            now = self.clock()
            gen.update(status=GenerationStatus.CANCELLED, completed_at=now, updated_at=now)
            gen["error_message"] = gen.get("error_message") or "Cancelled by the user."
            for job in mine:
                if job.live:
                    self._touch(
                        job, status=JobStatus.CANCELLED, completed_at=now, locked_until=None
                    )
            prediction = gen.get("replicate_prediction_id")
            if prediction and not running:
                payload = {"prediction_id": prediction, "cancel": True, "user_id": gen["user_id"]}
                self._enqueue(PROCESS_WEBHOOK, payload, 1, 3, f"cancel:{prediction}")
            return export(gen)

    # -- the port ------
    def claim(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
    ) -> list[Job]:
        with self.lock:
            self.calls.append("claim_jobs")
            now = self.clock()
            due = [
                j
                for j in self.jobs.values()
                if j.status == JobStatus.PENDING
                and j.scheduled_at <= now
                and j.job_type in job_types
                and not (exclude_suspects and j.suspect)
            ]
            due.sort(key=lambda j: (-j.priority, j.scheduled_at, j.created_at))
            lease = timedelta(seconds=max(lease_seconds, 1))
            held = [j.id for j in self.jobs.values() if j.holds(worker_id)]
            claimed = []
            for job in due[: max(limit, 0)]:
                self._touch(
                    job,
                    status=JobStatus.PROCESSING,
                    attempt_number=job.attempt_number + 1,
                    started_at=now,
                    locked_by=worker_id,
                    locked_until=now + lease,
                )
                claimed.append(Job.from_row(job.row()))
            ids = [j.id for j in claimed]
            self.claims.append(Claim(worker_id, limit, exclude_suspects, held, ids))
            return claimed

    def complete(self, job_id: str, worker_id: str, result: Mapping[str, object] | None) -> Row:
        with self.lock:
            job = self._fenced("complete_job", job_id, worker_id)
            self._touch(
                job,
                status=JobStatus.COMPLETED,
                result=dict(result or {}),
                completed_at=self.clock(),
                locked_by=None,
                locked_until=None,
            )
            return job.row()

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: str,
        details: Mapping[str, object] | None,
        retryable: bool,
    ) -> Row:
        with self.lock:
            job = self._fenced("complete_job", job_id, worker_id)
            now = self.clock()
            self._touch(
                job,
                error_message=error,
                error_details=dict(details or {}),
                locked_by=None,
                locked_until=None,
            )
            if retryable and job.attempt_number < job.max_attempts:
                job.status = JobStatus.PENDING
                job.scheduled_at = now + retry_delay(job.attempt_number)
            else:
                job.status = JobStatus.FAILED
                job.completed_at = now
            return job.row()

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: int) -> Row | None:
        with self.lock:
            self.calls.append("heartbeat_job")
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.holds(worker_id):
                job.locked_until = self.clock() + timedelta(seconds=max(lease_seconds, 1))
            return job.row()

    def release(self, job_id: str, worker_id: str) -> bool:
        with self.lock:
            self.calls.append("release_job")
            job = self.jobs.get(job_id)
            if job is None or not job.holds(worker_id):
                return False
            self._touch(
                job,
                status=JobStatus.PENDING,
                attempt_number=max(job.attempt_number - 1, 0),
                scheduled_at=self.clock(),
                started_at=None,
                locked_by=None,
                locked_until=None,
            )
            return True

    def release_lost(self, worker_id: str, known: Sequence[str]) -> list[str]:
        with self.lock:
            self.calls.append("release_lost_claims")
            lost = [
                job.id
                for job in self.jobs.values()
                if job.holds(worker_id) and job.id not in set(known)
            ]
            for job_id in lost:
                self.release(job_id, worker_id)
            return lost

    def read(self, job_id: str) -> Row | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return None if job is None else job.row()

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, object],
        *,
        priority: int = 0,
        max_attempts: int = 3,
        dedupe_key: str | None = None,
    ) -> str:
        with self.lock:
            self.calls.append("enqueue_job")
            return self._enqueue(job_type, payload, priority, max_attempts, dedupe_key)

    def requeue_stale(self) -> int:
        with self.lock:
            self.calls.append("requeue_stale_jobs")
            now = self.clock()
            stale = [
                j
                for j in self.jobs.values()
                if j.status == JobStatus.PROCESSING
                and (
                    (j.locked_until is not None and j.locked_until < now)
                    or (j.locked_until is None and j.updated_at < now - NO_LEASE_STALE_AFTER)
                )
            ]
            for job in stale:
                self._requeue(job, now)
            return len(stale)

    def enqueue_webhook_checks(self, older_than_seconds: int, limit: int) -> int:
        with self.lock:
            self.calls.append("enqueue_webhook_checks")
            cutoff = self.clock() - timedelta(seconds=max(older_than_seconds, 0))
            live = [j for j in self.jobs.values() if j.live]
            due = sorted(
                (
                    g
                    for g in self.generations.rows.values()
                    if g["status"] in (GenerationStatus.QUEUED, GenerationStatus.PROCESSING)
                    and g.get("replicate_prediction_id")
                    and _before(g["updated_at"], cutoff)
                    and not any(
                        j.payload.get("generation_id") == g["id"]
                        or j.dedupe_key == f"webhook:{g['replicate_prediction_id']}"
                        for j in live
                    )
                ),
                key=lambda g: str(iso(g["updated_at"])),
            )[: max(limit, 0)]
            for gen in due:
                pid = gen["replicate_prediction_id"]
                payload = {
                    "prediction_id": pid,
                    "generation_id": gen["id"],
                    "user_id": gen.get("user_id"),
                    "fetch": True,
                }
                self._enqueue(PROCESS_WEBHOOK, payload, 0, 3, f"webhook:{pid}")
            return len(due)

    def next_scheduled_at(self, job_types: Sequence[str]) -> datetime | None:
        with self.lock:
            now = self.clock()
            future = [
                j.scheduled_at
                for j in self.jobs.values()
                if j.status == JobStatus.PENDING
                and j.scheduled_at > now
                and j.job_type in job_types
            ]
            return min(future, default=None)

    def register_worker(self, info: WorkerInfo) -> None:
        with self.lock:
            self.workers[info.worker_id] = info
            self.seen[info.worker_id] = self.clock()

    # -- internals ------
    def _touch(self, job: JobRow, **fields: object) -> None:
        for name, value in fields.items():
            setattr(job, name, value)
        job.updated_at = self.clock()

    def _fenced(self, what: str, job_id: str, worker_id: str) -> JobRow:
        self.calls.append(what)
        job = self.jobs.get(job_id)
        if job is None:
            raise PermanentError(f"{what} failed: job {job_id} not found (code P0002)")
        if not job.holds(worker_id):
            raise LeaseLost(
                f"{what}: lease lost: job {job_id} is {job.status} "
                f"(locked by {job.locked_by or 'nobody'}), not processing under worker {worker_id}"
            )
        return job

    def _catalogue_checked(self, payload: Mapping[str, object]) -> dict[str, object]:
        """catalogue_model() of 20261201000200: an active model, the catalogue's version."""
        assert self.catalogue is not None
        model_id = str(payload.get("model_id") or "").strip()
        version = str(payload.get("model_version") or "").strip() or None
        if not model_id:
            raise PermanentError(
                "enqueue_job failed: model_id is required: a replicate_id of the model "
                "catalogue (code 22023)"
            )
        if model_id not in self.catalogue:
            raise PermanentError(
                f"enqueue_job failed: Unknown model: {model_id} (model_id must be an active "
                "model of the catalogue) (code 22023)"
            )
        known = self.catalogue[model_id]
        if version is not None and version != known:
            raise PermanentError(
                f"enqueue_job failed: model_version {version} is not the catalogue's version "
                f"for model_id {model_id} (code 22023)"
            )
        out = dict(payload)
        if version is None:
            out["model_version"] = known
        return out

    def _enqueue(
        self,
        job_type: str,
        payload: Mapping[str, object],
        priority: int,
        max_attempts: int,
        dedupe_key: str | None,
    ) -> str:
        if job_type not in JOB_TYPES:
            raise PermanentError(f"enqueue_job failed: unknown job type {job_type!r} (code 23514)")
        if job_type == GENERATE_IMAGE and self.catalogue is not None:
            payload = self._catalogue_checked(payload)
        if dedupe_key is not None:
            for job in self.jobs.values():
                if job.dedupe_key == dedupe_key and job.live:
                    return job.id
        now = self.clock()
        user = payload.get("user_id")
        job = JobRow(
            id=str(uuid.uuid4()),
            job_type=job_type,
            payload=dict(payload),
            created_at=now,
            scheduled_at=now,
            updated_at=now,
            priority=priority,
            max_attempts=max(max_attempts, 1),
            created_by=str(user) if user else None,
            dedupe_key=dedupe_key,
        )
        self.jobs[job.id] = job
        return job.id

    def _requeue(self, job: JobRow, now: datetime) -> None:
        gid = job.payload.get("generation_id")
        gens = self.generations
        if job.attempt_number >= job.max_attempts:
            reason = "lease expired on the final attempt (the worker died or hung)"
            message = f"{job.error_message} / {reason}" if job.error_message else reason
            self._touch(
                job,
                status=JobStatus.FAILED,
                completed_at=now,
                locked_by=None,
                locked_until=None,
                error_message=message,
            )
            abandoned = {
                "status": GenerationStatus.FAILED,
                "error_message": "The generation was abandoned: its worker stopped responding "
                "on the final attempt.",
            }
            gens.set_if(gid, abandoned, lambda s: s not in GENERATION_TERMINAL)
        else:
            details = {**(job.error_details or {}), "lease_expired_at": now.isoformat()}
            self._touch(
                job,
                status=JobStatus.PENDING,
                scheduled_at=now,
                locked_by=None,
                locked_until=None,
                error_message="the worker running this job stopped responding (lease expired)",
                error_details=details,
            )
            back = (GenerationStatus.PROCESSING, GenerationStatus.DOWNLOADING)
            gens.set_if(gid, {"status": GenerationStatus.QUEUED}, lambda s: s in back)


def _before(value: object, cutoff: datetime) -> bool:
    return isinstance(value, datetime) and value < cutoff


@dataclass
class MemoryDatabase:
    """The three stores wired together on one clock."""

    clock: Clock = utc_now
    catalogue: Mapping[str, str | None] | None = None
    generations: MemoryGenerations = field(init=False)
    queue: MemoryQueue = field(init=False)
    store: MemoryImageStore = field(default_factory=MemoryImageStore)

    def __post_init__(self) -> None:
        self.generations = MemoryGenerations(self.clock, self.catalogue)
        self.queue = MemoryQueue(self.generations, self.clock, self.catalogue)
