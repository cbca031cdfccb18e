"""The daemon's loop on the in-memory ports: wake-ups, claiming only for free threads,
suspects alone, the shutdown drain and release, the credit pause, heartbeats, --once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from tests.fast.conftest import World
from worker.adapters.memory import MemoryQueue
from worker.adapters.memory_provider import HANG, Script
from worker.daemon import Daemon
from worker.errors import InsufficientCredit, ProviderBusy
from worker.jobs import DOWNLOAD_IMAGE, GENERATE_IMAGE, Job
from worker.statuses import PREDICTION_TERMINAL, GenerationStatus, JobStatus, PredictionStatus

SLOW = Script(steps=(PredictionStatus.STARTING,) * 20 + (PredictionStatus.SUCCEEDED,))
SLOWER = Script(steps=(PredictionStatus.STARTING,) * 60 + (PredictionStatus.SUCCEEDED,))
Driver = Callable[[Daemon], Awaitable[None]]


class FakeWakeups:
    """Realtime as the daemon sees it: connected, and INSERT events when told."""

    instances: ClassVar[list[FakeWakeups]] = []

    def __init__(self, on_event: Callable[[], None], on_state: Callable[[bool], None]) -> None:
        self.on_event = on_event
        self.on_state = on_state
        self.connected = False
        FakeWakeups.instances.append(self)

    async def run(self, stop: asyncio.Event) -> None:
        self.connected = True
        self.on_state(True)
        await stop.wait()


def run(world: World, driver: Driver | None = None, *, once: bool = False, **kw: Any) -> Daemon:
    daemon = Daemon(world.services, world.metrics, once=once, **kw)

    async def main() -> int:
        task = asyncio.create_task(daemon.run())
        if driver is not None:
            await driver(daemon)
            daemon.request_stop()
        return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    return daemon


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def statuses(world: World, gids: list[str]) -> list[str]:
    return [world.generation(g)["status"] for g in gids]


# -- --once ------
def test_once_runs_the_queue_dry_and_exits(world: World) -> None:
    gids = [world.submit()[0] for _ in range(3)]
    daemon = run(world, once=True)
    assert statuses(world, gids) == [GenerationStatus.COMPLETED] * 3
    assert len(world.db.store.objects) == 3
    assert daemon.jobs_done == 6 and daemon.jobs_failed == 0 and not daemon.in_flight
    info = world.db.queue.workers["fast-worker"]
    assert info.stopped and info.jobs_done == 6 and info.mode == "polling"


def test_once_waits_for_a_retry_that_is_due_soon(world: World) -> None:
    world.model.create_errors.append(ProviderBusy("Replicate HTTP 429"))
    gid, job_id = world.submit()
    daemon = run(world, once=True)
    assert world.generation(gid)["status"] == GenerationStatus.COMPLETED
    assert world.job(job_id)["attempt_number"] == 2
    assert daemon.jobs_failed == 1


class StaleClaims(MemoryQueue):
    """A claim whose answer arrives late: made while a job runs, it finds nothing and
    returns only once that job has finished (and enqueued its follow-up), like a slow
    round trip."""

    def __init__(self, world: World) -> None:
        super().__init__(world.db.generations)
        self.model = world.model

    def claim(self, *args: Any, **kw: Any) -> list[Job]:
        found = super().claim(*args, **kw)
        running = any(r.status not in PREDICTION_TERMINAL for r in self.model.runs.values())
        if not found and running:  # a job is running in its thread
            deadline = time.monotonic() + 5
            while any(j.status == JobStatus.PROCESSING for j in self.jobs.values()):
                assert time.monotonic() < deadline
                time.sleep(0.002)
        return found


def test_once_does_not_exit_when_a_job_finished_during_an_empty_claim(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(SLOWER, WORKER_CONCURRENCY=2)  # outlives a poll interval
    queue = StaleClaims(world)
    world.db.queue = world.services.queue = queue
    gid, _ = world.submit()
    run(world, once=True)
    assert world.generation(gid)["status"] == GenerationStatus.COMPLETED


# -- claiming ------
def test_it_claims_only_as_many_jobs_as_it_has_free_threads(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(Script(steps=(PredictionStatus.STARTING,) * 5 + ("succeeded",)),
                          WORKER_CONCURRENCY=2)
    gids = [world.submit()[0] for _ in range(5)]
    run(world, once=True)
    assert statuses(world, gids) == [GenerationStatus.COMPLETED] * 5
    claims = world.db.queue.claims
    assert all(len(c.held_before) + c.limit <= 2 for c in claims), claims
    assert any(c.held_before and c.limit == 1 for c in claims)  # it did run full


def test_a_suspect_runs_alone(world_factory: Callable[..., World]) -> None:
    world = world_factory(SLOWER, WORKER_CONCURRENCY=3)  # it runs over a few polls
    q = world.db.queue
    suspect_gid, suspect = world.submit()
    q.jobs[suspect].priority = 5
    q.claim(1, [GENERATE_IMAGE], "dead-worker", 30)
    q.expire_lease(suspect)
    q.requeue_stale()
    others = [world.submit()[0] for _ in range(3)]
    run(world, once=True)
    assert statuses(world, [suspect_gid, *others]) == [GenerationStatus.COMPLETED] * 4
    claims = [c for c in q.claims if c.worker_id == "fast-worker"]
    assert claims[0].claimed == [suspect] and claims[0].held_before == []
    assert all(suspect not in c.held_before for c in claims)  # nothing claimed beside it
    assert all(c.exclude_suspects for c in claims if c.held_before)


# -- stopping ------
def test_shutdown_releases_what_does_not_finish_in_the_grace_period(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(HANG, WORKER_CONCURRENCY=2, WORKER_SHUTDOWN_GRACE="0.2")
    jobs = [world.submit()[1] for _ in range(2)]

    async def driver(daemon: Daemon) -> None:
        await until(lambda: len(world.model.runs) == 2, what="two predictions")

    started = time.monotonic()
    daemon = run(world, driver)
    assert time.monotonic() - started < 5
    for job_id in jobs:
        row = world.job(job_id)
        assert row["status"] == JobStatus.PENDING and row["attempt_number"] == 0
        assert row["locked_by"] is None
    assert world.model.cancelled == []  # the next attempt picks the predictions up
    assert world.db.queue.workers["fast-worker"].stopped
    assert daemon.jobs_done == 0 and daemon.jobs_failed == 0


def test_a_job_that_finishes_within_the_grace_period_completes(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(SLOW, WORKER_SHUTDOWN_GRACE="10")
    gid, job_id = world.submit()

    async def driver(daemon: Daemon) -> None:
        await until(lambda: world.model.runs, what="the prediction")

    daemon = run(world, driver)
    assert world.job(job_id)["status"] == JobStatus.COMPLETED
    assert world.generation(gid)["status"] == GenerationStatus.DOWNLOADING
    [download] = [r for r in world.db.queue.rows() if r["job_type"] == DOWNLOAD_IMAGE]
    assert download["status"] == JobStatus.PENDING  # nothing new claimed while stopping
    assert daemon.jobs_done == 1


# -- the credit pause ------
def test_out_of_credit_pauses_generate_claims_and_keeps_downloading(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(WORKER_CONCURRENCY=1)
    world.model.create_errors.append(InsufficientCredit("Replicate HTTP 402"))
    gid, job_id = world.submit()
    done_gid, done_job = world.submit()
    world.db.queue.jobs[done_job].priority = -1  # claimed after the first one
    daemon = run(world, once=True)
    row = world.job(job_id)
    assert row["status"] == JobStatus.PENDING and row["attempt_number"] == 0
    assert world.generation(gid)["status"] != GenerationStatus.FAILED  # a pause fails nothing
    # the second generate job waits out the pause too; nothing was paid for
    assert world.job(done_job)["status"] == JobStatus.PENDING and world.model.created == []
    assert world.metrics.value("picture_worker_generate_paused") == 1
    assert daemon.jobs_failed == 0

    download = world.db.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": done_gid,
                                                        "output_url": "https://x/y.webp"})
    world.db.generations.update(done_gid, {"status": GenerationStatus.DOWNLOADING})
    run(world, once=True)
    assert world.job(download)["status"] == JobStatus.COMPLETED  # other types still run
    assert world.job(job_id)["status"] == JobStatus.PENDING


# -- wake-ups ------
def test_a_realtime_insert_wakes_the_loop_long_before_the_poll(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(WORKER_REALTIME="true", WORKER_POLL_INTERVAL="30")
    FakeWakeups.instances.clear()

    async def driver(daemon: Daemon) -> None:
        await until(lambda: FakeWakeups.instances and daemon.realtime_connected, what="subscribe")
        await until(lambda: world.db.queue.claims, what="the first claim")
        await asyncio.sleep(0.05)  # idle now, for up to 30 s
        gid, _ = world.submit()
        FakeWakeups.instances[0].on_event()
        await until(
            lambda: world.generation(gid)["status"] == GenerationStatus.COMPLETED,
            timeout=3,
            what="the generation",
        )

    run(world, driver, wakeups_factory=FakeWakeups)
    assert world.metrics.value("picture_worker_realtime_connected") == 1


def test_every_resubscribe_polls_once(world_factory: Callable[..., World]) -> None:
    world = world_factory(WORKER_REALTIME="true", WORKER_POLL_INTERVAL="30")
    FakeWakeups.instances.clear()

    async def driver(daemon: Daemon) -> None:
        await until(lambda: daemon.realtime_connected and world.db.queue.claims, what="start")
        await asyncio.sleep(0.05)
        gid, _ = world.submit()  # its INSERT event was lost while Realtime was down
        FakeWakeups.instances[0].on_state(True)
        await until(lambda: world.generation(gid)["status"] == GenerationStatus.COMPLETED,
                    timeout=3, what="the generation")

    run(world, driver, wakeups_factory=FakeWakeups)


# -- heartbeats ------
def test_a_cancel_seen_in_the_heartbeat_stops_the_job_and_its_prediction(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(HANG)
    gid, job_id = world.submit()

    async def driver(daemon: Daemon) -> None:
        await until(lambda: world.model.runs, what="the prediction")
        world.db.queue.cancel_generation(gid)
        await until(lambda: world.model.cancelled and not daemon.in_flight, what="the cancel")

    daemon = run(world, driver)
    assert world.model.cancelled == list(world.model.runs)
    assert world.job(job_id)["status"] == JobStatus.CANCELLED
    assert world.generation(gid)["status"] == GenerationStatus.CANCELLED
    assert daemon.jobs_failed == 0


def test_a_lost_lease_stops_the_job_without_a_report(world_factory: Callable[..., World]) -> None:
    world = world_factory(HANG)
    _, job_id = world.submit()
    q = world.db.queue

    async def driver(daemon: Daemon) -> None:
        await until(lambda: world.model.runs, what="the prediction")
        q.expire_lease(job_id)
        q.requeue_stale()
        q.claim(1, [GENERATE_IMAGE], "other-worker", 30)  # taken over
        await until(lambda: not daemon.in_flight, what="the job to stop")

    run(world, driver)
    row = world.job(job_id)
    assert row["status"] == JobStatus.PROCESSING and row["locked_by"] == "other-worker"
    assert world.model.cancelled == []  # the new holder reuses the prediction
    assert "heartbeat_job" in q.calls
