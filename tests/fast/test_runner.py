"""The runner: one job from handler to fenced complete_job, with the failure mirrored on the
generation (queued while another attempt follows, failed on the last one)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.fast.conftest import World
from worker.context import JobContext
from worker.errors import (
    InsufficientCredit,
    InvalidInput,
    JobCancelled,
    PredictionFailed,
    ProviderBusy,
)
from worker.jobs import CLEANUP_STORAGE, DOWNLOAD_IMAGE, GENERATE_IMAGE
from worker.runner import Runner
from worker.statuses import GenerationStatus, JobOutcome, JobStatus

Handler = Callable[[JobContext], Mapping[str, Any]]


def runner(world: World, handler: Handler, job_type: str = GENERATE_IMAGE) -> Runner:
    return Runner(world.services, "fast-worker", world.metrics, {job_type: handler})


def raising(exc: Exception) -> Handler:
    def handle(ctx: JobContext) -> Mapping[str, Any]:
        raise exc

    return handle


def test_a_result_completes_the_job(world: World) -> None:
    _gid, job_id = world.submit()
    outcome = runner(world, lambda ctx: {"made": ctx.job.id}).run(world.context(world.claim()))
    assert outcome.status == JobOutcome.COMPLETED and outcome.duration >= 0
    row = world.job(job_id)
    assert row["status"] == JobStatus.COMPLETED and row["result"] == {"made": job_id}
    text = world.metrics.render()
    assert 'picture_worker_jobs_total{job_type="generate-image",outcome="completed"} 1' in text


def test_a_retryable_failure_puts_the_generation_back_to_queued(world: World) -> None:
    gid, job_id = world.submit(max_attempts=3)
    world.db.generations.update(gid, {"status": GenerationStatus.PROCESSING})
    outcome = runner(world, raising(ProviderBusy("Replicate HTTP 429: slow down"))).run(
        world.context(world.claim())
    )
    assert outcome.status == JobOutcome.RETRY
    row = world.job(job_id)
    assert row["status"] == JobStatus.PENDING and row["error_message"].startswith("Replicate")
    assert row["error_details"]["error_type"] == "ProviderBusy"
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.QUEUED
    assert gen["error_message"] == "Replicate HTTP 429: slow down"
    assert gen["completed_at"] is None


def test_the_last_attempt_fails_the_generation(world: World) -> None:
    gid, job_id = world.submit(max_attempts=1)
    outcome = runner(world, raising(ProviderBusy("still busy"))).run(world.context(world.claim()))
    assert outcome.status == JobOutcome.FAILED
    assert world.job(job_id)["status"] == JobStatus.FAILED
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.FAILED and gen["completed_at"] is not None


def test_a_permanent_failure_fails_at_once(world: World) -> None:
    gid, job_id = world.submit(max_attempts=3)
    outcome = runner(world, raising(PredictionFailed("the model failed: NSFW"))).run(
        world.context(world.claim())
    )
    assert outcome.status == JobOutcome.FAILED
    assert world.job(job_id)["status"] == JobStatus.FAILED
    assert world.generation(gid)["error_message"] == "the model failed: NSFW"


def test_a_finished_generation_is_not_overwritten_by_a_failure(world: World) -> None:
    gid, _ = world.submit(max_attempts=1)
    world.db.generations.update(gid, {"status": GenerationStatus.CANCELLED})
    runner(world, raising(PredictionFailed("late"))).run(world.context(world.claim()))
    assert world.generation(gid)["status"] == GenerationStatus.CANCELLED


def test_jobs_without_a_generation_mirror_nothing(world: World) -> None:
    gid, _ = world.submit()
    job_id = world.db.queue.enqueue(CLEANUP_STORAGE, {"generation_id": gid}, max_attempts=1)
    job = world.claim([CLEANUP_STORAGE])
    outcome = runner(world, raising(InvalidInput("bad")), CLEANUP_STORAGE).run(world.context(job))
    assert outcome.status == JobOutcome.FAILED and world.job(job_id)["status"] == JobStatus.FAILED
    assert world.generation(gid)["status"] == GenerationStatus.QUEUED


def test_completion_is_fenced_when_the_lease_was_lost(world: World) -> None:
    _, job_id = world.submit()
    job = world.claim()

    def slow_handler(ctx: JobContext) -> Mapping[str, Any]:
        # Meanwhile the lease ran out and another worker took the job over.
        world.db.queue.expire_lease(job_id)
        world.db.queue.requeue_stale()
        world.db.queue.claim(1, [GENERATE_IMAGE], "other-worker", 30)
        return {"late": True}

    outcome = runner(world, slow_handler).run(world.context(job))
    assert outcome.status == JobOutcome.LEASE_LOST
    row = world.job(job_id)
    assert row["status"] == JobStatus.PROCESSING and row["locked_by"] == "other-worker"
    assert row["result"] is None


def test_a_failure_after_the_lease_was_lost_reports_nothing(world: World) -> None:
    gid, job_id = world.submit(max_attempts=1)

    def handler(ctx: JobContext) -> Mapping[str, Any]:
        world.db.queue.expire_lease(job_id)
        world.db.queue.requeue_stale()  # the final attempt: the job and generation fail
        world.db.generations.update(gid, {"error_message": "abandoned"})
        raise ProviderBusy("busy")

    outcome = runner(world, handler).run(world.context(world.claim()))
    assert outcome.status == JobOutcome.LEASE_LOST
    assert world.generation(gid)["error_message"] == "abandoned"  # not overwritten


def test_a_user_cancel_ends_as_cancelled_and_a_shutdown_as_released(world: World) -> None:
    _, first = world.submit()
    ctx = world.context(world.claim())
    ctx.cancel()
    outcome = runner(world, lambda c: c.check() or {}).run(ctx)
    assert outcome.status == JobOutcome.CANCELLED
    assert world.job(first)["status"] == JobStatus.PROCESSING  # cancel_generation writes it

    _, second = world.submit()
    ctx = world.context(world.claim())
    ctx.abandon()
    assert runner(world, lambda c: c.check() or {}).run(ctx).status == JobOutcome.RELEASED
    assert world.job(second)["status"] == JobStatus.PROCESSING  # the daemon releases it


def test_out_of_credit_gives_the_attempt_back_and_pauses_generate_claims(world: World) -> None:
    gid, job_id = world.submit()
    outcome = runner(world, raising(InsufficientCredit("Replicate HTTP 402"))).run(
        world.context(world.claim())
    )
    assert outcome.status == JobOutcome.PAUSED
    row = world.job(job_id)
    assert row["status"] == JobStatus.PENDING and row["attempt_number"] == 0
    assert world.generation(gid)["status"] == GenerationStatus.QUEUED
    credit = world.services.credit
    assert credit.paused() and credit.remaining() > 200
    assert credit.claimable([GENERATE_IMAGE, DOWNLOAD_IMAGE]) == [DOWNLOAD_IMAGE]


def test_an_unknown_job_type_fails_for_good(world: World) -> None:
    _, job_id = world.submit()
    outcome = Runner(world.services, "fast-worker", world.metrics, {}).run(
        world.context(world.claim())
    )
    assert outcome.status == JobOutcome.FAILED and "no handler" in outcome.message
    assert world.job(job_id)["status"] == JobStatus.FAILED


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_bug_in_a_handler_is_retried_like_a_transient_error(world: World, attempts: int) -> None:
    _, job_id = world.submit(max_attempts=attempts)
    outcome = runner(world, raising(ZeroDivisionError("division by zero"))).run(
        world.context(world.claim())
    )
    assert outcome.status == (JobOutcome.FAILED if attempts == 1 else JobOutcome.RETRY)
    assert "internal error: ZeroDivisionError" in world.job(job_id)["error_message"]


def test_a_cancel_raised_by_the_handler_without_a_request_is_a_release(world: World) -> None:
    world.submit()
    outcome = runner(world, raising(JobCancelled("stopped"))).run(world.context(world.claim()))
    assert outcome.status == JobOutcome.RELEASED
