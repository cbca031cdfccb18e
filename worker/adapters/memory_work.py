"""The combined queue calls of ``worker.adapters.memory.MemoryQueue`` (claim_work,
complete_and_claim, finish_prediction, store_image, heartbeat_worker, prediction_stats), as
the SQL of 20261205000100_fewer_round_trips.sql does them: under one lock (one transaction),
fenced (``LeaseLost``), and a repeated call whose job is already completed with a result
containing the one it sends answers again instead of raising."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from worker.adapters.memory_generations import export, iso, utc_now
from worker.errors import GenerationClosed, LeaseLost, PermanentError
from worker.jobs import DOWNLOAD_IMAGE, GENERATE_IMAGE, Job
from worker.ports import (
    Chain,
    Claimed,
    Durations,
    Finished,
    Peer,
    PredictionDone,
    Stored,
    WorkerInfo,
)
from worker.statuses import GENERATION_TERMINAL, JOB_LIVE, GenerationStatus, JobStatus

if TYPE_CHECKING:
    import threading

    from worker.adapters.memory_generations import Clock, MemoryGenerations

@dataclass
class JobRow:
    """One ``job_queue`` row."""

    id: str
    job_type: str
    payload: dict[str, object]
    created_at: datetime
    scheduled_at: datetime
    priority: int = 0
    max_attempts: int = 3
    status: str = JobStatus.PENDING
    attempt_number: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: dict[str, object] | None = None
    error_message: str | None = None
    error_details: dict[str, object] | None = None
    created_by: str | None = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    dedupe_key: str | None = None
    updated_at: datetime = field(default_factory=utc_now)

    def row(self) -> dict[str, object]:
        row = {k: iso(v) for k, v in vars(self).items()}
        row["attempts"] = self.attempt_number  # variant M's name, kept beside attempt_number
        return row

    @property
    def live(self) -> bool:
        return self.status in JOB_LIVE

    @property
    def suspect(self) -> bool:
        return self.error_details is not None and "lease_expired_at" in self.error_details

    def holds(self, worker_id: str) -> bool:
        return self.status == JobStatus.PROCESSING and self.locked_by == worker_id



GIVEN_UP = (GenerationStatus.CANCELLED, GenerationStatus.FAILED)


class WorkCalls:
    """Mixed into ``MemoryQueue``, whose state and primitives these are."""

    lock: threading.RLock
    clock: Clock
    jobs: dict[str, JobRow]
    generations: MemoryGenerations
    calls: list[str]
    workers: dict[str, WorkerInfo]
    seen: dict[str, datetime]

    def claim(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
    ) -> list[Job]:
        raise NotImplementedError

    def _touch(self, job: JobRow, **fields: object) -> None:
        raise NotImplementedError

    def _enqueue(
        self,
        job_type: str,
        payload: Mapping[str, object],
        priority: int,
        max_attempts: int,
        dedupe_key: str | None,
    ) -> str:
        raise NotImplementedError

    # -- claim_work ------
    def claim_work(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
        suspect_alone: bool = False,
    ) -> Claimed:
        with self.lock:
            jobs: list[Job] = []
            rest, exclude = limit, exclude_suspects
            if suspect_alone and not exclude and rest > 1:
                jobs = self.claim(1, job_types, worker_id, lease_seconds)
                self.calls.pop()
                rest = 0 if not jobs or jobs[0].suspect else rest - 1
                exclude = True
            if rest > 0:
                jobs += self.claim(
                    rest, job_types, worker_id, lease_seconds, exclude_suspects=exclude
                )
                self.calls.pop()  # recorded as claim_work
            self.calls.append("claim_work")
            items = tuple(self._work_item(job.id, start=True) for job in jobs)
            nxt = self._next_at(job_types) if len(items) < limit or limit <= 0 else None
            return Claimed(items, nxt, limit)

    def _work_item(self, job_id: str, *, start: bool) -> Job:
        job = self.jobs[job_id]
        row: dict[str, Any] = job.row()
        gid = job.payload.get("generation_id")
        if job.job_type in (GENERATE_IMAGE, DOWNLOAD_IMAGE) and gid:
            gen = self.generations.rows.get(str(gid))
            if (
                gen is not None
                and start
                and job.job_type == GENERATE_IMAGE
                and gen["status"] not in GENERATION_TERMINAL
            ):
                gen.update(status=GenerationStatus.PROCESSING, job_id=job.id)
                gen["updated_at"] = self.clock()
            row["generation"] = None if gen is None else export(gen)
        return Job.from_row(row)

    def _next_at(self, job_types: Sequence[str] | None) -> datetime | None:
        now = self.clock()
        future = [
            j.scheduled_at
            for j in self.jobs.values()
            if j.status == JobStatus.PENDING
            and j.scheduled_at > now
            and (job_types is None or j.job_type in job_types)
        ]
        return min(future, default=None)

    def _chain_claim(self, worker_id: str, chain: Chain | None) -> Claimed:
        if chain is None:
            return Claimed(next_at=self._next_at(None))
        claimed = self.claim(
            chain.limit, chain.job_types, worker_id, chain.lease_seconds, exclude_suspects=True
        )
        self.calls.pop()  # part of the combined call, not a call of its own
        items = tuple(self._work_item(job.id, start=True) for job in claimed)
        nxt = self._next_at(chain.job_types) if len(items) < chain.limit else None
        return Claimed(items, nxt, chain.limit)

    def _own(
        self, what: str, job_id: str, worker_id: str, result: Mapping[str, object]
    ) -> tuple[JobRow, bool]:
        """own_job(): (the job, replayed)."""
        self.calls.append(what)
        job = self.jobs.get(job_id)
        if job is None:
            raise PermanentError(f"{what} failed: job {job_id} not found (code P0002)")
        if job.holds(worker_id):
            return job, False
        stored = job.result or {}
        if (
            job.status == JobStatus.COMPLETED
            and result
            and all(stored.get(k) == v for k, v in result.items())
        ):
            return job, True
        raise LeaseLost(
            f"{what}: lease lost: job {job_id} is {job.status} "
            f"(locked by {job.locked_by or 'nobody'}), not processing under worker {worker_id}"
        )

    def _complete(self, job: JobRow, result: Mapping[str, object]) -> None:
        self._touch(
            job,
            status=JobStatus.COMPLETED,
            result=dict(result),
            completed_at=self.clock(),
            locked_by=None,
            locked_until=None,
        )

    # -- complete_and_claim ------
    def complete_and_claim(
        self,
        job_id: str,
        worker_id: str,
        result: Mapping[str, object],
        chain: Chain | None,
    ) -> Claimed:
        with self.lock:
            job, replayed = self._own("complete_and_claim", job_id, worker_id, result)
            if not replayed:
                self._complete(job, result)
            return self._chain_claim(worker_id, chain)

    # -- finish_prediction ------
    def finish_prediction(
        self,
        job_id: str,
        worker_id: str,
        done: PredictionDone,
        chain: Chain | None,
    ) -> Finished:
        with self.lock:
            job, replayed = self._own("finish_prediction", job_id, worker_id, done.result)
            gen = self.generations.rows.get(done.generation_id)
            if replayed:
                download = self.jobs.get(str((job.result or {}).get("download_job_id")))
                again = download is not None and download.holds(worker_id)
                return Finished(
                    jobs=(self._work_item(download.id, start=False),) if again and download else (),
                    download_job_id=download.id if download else None,
                    generation_status=None if gen is None else str(gen["status"]),
                )
            if gen is None or gen["status"] in GENERATION_TERMINAL:
                status = "deleted" if gen is None else str(gen["status"])
                self._complete(job, {**done.result, "skipped": f"generation {status}"})
                return Finished(generation_status=status)
            now = self.clock()
            gen.update(
                status=GenerationStatus.DOWNLOADING,
                replicate_prediction_id=done.prediction_id,
                updated_at=now,
            )
            if done.generation_time is not None:
                gen["generation_time_seconds"] = done.generation_time
            key = f"download:{done.generation_id}"
            live = next((j for j in self.jobs.values() if j.dedupe_key == key and j.live), None)
            chained = False
            if live is None:
                live = self.jobs[self._enqueue(DOWNLOAD_IMAGE, done.download, 1, 3, key)]
                if chain is not None and DOWNLOAD_IMAGE in chain.job_types:
                    self._touch(
                        live,
                        status=JobStatus.PROCESSING,
                        attempt_number=1,
                        started_at=now,
                        locked_by=worker_id,
                        locked_until=now + timedelta(seconds=max(chain.lease_seconds, 1)),
                    )
                    chained = True
            self._complete(job, {**done.result, "download_job_id": live.id})
            return Finished(
                jobs=(self._work_item(live.id, start=False),) if chained else (),
                download_job_id=live.id,
                generation_status=GenerationStatus.DOWNLOADING,
            )

    # -- store_image ------
    def store_image(
        self,
        job_id: str,
        worker_id: str,
        image: Mapping[str, object],
        result: Mapping[str, object],
        chain: Chain | None,
    ) -> Stored:
        gid = str(image.get("generation_id") or "")
        if not gid:
            raise PermanentError("store_image: p_image.generation_id is required (code 22023)")
        with self.lock:
            gens = self.generations
            existing = gens.images.get(gid)
            gen = gens.rows.get(gid)
            if existing is None and (gen is None or gen["status"] in GIVEN_UP):
                self.calls.append("store_image")
                state = "no longer exists" if gen is None else f"is {gen['status']}"
                raise GenerationClosed(
                    f"store_image: generation {gid} {state}: its image is not stored"
                )
            job, replayed = self._own("store_image", job_id, worker_id, result)
            if replayed:
                return Stored(image=export(existing or {}), reused=True)
            if existing is None:
                stored = dict(gens.insert_image(image))
                reused = False
            else:
                stored, reused = export(existing), True
            if gen is not None and gen["status"] not in GENERATION_TERMINAL:
                now = self.clock()
                gen.update(
                    status=GenerationStatus.COMPLETED,
                    completed_at=now,
                    error_message=None,
                    updated_at=now,
                )
            self._complete(job, {**result, "image_id": stored.get("id"), "reused": reused})
            claimed = self._chain_claim(worker_id, chain)
            return Stored(claimed.jobs, claimed.next_at, claimed.asked, stored, reused)

    # -- the registry ------
    def heartbeat_worker(self, info: WorkerInfo, live_seconds: int) -> list[Peer]:
        with self.lock:
            self.calls.append("heartbeat_worker")
            self.workers[info.worker_id] = info
            self.seen[info.worker_id] = self.clock()
            cutoff = self.clock() - timedelta(seconds=max(live_seconds, 1))
            return [
                Peer(
                    worker_id=w.worker_id,
                    mode=w.mode,
                    concurrency=max(1, w.concurrency),
                    in_flight=w.in_flight,
                    realtime_connected=w.realtime_connected,
                    job_types=w.job_types,
                )
                for wid, w in sorted(self.workers.items())
                if not w.stopped and self.seen.get(wid, cutoff) > cutoff
            ]

    # -- prediction_stats ------
    def prediction_stats(self, hours: int) -> dict[str, Durations]:
        with self.lock:
            self.calls.append("prediction_stats")
            cutoff = self.clock() - timedelta(hours=max(hours, 1))
            by_model: dict[str, list[float]] = {}
            for job in sorted(self.jobs.values(), key=lambda j: j.completed_at or cutoff):
                seconds = (job.result or {}).get("provider_seconds")
                model = job.payload.get("model_id")
                if (
                    job.status == JobStatus.COMPLETED
                    and job.job_type == GENERATE_IMAGE
                    and job.completed_at is not None
                    and job.completed_at > cutoff
                    and isinstance(seconds, int | float)
                    and model
                ):
                    by_model.setdefault(str(model), []).append(float(seconds))
            return {m: Durations.of(v[-200:]) for m, v in by_model.items()}
